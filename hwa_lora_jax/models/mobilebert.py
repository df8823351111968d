"""MobileBERT encoder in Flax, numerically equal to transformers' `MobileBertModel`.

MobileBERT (Sun et al., 2020) keeps a 512-wide residual stream but runs
attention and the feed-forward networks in a 128-wide bottleneck: per layer,
`bottleneck/input` and `bottleneck/attention` project 512 -> 128, four stacked
feed-forward networks (`ffn_0..2` plus `intermediate`/`output`) work at 128,
and `output/bottleneck` projects back to 512. Normalization is NoNorm (an
element-wise affine map). Submodule names follow the Hugging Face module paths.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hwa_lora_jax.models.config import ModelConfig
from hwa_lora_jax.models.layers import (
    Dense,
    EncoderModel,
    SelfAttention,
    activation,
    kernel_init,
    make_norm,
)

Array = jax.Array


class MobileBertEmbeddings(nn.Module):
    """Word embeddings (width `embedding_size`), the trigram input and the
    `embedding_transformation` to `hidden_size`, plus position and type embeddings."""

    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids: Array, token_type_ids: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        init = nn.initializers.normal(stddev=cfg.initializer_range)
        seq = input_ids.shape[1]
        words = nn.Embed(cfg.vocab_size, cfg.embedding_size, embedding_init=init,
                         name="word_embeddings")(input_ids)
        if cfg.trigram_input:
            # [embedding of the next token, this token, the previous token],
            # zero beyond the sequence ends: (batch, seq, 3 * embedding_size).
            following = jnp.pad(words[:, 1:], ((0, 0), (0, 1), (0, 0)))
            preceding = jnp.pad(words[:, :-1], ((0, 0), (1, 0), (0, 0)))
            words = jnp.concatenate([following, words, preceding], axis=-1)
        if cfg.trigram_input or cfg.embedding_size != cfg.hidden_size:
            words = Dense(cfg.hidden_size, kernel_init(cfg), name="embedding_transformation")(words)
        positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init,
                             name="position_embeddings")(jnp.arange(seq)[None, :])
        types = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, embedding_init=init,
                         name="token_type_embeddings")(token_type_ids)
        x = make_norm(cfg, eps=None)(words + positions + types)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class _BottleneckLayer(nn.Module):
    """`norm(dense(x))`, projecting `hidden_size` to `intra_bottleneck_size`."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        x = Dense(cfg.intra_bottleneck_size, kernel_init(cfg), name="dense")(x)
        return make_norm(cfg, eps=cfg.layer_norm_eps)(x)


class _DenseNormResidual(nn.Module):
    """`norm(dropout(dense(x)) + residual)`.

    Attributes:
      features: output width.
      eps: LayerNorm epsilon, `None` for torch's default (see `make_norm`).
      dropout: apply hidden dropout after the dense layer.
    """

    config: ModelConfig
    features: int
    eps: float | None
    dropout: bool

    @nn.compact
    def __call__(self, x: Array, residual: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        x = Dense(self.features, kernel_init(cfg), name="dense")(x)
        if self.dropout:
            x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return make_norm(cfg, eps=self.eps)(x + residual)


class _Intermediate(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = Dense(self.config.intermediate_size, kernel_init(self.config), name="dense")(x)
        return activation(self.config.hidden_act)(x)


class _FFNLayer(nn.Module):
    """One of the stacked feed-forward networks before the layer's last one."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        hidden = _Intermediate(cfg, name="intermediate")(x)
        return _DenseNormResidual(cfg, cfg.true_hidden_size, cfg.layer_norm_eps, dropout=False,
                                  name="output")(hidden, x, deterministic=deterministic)


class _Output(nn.Module):
    """The layer's last feed-forward output, then `bottleneck` back to `hidden_size`."""

    config: ModelConfig

    @nn.compact
    def __call__(self, hidden: Array, residual: Array, layer_input: Array,
                 *, deterministic: bool) -> Array:
        cfg = self.config
        x = Dense(cfg.true_hidden_size, kernel_init(cfg), name="dense")(hidden)
        if not cfg.use_bottleneck:
            x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
            return make_norm(cfg, eps=None)(x + residual)
        x = make_norm(cfg, eps=None)(x + residual)
        return _DenseNormResidual(cfg, cfg.hidden_size, cfg.layer_norm_eps, dropout=True,
                                  name="bottleneck")(x, layer_input, deterministic=deterministic)


class _Bottleneck(nn.Module):
    """Project the 512-wide stream into the bottleneck.

    Returns `(query, key, value, layer_input)` inputs of the attention block.
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array, Array, Array]:
        cfg = self.config
        layer_input = _BottleneckLayer(cfg, name="input")(x)
        if cfg.use_bottleneck_attention:
            return layer_input, layer_input, layer_input, layer_input
        if cfg.key_query_shared_bottleneck:
            shared = _BottleneckLayer(cfg, name="attention")(x)
            return shared, shared, x, layer_input
        return x, x, x, layer_input


class _Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, query: Array, key: Array, value: Array, layer_input: Array, bias: Array,
                 *, deterministic: bool) -> Array:
        cfg = self.config
        head_dim = cfg.true_hidden_size // cfg.num_attention_heads
        context = SelfAttention(cfg, cfg.num_attention_heads, head_dim, name="self")(
            query, key, value, bias, deterministic=deterministic)
        return _DenseNormResidual(cfg, cfg.true_hidden_size, cfg.layer_norm_eps,
                                  dropout=not cfg.use_bottleneck, name="output")(
            context, layer_input, deterministic=deterministic)


class MobileBertLayer(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        if cfg.use_bottleneck:
            query, key, value, layer_input = _Bottleneck(cfg, name="bottleneck")(x)
        else:
            query = key = value = layer_input = x
        attended = _Attention(cfg, name="attention")(query, key, value, layer_input, bias,
                                                     deterministic=deterministic)
        for i in range(cfg.num_feedforward_networks - 1):
            attended = _FFNLayer(cfg, name=f"ffn_{i}")(attended, deterministic=deterministic)
        hidden = _Intermediate(cfg, name="intermediate")(attended)
        return _Output(cfg, name="output")(hidden, attended, x, deterministic=deterministic)


class MobileBertPooler(nn.Module):
    """The first token's state, through dense + tanh only if `classifier_activation`."""

    config: ModelConfig

    @nn.compact
    def __call__(self, sequence: Array) -> Array:
        cls = sequence[:, 0]
        if not self.config.classifier_activation:
            return cls
        return jnp.tanh(Dense(self.config.hidden_size, kernel_init(self.config), name="dense")(cls))


class MobileBertModel(EncoderModel):
    """MobileBERT encoder: embeddings, `num_hidden_layers` layers and an optional pooler."""

    embeddings_cls = MobileBertEmbeddings
    layer_cls = MobileBertLayer
    pooler_cls = MobileBertPooler
