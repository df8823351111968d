"""The training loop behind `train.py`: data, model, adapters, checkpoints, evaluation.

Outputs in the workdir:

    config.json          the experiment config of the run
    metrics.jsonl        one JSON row per logged step, plus the final scores
    checkpoints/<step>/  full training state (resumed automatically)
    adapter/             the trained adapter alone (see `checkpointing`)
    final_metrics.json   digital and analog (programmed, t = 0) dev scores

Training is data-parallel over every device (`distributed.data_mesh`). In a
multi-process run every process calls `train_and_evaluate` with the same
config and workdir; `config.distributed` decides whether JAX's distributed
runtime is started (see `distributed.maybe_initialize`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import tqdm

from hwa_lora_jax import checkpointing, distributed, training
from hwa_lora_jax.data.batching import batch_iterator, batch_plan
from hwa_lora_jax.evaluation import make_program_and_read, predict
from hwa_lora_jax.experiment import (
    analog_config_from_dict,
    analog_config_to_dict,
    lora_config_from_dict,
)
from hwa_lora_jax.loading import load_pretrained, load_tokenizer, resolve_checkpoint
from hwa_lora_jax.lora import count_lora_params, init_lora
from hwa_lora_jax.placement import linear_layer_shapes
from hwa_lora_jax.precision import check_compute_dtype
from hwa_lora_jax.task_data import TaskData, length_buckets, load_task_data

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a run's numbers."""
    import importlib.metadata as metadata

    versions = {}
    for name in ("hwa_lora_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint",
                 "transformers", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclasses.dataclass
class Run:
    """A built experiment: model, data, adapters and the compiled steps."""

    config: Any
    setup: training.Setup
    data: TaskData
    model_folder: str
    model_config: Any
    frozen: Any
    initial_trainable: Any
    analog_layers: Any
    total_steps: int
    steps_per_epoch: int
    schedule: Any
    tx: Any
    keys: dict[str, jax.Array]


def _config_dict(config: Any) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def build_run(config: Any) -> Run:
    """Load the checkpoint and data and set up adapters, optimizer and keys."""
    train_cfg = config.train
    mode = training.check_mode(train_cfg.mode)
    check_compute_dtype(train_cfg.compute_dtype)
    data_cfg = _config_dict(config.data)

    folder = resolve_checkpoint(config.model.checkpoint)
    is_squad = data_cfg["benchmark"] == "squad"
    model_task = "question_answering" if is_squad else "sequence_classification"
    num_labels = None
    if not is_squad:
        from hwa_lora_jax.data.glue import get_glue_task

        num_labels = get_glue_task(data_cfg["task"]).num_labels
    model, params, model_config = load_pretrained(folder, model_task, num_labels=num_labels,
                                                  seed=train_cfg.seed)
    tokenizer = load_tokenizer(folder, model_config)
    data = load_task_data(data_cfg, tokenizer,
                          max_position_embeddings=model_config.max_position_embeddings,
                          seed=train_cfg.seed)

    setup = training.Setup(model, mode, lora_config_from_dict(config.lora),
                           analog_config_from_dict(config.hardware), train_cfg.head,
                           train_cfg.compute_dtype)
    root = jax.random.key(train_cfg.seed)
    init_key, train_key, eval_key = jax.random.split(root, 3)
    del root
    adapters = {}
    if mode != "hwa":
        adapters = init_lora(init_key, linear_layer_shapes(params), setup.lora)
    frozen, trainable = training.init_trainable(setup, params, adapters)
    analog_layers = jax.jit(setup.map_analog)(frozen) if mode == "hwa_lora" else None

    num_train = len(data.train["input_ids"])
    if num_train < train_cfg.batch_size:
        raise ValueError(
            f"The training set has {num_train} examples, fewer than train.batch_size="
            f"{train_cfg.batch_size}; lower the batch size or use more data."
        )
    buckets = length_buckets(data_cfg)
    steps_per_epoch = len(batch_plan(data.train, train_cfg.batch_size, seed=train_cfg.seed,
                                     epoch=0, length_buckets=buckets))
    total_steps = (train_cfg.num_steps if train_cfg.num_steps > 0
                   else train_cfg.num_epochs * steps_per_epoch)
    schedule = training.make_schedule(train_cfg.learning_rate, total_steps,
                                      warmup_steps=train_cfg.warmup_steps)
    tx = training.make_optimizer(schedule, weight_decay=train_cfg.weight_decay,
                                 grad_clip=train_cfg.grad_clip)
    return Run(config, setup, data, folder, model_config, frozen, trainable, analog_layers,
               total_steps, steps_per_epoch, schedule, tx,
               {"train": train_key, "eval": eval_key})


def adapter_metadata(run: Run, step: int) -> dict[str, Any]:
    """Return what `evaluate.py` needs to rebuild the model around a saved adapter."""
    setup = run.setup
    return {
        "model": {"checkpoint": run.config.model.checkpoint, "folder": run.model_folder,
                  "config": dataclasses.asdict(run.model_config), "task": setup.model.task},
        "mode": setup.mode,
        "head": setup.head,
        "compute_dtype": setup.compute_dtype,
        "lora": dataclasses.asdict(setup.lora),
        "hardware": analog_config_to_dict(setup.analog),
        "data": run.data.description,
        "data_config": _config_dict(run.config.data),
        "step": step,
        "seed": run.config.train.seed,
        "versions": package_versions(),
    }


def _batches_from(run: Run, start_step: int):
    """Yield training batches from `start_step` on, in the order an uninterrupted run uses."""
    cfg = run.config.train
    epoch, offset = divmod(start_step, run.steps_per_epoch)
    for epoch in itertools.count(epoch):
        batches = batch_iterator(run.data.train, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                 length_buckets=length_buckets(_config_dict(run.config.data)))
        yield from itertools.islice(batches, offset, None)
        offset = 0


def evaluate_run(run: Run, trainable: Any, *, analog: bool) -> dict[str, dict[str, float]]:
    """Score every eval split digitally and, if `analog`, on programmed tiles at t = 0."""
    # NOTE: evaluation runs whole on each process's first device, not split
    # over the mesh like training.
    setup = run.setup
    eval_step = training.make_eval_step(setup, setup.analog)
    batch_size = run.config.eval.batch_size
    results: dict[str, dict[str, float]] = {}
    key = jax.random.key(run.config.eval.seed)
    for eval_set in run.data.evals:
        outputs = predict(eval_step, run.frozen, trainable, None, eval_set.arrays, batch_size,
                          key=key, length_buckets=eval_set.length_buckets)
        results[f"digital/{eval_set.name}"] = eval_set.score(outputs)
    if analog:
        params = trainable["params"] if setup.mode == "hwa" else run.frozen
        program_key, noise_key = jax.random.split(key)
        program_and_read = make_program_and_read(setup.map_analog, setup.analog)
        layers = program_and_read(params, program_key, 0.0)
        for eval_set in run.data.evals:
            outputs = predict(eval_step, run.frozen, trainable, layers, eval_set.arrays,
                              batch_size, key=noise_key, length_buckets=eval_set.length_buckets)
            results[f"analog_t0/{eval_set.name}"] = eval_set.score(outputs)
    return results


# Config fields that a resumed run must share with the run that wrote the
# checkpoint; others (num_steps, logging, eval) may change between runs.
RESUME_FIELDS = ("model.checkpoint", "data.benchmark", "data.task", "data.max_length",
                 "data.train_subset", "data.length_buckets", "lora.rank", "lora.alpha", "lora.dropout",
                 "lora.placement", "train.mode", "train.head", "train.batch_size", "train.seed")


def check_resume_config(config: Any, workdir: str) -> None:
    """Raise ValueError if `workdir` holds checkpoints of a run with another setup."""
    stored_path = os.path.join(workdir, "config.json")
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    if not (os.path.isfile(stored_path) and os.path.isdir(checkpoint_dir)
            and os.listdir(checkpoint_dir)):
        return
    with open(stored_path, encoding="utf-8") as f:
        stored = json.load(f)
    # A JSON round trip turns tuples into lists, as in the stored file.
    current = json.loads(json.dumps(_config_dict(config)))
    differences = []
    for field in RESUME_FIELDS:
        section, name = field.split(".")
        before = stored.get(section, {}).get(name)
        now = current.get(section, {}).get(name)
        if before != now and (before or now):  # A missing field equals an empty one.
            differences.append(f"{field}: {before!r} in the checkpoint, {now!r} now")
    if differences:
        raise ValueError(
            f"{workdir} holds checkpoints of a different run (" + "; ".join(differences)
            + "). Use a new --workdir, or rerun with the config that wrote it."
        )


def _append_jsonl(path: str, row: Mapping[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    """Train the adapters (or all weights in `hwa` mode) and evaluate them.

    A rerun with the same config and workdir resumes from the last
    checkpoint and reaches the same result as an uninterrupted run.

    Each step splits the batch over every device, so `train.batch_size` must
    be a multiple of the device count. With several processes, each feeds
    the rows of every batch that its devices hold, and all of them take part
    in the checkpoint saves. Only process 0 writes logs, `config.json`,
    `metrics.jsonl`, the adapter and `final_metrics.json`.

    Returns:
      The final metrics (also written to `final_metrics.json`).
    """
    distributed.maybe_initialize(config.get("distributed"))
    check_resume_config(config, workdir)
    mesh = distributed.data_mesh()
    cfg = config.train
    distributed.check_divisible(cfg.batch_size, mesh, "train.batch_size",
                                f"use a multiple of {mesh.size}.")
    run = build_run(config)
    main = distributed.is_main_process()
    os.makedirs(workdir, exist_ok=True)
    if main:
        checkpointing.write_json_atomic(os.path.join(workdir, "config.json"),
                                        _config_dict(config))
        logger.info("Mode %s, %d training examples, %d steps (%d per epoch), %d processes, "
                    "devices %s", run.setup.mode, len(run.data.train["input_ids"]),
                    run.total_steps, run.steps_per_epoch, jax.process_count(), jax.devices())
        if run.setup.mode != "hwa":
            logger.info("LoRA parameters: %d", count_lora_params(run.initial_trainable["lora"]))

    state = training.TrainState(jnp.zeros((), jnp.int32), run.initial_trainable,
                                run.tx.init(run.initial_trainable))
    # The template's layout (replicated) is the layout a restored state gets.
    state = distributed.place(state, mesh)
    checkpoints = checkpointing.TrainCheckpoints(workdir)
    restored = checkpoints.restore_latest(state)
    if restored is not None:
        state = restored
        if main:
            logger.info("Resumed from %s at step %d", checkpoints.directory, int(state.step))
    start_step = int(state.step)

    frozen, analog_layers, train_key = distributed.place(
        (run.frozen, run.analog_layers, run.keys["train"]), mesh)
    train_step = training.make_train_step(run.setup, run.tx)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    progress = tqdm.tqdm(total=run.total_steps, initial=start_step, unit="step",
                         disable=None if main else True, dynamic_ncols=True)
    batches = _batches_from(run, start_step)
    last_time, last_step = time.time(), start_step
    for step in range(start_step, run.total_steps):
        batch = distributed.shard_batch(next(batches), mesh)
        new_state, metrics = train_step(state, frozen, analog_layers, batch, train_key)
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss is {loss} at step {step}. The last good checkpoint is in "
                f"{checkpoints.directory} (step {checkpoints.latest_step()}); lower "
                "train.learning_rate or check the data."
            )
        state = new_state
        progress.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == run.total_steps:
            now = time.time()
            row = {"step": done, "loss": loss, "learning_rate": float(run.schedule(step)),
                   "grad_norm": float(metrics["grad_norm"]),
                   "steps_per_second": (done - last_step) / max(now - last_time, 1e-9)}
            last_time, last_step = now, done
            if main:
                _append_jsonl(metrics_path, row)
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{row['learning_rate']:.2e}")
        if done % cfg.checkpoint_every == 0 or done == run.total_steps:
            checkpoints.save(done, state)  # Every process: orbax coordinates the writers.
    progress.close()
    checkpoints.close()

    # One copy on this process's first device, for the adapter export and the evaluation.
    trainable = jax.device_put(distributed.fetch(state.trainable), jax.local_devices()[0])
    if main:
        checkpointing.save_adapter(os.path.join(workdir, "adapter"), trainable,
                                   adapter_metadata(run, int(state.step)))
    results = evaluate_run(run, trainable, analog=bool(config.eval.analog))
    final = {"step": int(state.step), "scores": results, "data": run.data.description}
    if main:
        checkpointing.write_json_atomic(os.path.join(workdir, "final_metrics.json"), final)
        _append_jsonl(metrics_path, {"step": int(state.step), "final": results})
        for name, scores in results.items():
            logger.info("%s: %s", name, ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))
    return final
