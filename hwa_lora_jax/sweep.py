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
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.analog.tree import drift_tree, program_tree
from hwa_lora_jax.data.batching import EXAMPLE_INDEX_KEY, EXAMPLE_MASK_KEY, eval_batches
from hwa_lora_jax.evaluation import gather_rows
from hwa_lora_jax.task_data import EvalSet

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
      inputs: model inputs, `(num_batches, batch_size, length)` each.
      mask: bool `(num_batches, batch_size)`, True for real (not padding) rows.
      rows: int `(num_batches, batch_size)`, each row's index in the dev set.
    """

    inputs: dict[str, np.ndarray]
    mask: np.ndarray
    rows: np.ndarray


def stack_batches(arrays: Mapping[str, np.ndarray], batch_size: int,
                  length_buckets: Sequence[int] = ()) -> list[BatchGroup]:
    """Stack the fixed-size eval batches, one group per token length (one without buckets)."""
    groups: dict[int, list[dict]] = {}
    for batch in eval_batches(arrays, batch_size, length_buckets=length_buckets):
        groups.setdefault(batch["input_ids"].shape[1], []).append(batch)
    stacked = []
    for batches in groups.values():
        mask = np.stack([batch.pop(EXAMPLE_MASK_KEY) for batch in batches])
        rows = np.stack([batch.pop(EXAMPLE_INDEX_KEY) for batch in batches])
        inputs = {name: np.stack([batch[name] for batch in batches]) for name in batches[0]}
        stacked.append(BatchGroup(inputs, mask, rows))
    return stacked


def make_sweep_fn(tasks: Sequence[SweepTask], map_fn: Callable,
                  config: AnalogConfig) -> Callable:
    """Build the jitted `(analog_params, task_params, batches, keys, times) -> outputs` sweep.

    Args:
      tasks: the deployed tasks (their eval steps are traced inside).
      map_fn: maps `analog_params` to tiles (`Setup.map_analog`).
      config: hardware configuration of the deployment.

    Returns:
      A function of the params that are programmed, the per-task
      `(frozen, trainable)` pairs, the per-task lists of stacked input groups
      (`BatchGroup.inputs`), trial keys `(num_trials,)` and drift times
      `(num_times,)` in seconds. It returns, per task and group, the model
      outputs with shape `(num_trials, num_times, num_batches, batch_size, ...)`.
    """

    def sweep(analog_params, task_params, batches, keys, times):
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

        return jax.vmap(trial)(keys)

    return jax.jit(sweep)


def trial_keys(seed: int, num_trials: int) -> jax.Array:
    """Key of each trial: `fold_in(key(seed), trial)`, so trial i does not depend on the count."""
    root = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(num_trials))


def run_sweep(tasks: Sequence[SweepTask], analog_params: Any, map_fn: Callable,
              config: AnalogConfig, *, drift_times: Sequence[float] = DEFAULT_DRIFT_TIMES,
              num_trials: int = 10, trials_per_batch: int = 2, seed: int = 0,
              batch_size: int = 64, sweep_fn: Callable | None = None,
              progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the drift sweep and score every (trial, drift time, task).

    Args:
      tasks: deployed tasks sharing `analog_params`.
      analog_params: params whose analog layers are programmed each trial.
      map_fn: maps params to tiles.
      config: hardware configuration of the deployment.
      drift_times: seconds after programming.
      num_trials: independent programmings.
      trials_per_batch: trials vmapped together; lower it if memory is short.
      seed: trial i uses `fold_in(key(seed), i)`.
      batch_size: dev rows per forward.
      sweep_fn: a function from `make_sweep_fn` to reuse (no recompilation).
      progress: called with the number of (trial, drift time) pairs finished.

    Returns:
      `{'drift_times': [...], 'tasks': {name: {'per_trial': [[metrics] * T] * R,
      'mean': [...], 'std': [...]}}}` with metric dicts per drift time; `mean`
      and `std` (population, ddof 0) are of each metric over trials.
    """
    for name, value in (("num_trials", num_trials), ("trials_per_batch", trials_per_batch)):
        if value < 1:
            raise ValueError(f"{name}={value} is invalid; it must be >= 1.")
    times = jnp.asarray(drift_times, jnp.float32)
    if times.ndim != 1 or times.shape[0] == 0 or bool(jnp.any(times < 0)):
        raise ValueError(f"drift_times={list(drift_times)} is invalid; give one or more "
                         "times >= 0 in seconds.")
    sweep_fn = sweep_fn or make_sweep_fn(tasks, map_fn, config)
    stacked = [stack_batches(task.eval_set.arrays, batch_size, task.eval_set.length_buckets)
               for task in tasks]
    batches = [[group.inputs for group in groups] for groups in stacked]
    per_trial: dict[str, list] = {task.name: [] for task in tasks}
    # Pad the trials to whole chunks so every call has the same shapes and the
    # sweep compiles once; results of the padding trials are dropped.
    num_chunks = -(-num_trials // trials_per_batch)
    padded_keys = trial_keys(seed, num_chunks * trials_per_batch)
    task_params = [(task.frozen, task.trainable) for task in tasks]
    for chunk_index in range(num_chunks):
        start = chunk_index * trials_per_batch
        chunk = padded_keys[start:start + trials_per_batch]
        num_real = min(trials_per_batch, num_trials - start)
        outputs = jax.device_get(sweep_fn(analog_params, task_params, batches, chunk, times))
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
