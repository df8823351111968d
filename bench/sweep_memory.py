"""Estimate the drift sweep's memory per trial from the shapes of each model preset.

    python bench/sweep_memory.py
    python bench/sweep_memory.py --measure --layers 2    # also compile a cut model

A trial keeps its programmed state for all drift times: W_p, the drift
exponents nu and the read-noise stds, one float32 each per tile slot, plus
per-tile scalars. While it evaluates a drift time it also keeps one drifted
copy of the weights (W_d and alpha). Nothing is allocated: the shapes come from `jax.eval_shape`.
The mapped weights and the frozen digital params are shared by all trials.
Trials of one call are vmapped, so each also needs the activations of one
dev batch and the drift temporaries, which the shapes above leave out.
`--measure` compiles the sweep of a model cut to `--layers` layers for 1 and
2 trials per call and prints the increment per trial next to the estimate.
Their ratio scales the estimate to a whole model at that batch shape.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from hwa_lora_jax import sweep, training
from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.analog.tree import drift_tree, program_tree
from hwa_lora_jax.lora import LoraConfig
from hwa_lora_jax.models import TaskModel, get_preset
from hwa_lora_jax.task_data import EvalSet

PRESETS = ("mobilebert", "minilm-l6", "bert-base", "bert-large")
MIB = 2**20


def tree_bytes(tree) -> int:
    return int(sum(np.prod(leaf.shape) * leaf.dtype.itemsize
                   for leaf in jax.tree.leaves(tree)))


def shapes(preset: str, layers: int | None = None):
    overrides = {"num_labels": 2}
    if layers:
        overrides["num_hidden_layers"] = layers
    model = TaskModel(get_preset(preset, **overrides), "sequence_classification")
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
    hardware = AnalogConfig()
    setup = training.Setup(model, "hwa_lora", LoraConfig(), hardware)
    mapped = jax.eval_shape(setup.map_analog, params)
    programmed = jax.eval_shape(lambda m: program_tree(m, hardware, key=jax.random.key(0)),
                                mapped)
    drifted = jax.eval_shape(
        lambda p: drift_tree(p, jnp.float32(1.0), hardware, key=jax.random.key(0)), programmed)
    return model, params, setup, mapped, programmed, drifted


def measure(preset: str, layers: int, sentences: int, seq: int) -> dict[int, float]:
    """Return the compiled sweep's temporary MiB for 1 and 2 trials per call."""
    model, _, setup, _, _, _ = shapes(preset, layers)
    ids = np.full((sentences, seq), 1000, np.int32)
    arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids),
              "token_type_ids": np.zeros_like(ids)}
    params = model.init(jax.random.key(0), jnp.asarray(ids[:1]))["params"]
    frozen, trainable = training.init_trainable(setup, params, {})
    eval_step = training.make_eval_step(setup, setup.analog)
    task = sweep.SweepTask("bench", eval_step, frozen, trainable,
                           EvalSet("validation", arrays, lambda outputs: {"main": 0.0}))
    sweep_fn = sweep.make_sweep_fn([task], setup.map_analog, setup.analog)
    groups = sweep.stack_batches(arrays, sentences)
    times = jnp.asarray(sweep.DEFAULT_DRIFT_TIMES, jnp.float32)
    result = {}
    for trials in (1, 2):
        compiled = sweep_fn.lower(frozen, [(frozen, trainable)],
                                  [[group.inputs for group in groups]],
                                  sweep.trial_keys(0, trials), times).compile()
        memory = compiled.memory_analysis()
        result[trials] = memory.temp_size_in_bytes / MIB if memory is not None else float("nan")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--measure", action="store_true",
                        help="also compile the sweep of a cut model and print its memory")
    parser.add_argument("--layers", type=int, default=2, help="layers of the measured model")
    parser.add_argument("--sentences", type=int, default=32, help="rows of the measured batch")
    parser.add_argument("--seq", type=int, default=64, help="tokens of the measured batch")
    args = parser.parse_args()

    print(f"{'model':>11} {'layers':>6} {'analog weights':>15} {'tiles':>5} "
          f"{'programmed MiB':>14} {'drifted MiB':>11} {'per trial MiB':>13}")
    for preset in args.presets.split(","):
        model, params, _, mapped, programmed, drifted = shapes(preset)
        weights = sum(int(np.prod(layer.weights.shape)) for layer in mapped.values())
        tiles = sum(layer.num_tiles for layer in mapped.values())
        per_trial = (tree_bytes(programmed) + tree_bytes(drifted)) / MIB
        print(f"{preset:>11} {model.config.num_hidden_layers:>6} {weights:>15,} {tiles:>5} "
              f"{tree_bytes(programmed) / MIB:>14.0f} {tree_bytes(drifted) / MIB:>11.0f} "
              f"{per_trial:>13.0f}")
    print("analog weights counts tile slots, padding included; per trial = programmed + "
          "drifted state, activations not included")

    if args.measure:
        for preset in args.presets.split(","):
            _, _, _, _, programmed, drifted = shapes(preset, args.layers)
            estimate = (tree_bytes(programmed) + tree_bytes(drifted)) / MIB
            temp = measure(preset, args.layers, args.sentences, args.seq)
            print(f"{preset} cut to {args.layers} layers, {args.sentences} x {args.seq} tokens: "
                  f"compiled temp {temp[1]:.0f} MiB (1 trial), {temp[2]:.0f} MiB (2 trials); "
                  f"increment {temp[2] - temp[1]:.0f} MiB per trial against the state "
                  f"estimate {estimate:.0f} MiB ({(temp[2] - temp[1]) / estimate:.1f}x)")


if __name__ == "__main__":
    main()
