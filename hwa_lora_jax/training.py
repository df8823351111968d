"""Training modes, losses and the jitted train and eval steps.

Three modes share one step function:

- `hwa_lora`: the frozen base runs on analog tiles with training noise (fresh
  each step from `fold_in(key, step)`); only the adapters (LoRA and, by
  default, the digital task head) are trained.
- `lora`: digital LoRA with no hardware during training (the naive-deployment
  comparison); the same adapters are trained.
- `hwa`: full hardware-aware fine-tuning: every parameter is trainable under
  the same noise, and the tiles are re-mapped from the current weights each
  step.

The trainable pytree (`TrainState.trainable`) is the only thing optax sees.

On a mesh of several devices the train step is data-parallel: the batch is
split over the mesh axis `"data"`, and the state, frozen base and tiles are
replicated. XLA partitions the one global step, so the loss and gradients
are those of the whole batch, and every random draw (dropout, LoRA dropout,
analog noise) is a function of its key and its position in the global
array. A step on several devices therefore matches a one-device step up to
float32 rounding (the order of the sums over devices).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hwa_lora_jax import distributed
from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.analog.tree import map_params
from hwa_lora_jax.analog_model import forward
from hwa_lora_jax.lora import LoraConfig
from hwa_lora_jax.models.tasks import HEAD_NAMES
from hwa_lora_jax.precision import check_compute_dtype

Array = jax.Array
MODES = ("hwa_lora", "lora", "hwa")
HEAD_TYPES = ("trainable", "reference")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"train.mode={mode!r} is invalid; expected one of {MODES}.")
    return mode


@dataclasses.dataclass(frozen=True)
class Setup:
    """Static description of what is trained and how the forward runs.

    Attributes:
      model: the `TaskModel`.
      mode: one of `MODES`.
      lora: LoRA hyperparameters (unused in `hwa` mode).
      analog: hardware configuration of the training forward.
      head: `'trainable'`: the task head is digital and trained as part of the
        adapter. `'reference'`: the head keeps its (random) initialization,
        stays frozen, and is adapted only through its LoRA; for question
        answering it is mapped to analog tiles like the encoder, for
        classification it stays digital, as in the authors' code.
      compute_dtype: input dtype of the linear layers' matmuls in training and
        evaluation, `'float32'` or `'bfloat16'` (see `hwa_lora_jax.precision`).
    """

    model: nn.Module
    mode: str
    lora: LoraConfig
    analog: AnalogConfig
    head: str = "trainable"
    compute_dtype: str = "float32"

    def __post_init__(self):
        check_mode(self.mode)
        check_compute_dtype(self.compute_dtype)
        if self.head not in HEAD_TYPES:
            raise ValueError(f"train.head={self.head!r} is invalid; expected one of {HEAD_TYPES}.")

    @property
    def head_name(self) -> str | None:
        return HEAD_NAMES[self.model.task]

    @property
    def trains_head(self) -> bool:
        return self.mode != "hwa" and self.head == "trainable" and self.head_name is not None

    def is_analog(self, name: str) -> bool:
        """Return whether layer `name` runs on analog tiles (every layer but a digital head)."""
        digital_head = self.head_name is not None and (
            self.trains_head or self.model.task == "sequence_classification")
        return not (digital_head and name.split("/")[0] == self.head_name)

    def map_analog(self, params: Mapping[str, Any], config: AnalogConfig | None = None) -> dict:
        """Map the analog layers of `params` to tiles (channel-wise scaling, clip, tiling)."""
        return map_params(params, config or self.analog, include=self.is_analog)


def split_params(setup: Setup, params: dict) -> tuple[dict, dict]:
    """Split model params into `(frozen, head)`; `head` is empty unless it is trained."""
    if not setup.trains_head:
        return params, {}
    frozen = {k: v for k, v in params.items() if k != setup.head_name}
    return frozen, {setup.head_name: params[setup.head_name]}


def merge_params(frozen: Mapping[str, Any], head: Mapping[str, Any]) -> dict:
    return {**frozen, **head}


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; saved in checkpoints.

    `trainable` is `{'lora': ..., 'head': ...}` in the LoRA modes and
    `{'params': ...}` in `hwa` mode.
    """

    step: Array
    trainable: Any
    opt_state: Any


def make_schedule(learning_rate: float, total_steps: int, *,
                  warmup_steps: int = 0) -> optax.Schedule:
    """Linear warmup from 0 over `warmup_steps`, then linear decay to 0 at `total_steps`."""
    if total_steps < 1:
        raise ValueError(f"The run has {total_steps} training steps; it needs at least 1.")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"train.warmup_steps={warmup_steps} is invalid; it must be in "
                         f"[0, {total_steps}) for a run of {total_steps} steps.")
    decay = optax.linear_schedule(learning_rate, 0.0, total_steps - warmup_steps)
    if not warmup_steps:
        return decay
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def make_optimizer(schedule: optax.Schedule, *, weight_decay: float = 0.0,
                   grad_clip: float = 1.0) -> optax.GradientTransformation:
    """Adam (AdamW when `weight_decay` > 0) after global-norm clipping at `grad_clip`."""
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    parts.append(optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay))
    return optax.chain(*parts)


