"""Drift sweep: program the analog model per trial and evaluate it at each drift time.

For each trial the analog layers are programmed anew (programming noise and
drift exponents from the trial's key); for each drift time they are drifted,
read with 1/f read noise and drift-compensated, and every task's dev set is
evaluated with the forward IO effects (DAC, ADC, output noise, bound
management). All tasks of a trial share the same programmed and drifted
layers, as one chip serving several adapters would.

The whole sweep is one jitted function: drift times and keys are traced
arrays, trials are vmapped in chunks of `trials_per_batch`, drift times run
in a `lax.scan` and dev batches in a `lax.map` per length bucket. A second
sweep with other keys or other drift times of the same count reuses the
compiled function.

On a mesh of several devices (`distributed.data_mesh`) each chunk's trial
axis is split over the mesh axis `"data"`, so every device programs and
evaluates its own trials; params and dev batches are replicated. A sweep of
fewer trials than devices splits the rows of each dev batch instead. Every
random draw is a function of its key and its position in the global array,
so the results match a one-device run up to float32 rounding. XLA may order
sums differently, and that now and then moves a value across an ADC level.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hwa_lora_jax import distributed
from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.analog.tree import drift_tree, program_tree
from hwa_lora_jax.data.batching import EXAMPLE_INDEX_KEY, EXAMPLE_MASK_KEY, eval_batches
from hwa_lora_jax.evaluation import gather_rows
from hwa_lora_jax.task_data import EvalSet

logger = logging.getLogger(__name__)

# 0 s, 1 hour, 1 day, 1 week, 30 days, 365 days and 10 years after programming.
DEFAULT_DRIFT_TIMES = (0.0, 3600.0, 86400.0, 604800.0, 2592000.0, 31536000.0, 315360000.0)
DRIFT_TIME_LABELS = {0.0: "0 s", 3600.0: "1 h", 86400.0: "1 d", 604800.0: "1 w",
                     2592000.0: "1 mo", 31536000.0: "1 y", 315360000.0: "10 y"}


@dataclasses.dataclass(frozen=True)
class SweepTask:
    """One task deployed on the shared analog model.

    Attributes:
      name: task label in reports.
      eval_step: `training.make_eval_step(...)` of the task's model; called
        with `(frozen, trainable, analog_layers, batch, key)`.
      frozen: the task's frozen params (shared encoder plus any frozen head).
      trainable: the task's adapter pytree.
      eval_set: dev inputs and the scoring function.
    """

    name: str
    eval_step: Callable
    frozen: Any
    trainable: Any
    eval_set: EvalSet


@dataclasses.dataclass(frozen=True)
class BatchGroup:
    """Eval batches of one token length, stacked for a `lax.map`.

    Attributes:
      inputs: model inputs, `(num_batches, rows, length)` each; `rows` is the
        batch size, or fewer for a group of one batch.
      mask: bool `(num_batches, rows)`, True for real (not padding) rows.
      rows: int `(num_batches, rows)`, each row's index in the dev set.
    """

    inputs: dict[str, np.ndarray]
    mask: np.ndarray
    rows: np.ndarray


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def stack_batches(arrays: Mapping[str, np.ndarray], batch_size: int,
                  length_buckets: Sequence[int] = (), *, row_multiple: int = 8
                  ) -> list[BatchGroup]:
    """Stack the fixed-size eval batches, one group per token length (one without buckets).

    A group of one batch keeps only its real rows, rounded up to a multiple of
    `row_multiple`, so a bucket of a few sentences does not cost a full batch.
    """
    groups: dict[int, list[dict]] = {}
    for batch in eval_batches(arrays, batch_size, length_buckets=length_buckets):
        groups.setdefault(batch["input_ids"].shape[1], []).append(batch)
    stacked = []
    for batches in groups.values():
        mask = np.stack([batch.pop(EXAMPLE_MASK_KEY) for batch in batches])
        rows = np.stack([batch.pop(EXAMPLE_INDEX_KEY) for batch in batches])
        inputs = {name: np.stack([batch[name] for batch in batches]) for name in batches[0]}
        if len(batches) == 1:
            keep = min(batch_size, _round_up(int(mask.sum()), row_multiple))
            inputs = {name: value[:, :keep] for name, value in inputs.items()}
            mask, rows = mask[:, :keep], rows[:, :keep]
        stacked.append(BatchGroup(inputs, mask, rows))
    return stacked


def shards_trials(num_trials: int, mesh: Mesh) -> bool:
    """Return whether a chunk of `num_trials` trials is split over the mesh by trial.

    True when the count is a multiple of the device count. Otherwise the rows
    of every dev batch are split instead, which `run_sweep` does only when there
    are fewer trials than devices.
    """
    return num_trials % mesh.size == 0


def sweep_specs(num_trials: int, mesh: Mesh) -> tuple[PartitionSpec, PartitionSpec,
                                                        PartitionSpec]:
    """Return the partition specs of the trial keys, the dev batches and the outputs.

    Keys are `(num_trials,)`, batch inputs `(num_batches, batch_size, ...)` and
    outputs `(num_trials, num_times, num_batches, batch_size, ...)`.
    """
    data = distributed.DATA_AXIS
    if shards_trials(num_trials, mesh):
        return PartitionSpec(data), PartitionSpec(), PartitionSpec(data)
    return PartitionSpec(), PartitionSpec(None, data), PartitionSpec(None, None, None, data)


def _check_batch_rows(batches: Sequence[Sequence[Mapping[str, Any]]], num_trials: int,
                      mesh: Mesh) -> None:
    for groups in batches:
        for group in groups:
            batch_size = next(iter(group.values())).shape[1]
            distributed.check_divisible(
                batch_size, mesh, "batch_size",
                f"with {num_trials} trial(s) per call, fewer than the devices, the sweep "
                f"splits each dev batch over the devices. Use a batch_size that is a multiple "
                f"of {mesh.size}, or run at least {mesh.size} trials per call.")


def make_sweep_fn(tasks: Sequence[SweepTask], map_fn: Callable,
                  config: AnalogConfig, *, mesh: Mesh | None = None) -> Callable:
    """Build the jitted `(analog_params, task_params, batches, keys, times) -> outputs` sweep.

    Args:
      tasks: the deployed tasks (their eval steps are traced inside).
      map_fn: maps `analog_params` to tiles (`Setup.map_analog`).
      config: hardware configuration of the deployment.
      mesh: the devices to split the work over (default: `data_mesh()`, every
        device). When the number of keys per call is a multiple of the device
        count, the trial axis is split over `"data"`. Otherwise the
        `batch_size` axis of the dev batches is split, so it must be a
        multiple of the device count. Params and times are replicated. On a
        one-device mesh the function carries no shardings.

    Returns:
      A function of the params that are programmed, the per-task
      `(frozen, trainable)` pairs, the per-task lists of stacked input groups
      (`BatchGroup.inputs`), trial keys `(num_trials,)` and drift times
      `(num_times,)` in seconds. It returns, per task and group, the model
      outputs with shape `(num_trials, num_times, num_batches, batch_size, ...)`,
      laid out like the trial keys (or like the batch rows). `run_sweep` places
      the inputs in that layout; inputs placed otherwise are moved inside.
    """
    mesh = mesh or distributed.data_mesh()

    def sweep(analog_params, task_params, batches, keys, times):
        if mesh.size > 1:
            key_spec, batch_spec, output_spec = sweep_specs(keys.shape[0], mesh)
            if not shards_trials(keys.shape[0], mesh):
                _check_batch_rows(batches, keys.shape[0], mesh)
            keys = jax.lax.with_sharding_constraint(keys, NamedSharding(mesh, key_spec))
            batches = jax.lax.with_sharding_constraint(batches, NamedSharding(mesh, batch_spec))

        def trial(key):
            program_key, read_key = jax.random.split(key)
            programmed = program_tree(map_fn(analog_params), config, key=program_key)

            def one_time(carry, time_and_index):
                t_seconds, index = time_and_index
                time_key = jax.random.fold_in(read_key, index)
                layers = drift_tree(programmed, t_seconds, config, key=time_key)
                outputs = []
                for task_index, task in enumerate(tasks):
                    task_key = jax.random.fold_in(time_key, task_index + 1)
                    frozen, trainable = task_params[task_index]

                    def one_batch(batch_and_index, task=task, task_key=task_key,
                                  frozen=frozen, trainable=trainable):
                        batch, batch_index = batch_and_index
                        return task.eval_step(frozen, trainable, layers, batch,
                                              jax.random.fold_in(task_key, batch_index))

                    # Batch indices run on across groups, so every batch draws its own noise.
                    group_outputs, first = [], 0
                    for group in batches[task_index]:
                        num_batches = next(iter(group.values())).shape[0]
                        indices = first + jnp.arange(num_batches)
                        group_outputs.append(jax.lax.map(one_batch, (group, indices)))
                        first += num_batches
                    outputs.append(group_outputs)
                return carry, outputs

            indices = jnp.arange(times.shape[0])
            _, outputs = jax.lax.scan(one_time, None, (times, indices))
            return outputs

        outputs = jax.vmap(trial)(keys)
        if mesh.size > 1:
            outputs = jax.lax.with_sharding_constraint(outputs, NamedSharding(mesh, output_spec))
        return outputs

    return jax.jit(sweep)


def trials_per_call(num_trials: int, trials_per_batch: int, mesh: Mesh) -> int:
    """Return the trials vmapped per call of the sweep function on `mesh`.

    With at least as many trials as devices, `trials_per_batch` is rounded up
    to a multiple of the device count (logged), so each device gets whole
    trials. With fewer trials than devices a call has at most `num_trials`
    trials, and the dev batches are split instead.
    """
    if num_trials < mesh.size:
        return min(trials_per_batch, num_trials)
    rounded = _round_up(trials_per_batch, mesh.size)
    if rounded != trials_per_batch:
        logger.info("trials_per_batch=%d rounded up to %d, a multiple of the %d devices, so "
                    "each device evaluates whole trials.", trials_per_batch, rounded, mesh.size)
    return rounded


def trial_keys(seed: int, num_trials: int) -> jax.Array:
    """Key of each trial: `fold_in(key(seed), trial)`, so trial i does not depend on the count."""
    root = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(num_trials))


def run_sweep(tasks: Sequence[SweepTask], analog_params: Any, map_fn: Callable,
              config: AnalogConfig, *, drift_times: Sequence[float] = DEFAULT_DRIFT_TIMES,
              num_trials: int = 10, trials_per_batch: int = 2, seed: int = 0,
              batch_size: int = 64, sweep_fn: Callable | None = None,
              progress: Callable[[int], None] | None = None,
              mesh: Mesh | None = None) -> dict[str, Any]:
    """Run the drift sweep and score every (trial, drift time, task).

    Args:
      tasks: deployed tasks sharing `analog_params`.
      analog_params: params whose analog layers are programmed each trial.
      map_fn: maps params to tiles.
      config: hardware configuration of the deployment.
      drift_times: seconds after programming.
      num_trials: independent programmings.
      trials_per_batch: trials vmapped together; lower it if memory is short.
        On several devices it is rounded up to a multiple of the device count
        (see `trials_per_call`).
      seed: trial i uses `fold_in(key(seed), i)`.
      batch_size: dev rows per forward. With fewer trials than devices the
        rows of each batch are split over the devices, and `batch_size` must
        be a multiple of the device count.
      sweep_fn: a function from `make_sweep_fn` with the same mesh, to reuse
        (no recompilation).
      progress: called with the number of (trial, drift time) pairs finished.
      mesh: devices to split the trials (or batch rows) over; default
        `data_mesh()`, every device.

    Returns:
      `{'drift_times': [...], 'tasks': {name: {'per_trial': [[metrics] * T] * R,
      'mean': [...], 'std': [...]}}}` with metric dicts per drift time; `mean`
      and `std` (population, ddof 0) are of each metric over trials. They do
      not depend on `trials_per_batch`, and they depend on the device count
      only through float32 rounding (see the module docstring).

    Raises:
      ValueError: a count below 1, a negative or missing drift time, or, with
        fewer trials than devices, a `batch_size` that is not a multiple of
        the device count.
    """
    for name, value in (("num_trials", num_trials), ("trials_per_batch", trials_per_batch)):
        if value < 1:
            raise ValueError(f"{name}={value} is invalid; it must be >= 1.")
    times = jnp.asarray(drift_times, jnp.float32)
    if times.ndim != 1 or times.shape[0] == 0 or bool(jnp.any(times < 0)):
        raise ValueError(f"drift_times={list(drift_times)} is invalid; give one or more "
                         "times >= 0 in seconds.")
    mesh = mesh or distributed.data_mesh()
    trials_per_batch = trials_per_call(num_trials, trials_per_batch, mesh)
    key_spec, batch_spec, _ = sweep_specs(trials_per_batch, mesh)
    stacked = [stack_batches(task.eval_set.arrays, batch_size, task.eval_set.length_buckets,
                             row_multiple=math.lcm(8, mesh.size))
               for task in tasks]
    batches = [[group.inputs for group in groups] for groups in stacked]
    if not shards_trials(trials_per_batch, mesh):
        _check_batch_rows(batches, trials_per_batch, mesh)
    sweep_fn = sweep_fn or make_sweep_fn(tasks, map_fn, config, mesh=mesh)
    # Placed once, in the layout the sweep function expects.
    batches = distributed.place(batches, mesh, batch_spec)
    analog_params = distributed.place(analog_params, mesh)
    task_params = distributed.place([(task.frozen, task.trainable) for task in tasks], mesh)
    times = distributed.place(times, mesh)
    per_trial: dict[str, list] = {task.name: [] for task in tasks}
    # Pad the trials to whole chunks so every call has the same shapes and the
    # sweep compiles once; results of the padding trials are dropped.
    num_chunks = -(-num_trials // trials_per_batch)
    padded_keys = trial_keys(seed, num_chunks * trials_per_batch)
    for chunk_index in range(num_chunks):
        start = chunk_index * trials_per_batch
        chunk = distributed.place(padded_keys[start:start + trials_per_batch], mesh, key_spec)
        num_real = min(trials_per_batch, num_trials - start)
        outputs = distributed.fetch(sweep_fn(analog_params, task_params, batches, chunk, times))
        for task, groups, task_outputs in zip(tasks, stacked, outputs):
            num_rows, seq_len = next(iter(task.eval_set.arrays.values())).shape[:2]
            for trial in range(num_real):
                scores = []
                for time_index in range(len(drift_times)):
                    rows = {}
                    for name in task_outputs[0]:
                        parts = [(group.rows[group.mask],
                                  values[name][trial, time_index][group.mask])
                                 for group, values in zip(groups, task_outputs)]
                        rows[name] = gather_rows(parts, num_rows, seq_len)
                    scores.append(task.eval_set.score(rows))
                per_trial[task.name].append(scores)
        if progress is not None:
            progress(num_real * len(drift_times))

    report: dict[str, Any] = {"drift_times": [float(t) for t in drift_times], "tasks": {}}
    for name, trials in per_trial.items():
        metric_names = list(trials[0][0])
        values = {metric: np.array([[scores[metric] for scores in trial] for trial in trials])
                  for metric in metric_names}
        report["tasks"][name] = {
            "per_trial": trials,
            "mean": [{m: float(values[m][:, t].mean()) for m in metric_names}
                     for t in range(len(drift_times))],
            "std": [{m: float(values[m][:, t].std()) for m in metric_names}
                    for t in range(len(drift_times))],
        }
    return report
