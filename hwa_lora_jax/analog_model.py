"""Run a Flax task model with its linear layers on simulated analog tiles, plus LoRA.

The models in `hwa_lora_jax.models` are digital. `forward` intercepts every
`Dense` call (see `flax.linen.intercept_methods`) and, by layer name:

- computes it with `analog_matmul` on the layer's mapped (or programmed and
  drifted) tiles when the name is in `analog_layers`, else digitally;
- adds the digital LoRA branch when the name is in `adapters`.

Per-layer noise keys are folded in from the layer name, so every layer draws
independent noise and the draw does not depend on the call order.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.analog.forward import analog_matmul
from hwa_lora_jax.analog.tiles import TiledLayer
from hwa_lora_jax.analog.tree import layer_key
from hwa_lora_jax.lora import LoraConfig, lora_delta
from hwa_lora_jax.models.layers import Dense, linear
from hwa_lora_jax.precision import check_compute_dtype

Array = jax.Array
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def forward(
    model: nn.Module,
    params: Mapping[str, Any],
    batch: Mapping[str, Array],
    *,
    adapters: Mapping[str, Mapping[str, Array]] | None = None,
    lora_config: LoraConfig | None = None,
    analog_layers: Mapping[str, TiledLayer] | None = None,
    analog_config: AnalogConfig | None = None,
    key: Array | None = None,
    training: bool = False,
    compute_dtype: str = "float32",
) -> dict[str, Any]:
    """Apply `model` with analog layers and LoRA adapters.

    Args:
      model: a `TaskModel`.
      params: its Flax params (frozen base plus head).
      batch: `input_ids`, `attention_mask`, `token_type_ids`, each `(batch, seq)`.
      adapters: layer name -> LoRA `{'a', 'b'}`, or None.
      lora_config: LoRA hyperparameters (needed with `adapters`).
      analog_layers: layer name -> mapped tiles; these layers run on analog
        hardware, the rest digitally.
      analog_config: hardware configuration (needed with `analog_layers`).
      key: PRNG key for dropout, LoRA dropout and analog noise; may be None
        only for a forward without any randomness.
      training: training forward: dropout on, training weight noise on, no
        drift compensation factor.
      compute_dtype: input dtype of the linear layers' matmuls, "float32" or
        "bfloat16" (see `hwa_lora_jax.precision`).

    Returns:
      The model's output dict.
    """
    check_compute_dtype(compute_dtype)
    adapters = adapters or {}
    analog_layers = analog_layers or {}
    if adapters and lora_config is None:
        raise ValueError("adapters were given without a lora_config.")
    if analog_layers and analog_config is None:
        raise ValueError("analog_layers were given without an analog_config.")
    needs_key = training or (analog_layers and analog_config.io.out_noise > 0)
    if key is None and needs_key:
        raise ValueError("This forward draws noise or dropout; pass key=jax.random.key(...).")
    if key is None:
        key = jax.random.key(0)  # Unused: nothing below is random.
    dropout_key, lora_key, analog_key = jax.random.split(key, 3)

    def intercept(next_fun, args, kwargs, context):
        if not isinstance(context.module, Dense) or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        name = "/".join(context.module.path)
        x = args[0]
        layer_params = context.module.variables["params"]
        if name in analog_layers:
            y = analog_matmul(x, analog_layers[name], layer_params.get("bias"), analog_config,
                              key=layer_key(analog_key, name), training=training,
                              compute_dtype=compute_dtype)
        elif compute_dtype == "float32":
            y = next_fun(*args, **kwargs)
        else:
            y = linear(x, layer_params["kernel"], layer_params.get("bias"), compute_dtype)
        if name in adapters:
            drop = layer_key(lora_key, name) if training else None
            y = y + lora_delta(x, adapters[name], lora_config, dropout_key=drop,
                               compute_dtype=compute_dtype)
        return y

    inputs = [jnp.asarray(batch[name], jnp.int32) for name in INPUT_NAMES]
    with nn.intercept_methods(intercept):
        return model.apply({"params": params}, *inputs, deterministic=not training,
                           rngs={"dropout": dropout_key} if training else None)