def init_trainable(setup: Setup, params: dict, adapters: dict) -> tuple[dict, dict]:
    """Return `(frozen, trainable)` for the mode.

    The trainable leaves are copies, because the train step donates its state
    and would otherwise invalidate the caller's params.
    """
    if setup.mode == "hwa":
        return {}, {"params": jax.tree.map(jnp.copy, params)}
    frozen, head = split_params(setup, params)
    return frozen, jax.tree.map(jnp.copy, {"lora": adapters, "head": head})


def task_loss(task: str, num_labels: int, outputs: Mapping[str, Array],
              batch: Mapping[str, Array]) -> Array:
    """Mean loss of a batch; rows with `batch['weight'] == 0` (padding) do not count."""
    weight = batch.get("weight")
    if task == "question_answering":
        start = optax.softmax_cross_entropy_with_integer_labels(
            outputs["start_logits"], batch["start_positions"])
        end = optax.softmax_cross_entropy_with_integer_labels(
            outputs["end_logits"], batch["end_positions"])
        per_example = 0.5 * (start + end)
    elif num_labels == 1:
        per_example = jnp.square(outputs["logits"][:, 0] - batch["labels"])
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(
            outputs["logits"], batch["labels"])
    if weight is None:
        return jnp.mean(per_example)
    weight = weight.astype(jnp.float32)
    return jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def _forward_parts(setup: Setup, frozen: dict, trainable: dict, analog_layers: dict | None,
                   *, training: bool):
    """Return the params, adapters and analog layers of one forward.

    In `hwa` mode a training forward maps the current weights to tiles, so
    the gradient reaches every weight through the mapping.
    """
    if setup.mode == "hwa":
        params = trainable["params"]
        if training:
            analog_layers = setup.map_analog(params)
        return params, None, analog_layers
    return merge_params(frozen, trainable["head"]), trainable["lora"], analog_layers


def make_train_step(setup: Setup, tx: optax.GradientTransformation, *,
                    mesh: Mesh | None = None) -> Callable:
    """Build the jitted step `(state, frozen, analog_layers, batch, key) -> (state, metrics)`.

    `analog_layers` are the mapped frozen tiles (`hwa_lora`), None for digital
    training (`lora`), and ignored in `hwa` mode, which maps the current
    weights inside the step.

    Args:
      setup: what is trained and how the forward runs.
      tx: the optimizer.
      mesh: devices of the data-parallel step (default: `data_mesh()`, every
        device). On several devices the batch (every leaf, leading axis) is
        split over `"data"` and must have a multiple of `mesh.size` rows;
        everything else, and the returned state and metrics, is replicated.
        Pass inputs placed that way (`distributed.place`,
        `distributed.shard_batch`), or jit reshards them on every call. On a
        one-device mesh the step carries no shardings.
    """
    task = setup.model.task
    num_labels = setup.model.config.num_labels
    mesh = mesh or distributed.data_mesh()

    def loss_fn(trainable, frozen, analog_layers, batch, key):
        if setup.mode != "hwa_lora":
            analog_layers = None
        params, adapters, layers = _forward_parts(setup, frozen, trainable, analog_layers,
                                                  training=True)
        outputs = forward(setup.model, params, batch, adapters=adapters, lora_config=setup.lora,
                          analog_layers=layers, analog_config=setup.analog, key=key,
                          training=True, compute_dtype=setup.compute_dtype)
        return task_loss(task, num_labels, outputs, batch)

    def step(state: TrainState, frozen, analog_layers, batch, key):
        step_key = jax.random.fold_in(key, state.step)
        loss, grads = jax.value_and_grad(loss_fn)(state.trainable, frozen, analog_layers, batch,
                                                   step_key)
        updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "update_norm": optax.tree.norm(updates)}
        return TrainState(state.step + 1, trainable, opt_state), metrics

    if mesh.size == 1:
        return jax.jit(step, donate_argnums=(0,))
    replicated = NamedSharding(mesh, PartitionSpec())
    rows = NamedSharding(mesh, PartitionSpec(distributed.DATA_AXIS))
    # TODO: add an option to split the frozen base and its tiles over the mesh.
    # Both are replicated now, so the model must fit on every device.
    return jax.jit(step, donate_argnums=(0,),
                   in_shardings=(replicated, replicated, replicated, rows, replicated),
                   out_shardings=(replicated, replicated))


def make_eval_step(setup: Setup, analog_config: AnalogConfig) -> Callable:
    """Build the jitted eval forward `(frozen, trainable, analog_layers, batch, key) -> outputs`.

    With `analog_layers=None` the forward is digital (with adapters); with
    programmed or drifted layers it applies the forward IO effects of
    `analog_config` and the drift-compensation factors, without training noise.
    """
    keep = ("start_logits", "end_logits") if setup.model.task == "question_answering" \
        else ("logits",)

    def step(frozen, trainable, analog_layers, batch, key):
        params, adapters, layers = _forward_parts(setup, frozen, trainable, analog_layers,
                                                  training=False)
        outputs = forward(setup.model, params, batch, adapters=adapters, lora_config=setup.lora,
                          analog_layers=layers, analog_config=analog_config, key=key,
                          training=False, compute_dtype=setup.compute_dtype)
        return {name: outputs[name] for name in keep}

    return jax.jit(step)
