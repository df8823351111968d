"""Benchmark the drift sweep against clean digital evaluations of the same dev set.

Prints   sweep time / (trials x drift times x one digital evaluation),
the cost of one (trial, drift time) relative to a digital pass over the same
sentences; the target on CPU is at most 1.5. Also prints the compiled sweep's
temporary memory per chunk of trials.

    python bench/sweep.py                       # MobileBERT shapes, 4 layers
    python bench/sweep.py --preset bert-base --layers 2 --sentences 128

Weights are random (the timing does not depend on their values). Times
exclude compilation: each function runs once before it is timed.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from hwa_lora_jax import sweep, training
from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.evaluation import predict
from hwa_lora_jax.lora import LoraConfig, init_lora
from hwa_lora_jax.models import TaskModel, get_preset
from hwa_lora_jax.placement import linear_layer_shapes
from hwa_lora_jax.task_data import EvalSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilebert")
    parser.add_argument("--layers", type=int, default=4, help="encoder layers (full: 24)")
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--seq", type=int, default=64, help="tokens per sentence")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--trials_per_batch", type=int, default=2)
    parser.add_argument("--times", type=int, default=7, help="drift times (of the default 7)")
    parser.add_argument("--compute_dtype", default="float32", choices=["float32", "bfloat16"],
                        help="input dtype of the linear layers' matmuls")
    args = parser.parse_args()

    config = get_preset(args.preset, num_hidden_layers=args.layers, num_labels=2)
    model = TaskModel(config, "sequence_classification")
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, config.vocab_size, size=(args.sentences, args.seq)).astype(np.int32)
    arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids),
              "token_type_ids": np.zeros_like(ids)}
    params = model.init(jax.random.key(0), jnp.asarray(ids[:1]))["params"]

    hardware = AnalogConfig()
    setup = training.Setup(model, "hwa_lora", LoraConfig(), hardware,
                           compute_dtype=args.compute_dtype)
    adapters = init_lora(jax.random.key(1), linear_layer_shapes(params), setup.lora)
    frozen, trainable = training.init_trainable(setup, params, adapters)
    eval_step = training.make_eval_step(setup, hardware)
    eval_set = EvalSet("validation", arrays, lambda outputs: {"main": 0.0})
    task = sweep.SweepTask("bench", eval_step, frozen, trainable, eval_set)

    def digital_pass():
        outputs = predict(eval_step, frozen, trainable, None, arrays, args.batch_size,
                          key=jax.random.key(0))
        return outputs["logits"]

    digital_pass()
    start = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        digital_pass()
    digital_time = (time.perf_counter() - start) / repeats

    times = sweep.DEFAULT_DRIFT_TIMES[:args.times]
    sweep_fn = sweep.make_sweep_fn([task], setup.map_analog, hardware)
    kwargs = dict(drift_times=times, num_trials=args.trials, trials_per_batch=args.trials_per_batch,
                  batch_size=args.batch_size, sweep_fn=sweep_fn)
    sweep.run_sweep([task], frozen, setup.map_analog, hardware, **kwargs)  # compile
    start = time.perf_counter()
    sweep.run_sweep([task], frozen, setup.map_analog, hardware, seed=1, **kwargs)
    sweep_time = time.perf_counter() - start

    groups = sweep.stack_batches(arrays, args.batch_size)
    keys = sweep.trial_keys(0, args.trials_per_batch)
    compiled = sweep_fn.lower(frozen, [(frozen, trainable)],
                              [[group.inputs for group in groups]], keys,
                              jnp.asarray(times, jnp.float32)).compile()
    memory = compiled.memory_analysis()

    pairs = args.trials * len(times)
    print(f"model: {args.preset} with {args.layers} layers, {args.sentences} sentences x "
          f"{args.seq} tokens, {args.compute_dtype}, devices {jax.devices()}")
    print(f"digital evaluation of the dev set: {digital_time:.3f} s")
    print(f"sweep: {args.trials} trials x {len(times)} drift times: {sweep_time:.2f} s")
    print(f"ratio sweep / (trials x times x digital): {sweep_time / (pairs * digital_time):.2f} "
          "(target <= 1.5)")
    if memory is not None:
        print(f"compiled sweep memory per chunk of {args.trials_per_batch} trials: "
              f"temp {memory.temp_size_in_bytes / 2**20:.0f} MiB, "
              f"arguments {memory.argument_size_in_bytes / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
