"""BERT encoder in Flax, numerically equal to transformers' PyTorch `BertModel`.

Serves BERT-base, BERT-large and other BERT-architecture checkpoints such as
MiniLM. Submodule names follow the Hugging Face module paths, so the
parameter `encoder/layer_3/attention/self/query/kernel` is the transpose of
`bert.encoder.layer.3.attention.self.query.weight`.
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
)

Array = jax.Array


class BertEmbeddings(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids: Array, token_type_ids: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        init = nn.initializers.normal(stddev=cfg.initializer_range)
        seq = input_ids.shape[1]
        words = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init,
                         name="word_embeddings")(input_ids)
        positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init,
                             name="position_embeddings")(jnp.arange(seq)[None, :])
        types = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, embedding_init=init,
                         name="token_type_embeddings")(token_type_ids)
        x = nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="LayerNorm")(words + positions + types)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class _DenseNormResidual(nn.Module):
    """`LayerNorm(dropout(dense(x)) + residual)`: BERT's `SelfOutput` and `Output`."""

    config: ModelConfig
    features: int

    @nn.compact
    def __call__(self, x: Array, residual: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        x = Dense(self.features, kernel_init(cfg), name="dense")(x)
        x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return nn.LayerNorm(epsilon=cfg.layer_norm_eps, name="LayerNorm")(x + residual)


class BertAttention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        context = SelfAttention(cfg, cfg.num_attention_heads, head_dim, name="self")(
            x, x, x, bias, deterministic=deterministic)
        return _DenseNormResidual(cfg, cfg.hidden_size, name="output")(
            context, x, deterministic=deterministic)


class BertIntermediate(nn.Module):
    config: ModelConfig
    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = Dense(self.features, kernel_init(self.config), name="dense")(x)
        return activation(self.config.hidden_act)(x)


class BertLayer(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        attended = BertAttention(cfg, name="attention")(x, bias, deterministic=deterministic)
        hidden = BertIntermediate(cfg, cfg.intermediate_size, name="intermediate")(attended)
        return _DenseNormResidual(cfg, cfg.hidden_size, name="output")(
            hidden, attended, deterministic=deterministic)


class BertPooler(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, sequence: Array) -> Array:
        cls = sequence[:, 0]
        return jnp.tanh(Dense(self.config.hidden_size, kernel_init(self.config), name="dense")(cls))


class BertModel(EncoderModel):
    """BERT encoder: embeddings, `num_hidden_layers` layers and an optional pooler."""

    embeddings_cls = BertEmbeddings
    layer_cls = BertLayer
    pooler_cls = BertPooler
