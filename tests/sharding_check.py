"""Run a drift sweep and a short training on 4 CPU devices; `test_sharding.py` compares the results.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \\
        python -m tests.sharding_check OUT_DIR GLUE_DIR

Writes to OUT_DIR:
  sweep.npz   per-row logits `(trials, times, rows)` of `sweep_logits`, split
              by trial (`by_trial`, 4 trials) and split by batch row
              (`by_row`, 2 trials, fewer than the devices).
  info.json   device count, output layouts and the messages of rejected
              batch sizes.
  train/      the workdir of `train_and_evaluate` with `training_config`.

The test runs the 1-device references with the same functions in its own
process, at the same time.
"""

import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

from hwa_lora_jax import distributed, sweep, train_lib
from hwa_lora_jax.analog.config import AnalogConfig
from tests.test_sweep import make_task
from tests.test_training import tiny_config

DRIFT_TIMES = (0.0, 86400.0)
BATCH_SIZE = 4


def hardware() -> AnalogConfig:
    """Return the default hardware with every noise on but unquantized converters.

    An 8-bit ADC turns a float32 rounding difference between the runs into a
    whole ADC level now and then, which would hide the rounding-level match.
    """
    return AnalogConfig().with_converter_bits(None)


def training_config(glue_dir: str):
    """Return the config that both sides train with: 3 noisy `hwa_lora` steps of 16 rows."""
    config = tiny_config(glue_dir, num_steps=3, log_every=1)
    config.hardware.io.inp_bits = 0  # 0: unquantized, as in `hardware()`
    config.hardware.io.out_bits = 0
    config.eval.analog = False
    return config


def per_row_logits(outputs):
    """Return every logit as a score, so the test compares raw outputs, not accuracies."""
    # `gather_rows` pads per-row outputs to the token length; the task has 2 labels.
    logits = outputs["logits"][:, :2]
    return {f"row{i}": float(value) for i, value in enumerate(logits.reshape(-1))}


def sweep_task():
    """Return `(setup, task)`: the tiny BERT on 8 dev rows, scored by `per_row_logits`."""
    setup, task = make_task(hardware(), num_examples=8)
    eval_set = dataclasses.replace(task.eval_set, score=per_row_logits)
    return setup, dataclasses.replace(task, eval_set=eval_set)


def recording(sweep_fn, layouts):
    """Wrap `sweep_fn` to record the layout of its first output: a partition spec or the
    sharding's type (`SingleDeviceSharding` on a one-device mesh)."""

    def call(*args):
        outputs = sweep_fn(*args)
        sharding = jax.tree.leaves(outputs)[0].sharding
        layouts.append(str(getattr(sharding, "spec", type(sharding).__name__)))
        return outputs

    return call


def sweep_logits(setup, task, devices, num_trials, layouts):
    """Run the sweep on a mesh of `devices`; return logits `(num_trials, times, rows)`."""
    mesh = distributed.data_mesh(devices)
    config = hardware()
    sweep_fn = sweep.make_sweep_fn([task], setup.map_analog, config, mesh=mesh)
    report = sweep.run_sweep([task], task.frozen, setup.map_analog, config,
                             drift_times=DRIFT_TIMES, num_trials=num_trials, trials_per_batch=2,
                             batch_size=BATCH_SIZE, sweep_fn=recording(sweep_fn, layouts),
                             mesh=mesh, seed=3)
    trials = report["tasks"]["sst2"]["per_trial"]
    return np.array([[list(scores.values()) for scores in trial] for trial in trials])


def rejected_message(function) -> str:
    try:
        function()
    except ValueError as err:
        return str(err)
    return ""


def main(out_dir: str, glue_dir: str) -> None:
    devices = jax.devices()
    setup, task = sweep_task()
    layouts = {"by_trial": [], "by_row": []}
    logits = {}
    for name, num_trials in (("by_trial", 4), ("by_row", 2)):
        start = time.time()
        logits[name] = sweep_logits(setup, task, devices, num_trials, layouts[name])
        print(f"sweep {name}: {time.time() - start:.1f} s", file=sys.stderr)
    np.savez(os.path.join(out_dir, "sweep.npz"), **logits)

    bad_sweep = rejected_message(lambda: sweep.run_sweep(
        [task], task.frozen, setup.map_analog, hardware(), num_trials=2, batch_size=6))
    bad_config = training_config(glue_dir)
    bad_config.train.batch_size = 6
    bad_training = rejected_message(
        lambda: train_lib.train_and_evaluate(bad_config, os.path.join(out_dir, "bad")))

    start = time.time()
    train_lib.train_and_evaluate(training_config(glue_dir), os.path.join(out_dir, "train"))
    print(f"training: {time.time() - start:.1f} s", file=sys.stderr)
    info = {"device_count": len(devices), "layouts": layouts,
            "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
            "bad_sweep_batch": bad_sweep, "bad_train_batch": bad_training}
    with open(os.path.join(out_dir, "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
