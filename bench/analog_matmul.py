"""Time the analog transforms against plain float32 matmuls on the local JAX backend.

Usage: python bench/analog_matmul.py [--batch 4096] [--trials 10] [--repeats 5]

Prints, per layer shape, the median time of the jitted analog training forward (weight
noise, DAC, output noise, ADC and bound management all on, default `AnalogConfig`) and of
the jitted `x @ kernel + bias`, with their ratio. Then it times programming plus one drift
read of all MobileBERT analog weights for `--trials` trials in one vmapped, jitted call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from hwa_lora_jax.analog import AnalogConfig, analog_matmul, drift_tree, map_weights, program_tree

# (in_features, out_features) of the timed layers.
MOBILEBERT_SHAPES = [(512, 128), (128, 512), (128, 128), (384, 512)]
BERT_BASE_SHAPES = [(768, 768), (768, 3072), (3072, 768)]

# Linear layers of one MobileBERT transformer block (24 blocks), as (in, out).
MOBILEBERT_BLOCK = {
    "bottleneck/input/dense": (512, 128),
    "bottleneck/attention/dense": (512, 128),
    "attention/self/query": (128, 128),
    "attention/self/key": (128, 128),
    "attention/self/value": (512, 128),
    "attention/output/dense": (128, 128),
    "ffn_0/intermediate/dense": (128, 512),
    "ffn_0/output/dense": (512, 128),
    "ffn_1/intermediate/dense": (128, 512),
    "ffn_1/output/dense": (512, 128),
    "ffn_2/intermediate/dense": (128, 512),
    "ffn_2/output/dense": (512, 128),
    "intermediate/dense": (128, 512),
    "output/dense": (512, 128),
    "output/bottleneck/dense": (128, 512),
}


def mobilebert_shapes() -> dict[str, tuple[int, int]]:
    """Return every analog linear layer of MobileBERT with a QA head, path -> (in, out)."""
    shapes = {"mobilebert/embeddings/embedding_transformation": (384, 512),
              "qa_outputs": (512, 2)}
    for block in range(24):
        for name, shape in MOBILEBERT_BLOCK.items():
            shapes[f"mobilebert/encoder/layer_{block}/{name}"] = shape
    return shapes


def median_seconds(function: Callable[[], jax.Array], repeats: int) -> float:
    """Return the median wall time of `function()` over `repeats` runs after one warm-up."""
    jax.block_until_ready(function())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_forward(shape: tuple[int, int], batch: int, repeats: int, config: AnalogConfig
                 ) -> tuple[float, float]:
    """Return (analog training forward, float matmul) median times in s for one shape."""
    in_features, out_features = shape
    keys = jax.random.split(jax.random.key(0), 3)
    kernel = jax.random.normal(keys[0], shape, jnp.float32) / in_features**0.5
    bias = jnp.zeros((out_features,), jnp.float32)
    x = jax.random.normal(keys[1], (batch, in_features), jnp.float32)
    layer = map_weights(kernel, config)

    analog = jax.jit(lambda x, layer, key: analog_matmul(x, layer, bias, config, key=key,
                                                         training=True))
    plain = jax.jit(lambda x, kernel: x @ kernel + bias)
    analog_time = median_seconds(lambda: analog(x, layer, keys[2]), repeats)
    plain_time = median_seconds(lambda: plain(x, kernel), repeats)
    return analog_time, plain_time


def time_program_and_drift(trials: int, config: AnalogConfig) -> tuple[int, float, float]:
    """Return (weight count, first-call s, steady-state s) of program + drift for all layers.

    The first call includes compilation.
    """
    layers = {}
    for index, (path, shape) in enumerate(mobilebert_shapes().items()):
        kernel = jax.random.normal(jax.random.key(index), shape, jnp.float32)
        layers[path] = map_weights(kernel, config)
    count = sum(shape[0] * shape[1] for shape in mobilebert_shapes().values())

    # The layers are an argument, not a closure: XLA would constant-fold closed-over weights.
    @jax.jit
    def program_and_drift(layers, trial_keys: jax.Array, t_seconds: jax.Array):
        def one_trial(trial_key: jax.Array):
            program_key, read_key = jax.random.split(trial_key)
            programmed = program_tree(layers, config, key=program_key)
            return drift_tree(programmed, t_seconds, config, key=read_key)

        return jax.vmap(one_trial)(trial_keys)

    trial_keys = jax.random.split(jax.random.key(1), trials)
    t_seconds = jnp.float32(86400.0)
    start = time.perf_counter()
    jax.block_until_ready(program_and_drift(layers, trial_keys, t_seconds))
    first = time.perf_counter() - start
    trial_keys = jax.random.split(jax.random.key(2), trials)
    start = time.perf_counter()
    jax.block_until_ready(program_and_drift(layers, trial_keys, t_seconds))
    return count, first, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096, help="tokens per forward")
    parser.add_argument("--trials", type=int, default=10, help="programming trials")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per shape")
    args = parser.parse_args()
    config = AnalogConfig()

    print(f"backend: {jax.default_backend()}, devices: {jax.devices()}")
    print(f"analog training forward vs x @ kernel + bias, batch {args.batch} tokens")
    print(f"{'model':<10} {'in x out':>12} {'analog ms':>10} {'float ms':>9} {'ratio':>6}")
    for model, shapes in (("MobileBERT", MOBILEBERT_SHAPES), ("BERT-base", BERT_BASE_SHAPES)):
        for shape in shapes:
            analog_time, plain_time = time_forward(shape, args.batch, args.repeats, config)
            print(f"{model:<10} {f'{shape[0]}x{shape[1]}':>12} {analog_time * 1e3:10.2f} "
                  f"{plain_time * 1e3:9.2f} {analog_time / plain_time:6.2f}")

    count, first, steady = time_program_and_drift(args.trials, config)
    print(f"program + drift (t = 1 day) of {count / 1e6:.2f}M MobileBERT weights, "
          f"{args.trials} trials in one vmapped call: {steady:.2f} s "
          f"(first call with compilation: {first:.2f} s)")


if __name__ == "__main__":
    main()
