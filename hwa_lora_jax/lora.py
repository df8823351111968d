"""Digital LoRA adapters for the frozen (analog) linear layers.

A LoRA adapter adds `scale * dropout(x) @ a @ b` to a linear layer's output,
with `a` of shape `(in_features, rank)`, `b` of shape `(rank, out_features)`
and `scale = alpha / rank` (Hu et al., 2021). The branch is digital: it reads
the layer's unquantized input and is added after the analog output has been
rescaled and biased, so it bypasses the DAC, the ADC and all analog noise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp

from hwa_lora_jax.analog.tree import layer_key
from hwa_lora_jax.placement import PLACEMENTS, select_layers
from hwa_lora_jax.precision import matmul

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """LoRA hyperparameters.

    Attributes:
      rank: adapter rank r, >= 1.
      alpha: scaling numerator; the branch is multiplied by `alpha / rank`.
      dropout: dropout rate on the adapter's input during training, in [0, 1).
      placement: `'all'`, `'qkv'`, `'ffn'` or a regular expression matched
        with `re.search` against layer names (see `hwa_lora_jax.placement`).
    """

    rank: int = 8
    alpha: float = 32.0
    dropout: float = 0.1
    placement: str = "all"

    def __post_init__(self):
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"lora.rank={self.rank!r} is invalid; it must be an integer >= 1.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout={self.dropout!r} is invalid; it must be in [0, 1).")
        if not self.placement:
            raise ValueError(f"lora.placement is empty; use one of {PLACEMENTS} or a regex.")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def init_lora(key: Array, layer_shapes: Mapping[str, tuple[int, int]],
              config: LoraConfig) -> dict[str, dict[str, Array]]:
    """Create adapters for the layers that `config.placement` selects.

    `a` is drawn like torch's default `nn.Linear` weight (Kaiming-uniform with
    a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), as peft does; `b` is zero,
    so a fresh adapter leaves the model unchanged.

    Args:
      key: PRNG key.
      layer_shapes: layer name -> kernel shape `(in_features, out_features)`.
      config: LoRA hyperparameters.

    Returns:
      layer name -> `{'a': (in, rank), 'b': (rank, out)}` float32 arrays.

    Raises:
      ValueError: the placement selects no layer.
    """
    names = select_layers(layer_shapes, config.placement)
    if not names:
        raise ValueError(
            f"lora.placement={config.placement!r} selects none of the model's "
            f"{len(layer_shapes)} linear layers (e.g. {next(iter(layer_shapes), '')!r})."
        )
    adapters = {}
    for name in names:
        fan_in, fan_out = layer_shapes[name]
        bound = 1.0 / math.sqrt(fan_in)
        a = jax.random.uniform(layer_key(key, name), (fan_in, config.rank), jnp.float32,
                               -bound, bound)
        adapters[name] = {"a": a, "b": jnp.zeros((config.rank, fan_out), jnp.float32)}
    return adapters


def lora_delta(x: Array, adapter: Mapping[str, Array], config: LoraConfig,
               *, dropout_key: Array | None = None, compute_dtype: str = "float32") -> Array:
    """Compute the adapter branch `scale * dropout(x) @ a @ b`.

    Args:
      x: float32 `(..., in_features)` layer input (unquantized).
      adapter: `{'a': (in, rank), 'b': (rank, out)}`.
      config: LoRA hyperparameters.
      dropout_key: PRNG key for input dropout; `None` disables dropout (eval).
      compute_dtype: matmul input dtype (`hwa_lora_jax.precision`).

    Returns:
      float32 `(..., out_features)`.
    """
    if dropout_key is not None and config.dropout > 0:
        keep = jax.random.bernoulli(dropout_key, 1.0 - config.dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - config.dropout), jnp.zeros((), x.dtype))
    hidden = matmul(x, adapter["a"], compute_dtype)
    return config.scale * matmul(hidden, adapter["b"], compute_dtype)


def count_lora_params(adapters: Mapping[str, Mapping[str, Array]]) -> int:
    """Total number of adapter parameters."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(adapters))
