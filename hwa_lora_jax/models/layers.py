"""Building blocks shared by the BERT and MobileBERT encoders.

`Dense` is the single linear primitive of every encoder and head layer. The
analog transforms and LoRA wrap it (by intercepting `Dense.__call__`, see
`flax.linen.intercept_methods`), so the models themselves stay digital.
"""

from __future__ import annotations

import functools
from typing import Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from hwa_lora_jax.models.config import ModelConfig
from hwa_lora_jax.precision import matmul

Array = jax.Array


def kernel_init(config: ModelConfig) -> Callable:
    """Normal(0, initializer_range) weights, as transformers initializes them."""
    return nn.initializers.normal(stddev=config.initializer_range)


class Dense(nn.Module):
    """Linear layer `y = x @ kernel + bias`.

    Attributes:
      features: number of outputs.
      kernel_init: initializer of the `(in_features, features)` kernel.
      use_bias: whether to add the `(features,)` bias.
    """

    features: int
    kernel_init: Callable = nn.initializers.normal(stddev=0.02)
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Apply the layer to `x` of shape `(..., in_features)`."""
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias \
            else None
        return linear(x, kernel, bias)


def linear(x: Array, kernel: Array, bias: Array | None, compute_dtype: str = "float32") -> Array:
    """Return `x @ kernel + bias` with the matmul inputs in `compute_dtype` (see `precision`)."""
    y = matmul(x, kernel, compute_dtype)
    return y if bias is None else y + bias


class NoNorm(nn.Module):
    """MobileBERT's element-wise affine map `x * scale + bias`, used in place of LayerNorm."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        return x * scale + bias


def make_norm(config: ModelConfig, *, eps: float | None, name: str = "LayerNorm") -> nn.Module:
    """Return the configured normalization layer.

    Args:
      config: the model config; `normalization_type` picks NoNorm or LayerNorm.
      eps: LayerNorm epsilon. transformers' MobileBERT builds some of its
        LayerNorms without passing `layer_norm_eps` (so torch's 1e-5 applies);
        pass `None` to reproduce that.
      name: parameter scope name (Hugging Face's `LayerNorm`).
    """
    if config.normalization_type == "no_norm":
        return NoNorm(name=name)
    return nn.LayerNorm(epsilon=1e-5 if eps is None else eps, name=name)


def activation(name: str) -> Callable[[Array], Array]:
    """Activation function by its transformers name (`ACT2FN` semantics)."""
    table = {
        "gelu": functools.partial(jax.nn.gelu, approximate=False),
        "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
        "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
        "relu": jax.nn.relu,
        "tanh": jnp.tanh,
        "silu": jax.nn.silu,
    }
    return table[name]


def attention_bias(attention_mask: Array, dtype=jnp.float32) -> Array:
    """Turn a `(batch, seq)` 0/1 padding mask into an additive `(batch, 1, 1, seq)` bias."""
    mask = attention_mask[:, None, None, :].astype(bool)
    return jnp.where(mask, jnp.zeros((), dtype), jnp.asarray(jnp.finfo(dtype).min, dtype))


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention with Hugging Face parameter names.

    The query, key and value projections are `Dense` layers named `query`,
    `key` and `value`. The attention scores themselves stay digital.
    """

    config: ModelConfig
    num_heads: int
    head_dim: int

    @nn.compact
    def __call__(self, query_in: Array, key_in: Array, value_in: Array, bias: Array,
                 *, deterministic: bool) -> Array:
        """Attend; inputs are `(batch, seq, features)`, `bias` is `(batch, 1, 1, seq)`."""
        width = self.num_heads * self.head_dim
        init = kernel_init(self.config)
        batch, seq = query_in.shape[:2]

        def heads(x: Array) -> Array:
            return x.reshape(batch, seq, self.num_heads, self.head_dim)

        query = heads(Dense(width, init, name="query")(query_in))
        key = heads(Dense(width, init, name="key")(key_in))
        value = heads(Dense(width, init, name="value")(value_in))

        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key,
                            precision=jax.lax.Precision.HIGHEST) * (self.head_dim ** -0.5)
        weights = jax.nn.softmax(scores + bias, axis=-1)
        weights = nn.Dropout(self.config.attention_probs_dropout_prob)(
            weights, deterministic=deterministic)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value,
                             precision=jax.lax.Precision.HIGHEST)
        return context.reshape(batch, seq, width)


class _Encoder(nn.Module):
    """`num_hidden_layers` layers named `layer_0`, `layer_1`, ..."""

    config: ModelConfig
    layer_cls: type[nn.Module]

    @nn.compact
    def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> tuple[Array, ...]:
        """Return the output of every layer, the input embeddings first."""
        states = [x]
        for i in range(self.config.num_hidden_layers):
            x = self.layer_cls(self.config, name=f"layer_{i}")(x, bias, deterministic=deterministic)
            states.append(x)
        return tuple(states)


class EncoderModel(nn.Module):
    """Embeddings, a stack of layers and an optional pooler, as in transformers' `*Model`.

    Subclasses set the three building blocks as class variables.

    Attributes:
      config: the architecture.
      add_pooling_layer: build the `pooler`.
    """

    embeddings_cls: ClassVar[type[nn.Module]]
    layer_cls: ClassVar[type[nn.Module]]
    pooler_cls: ClassVar[type[nn.Module]]

    config: ModelConfig
    add_pooling_layer: bool = True

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array, token_type_ids: Array,
                 *, deterministic: bool = True) -> dict[str, Array | tuple[Array, ...]]:
        """Encode token ids of shape `(batch, seq)`.

        Returns:
          A dict with `last_hidden_state` `(batch, seq, hidden)`, `hidden_states`
          (embeddings plus one entry per layer) and, with a pooler, `pooler_output`
          `(batch, hidden)`.
        """
        cfg = self.config
        x = self.embeddings_cls(cfg, name="embeddings")(input_ids, token_type_ids,
                                                         deterministic=deterministic)
        states = _Encoder(cfg, self.layer_cls, name="encoder")(
            x, attention_bias(attention_mask), deterministic=deterministic)
        outputs = {"last_hidden_state": states[-1], "hidden_states": states}
        if self.add_pooling_layer:
            outputs["pooler_output"] = self.pooler_cls(cfg, name="pooler")(states[-1])
        return outputs
