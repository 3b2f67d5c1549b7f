"""Pre-LN encoder-decoder Transformer, the base the mBART family grows from.

Public face: `TransformerConfig`, `EncoderDecoder` (`encode`, `decode`,
`__call__`), `count_flops`. Usable with nothing but `model.apply`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from zoo.nn import layers


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 64
    d_model: int = 64  # model width
    num_heads: int = 4
    mlp_dim: int = 256  # FFN hidden width
    encoder_layers: int = 2
    decoder_layers: int = 2
    max_length: int = 256  # rows of the learned position table
    position_offset: int = 0  # mBART: 2 (fairseq's padding_idx + 1)
    positions: str = "learned"  # "learned" | "sinusoidal"
    activation: str = "gelu"  # "gelu" (exact erf) | "relu" | "gelu_tanh"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layernorm_embedding: bool = True  # LN right after token+position embedding
    scale_embedding: bool = True  # multiply token embeddings by sqrt(d_model)
    final_logits_bias: bool = True  # output bias [vocab] on the tied projection
    layer_norm_eps: float = 1e-5
    dtype: str = "float32"  # compute dtype; parameters always stay float32
    remat: str = "none"  # "none" | "full" | a jax.checkpoint_policies name

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    def validate(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.num_heads="
                f"{self.num_heads}; pick a head count that divides the width"
            )
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"model.positions={self.positions!r}; use 'learned' or 'sinusoidal'")


def _remat(cls: type[nn.Module], policy: str) -> type[nn.Module]:
    if policy == "none":
        return cls
    if policy == "full":
        return nn.remat(cls, static_argnums=(-1,))
    if not hasattr(jax.checkpoint_policies, policy):
        raise ValueError(
            f"model.remat={policy!r} is not 'none', 'full' or a "
            "jax.checkpoint_policies name (e.g. 'dots_saveable')"
        )
    return nn.remat(cls, policy=getattr(jax.checkpoint_policies, policy), static_argnums=(-1,))


def _pre_ln_residual(c: TransformerConfig, x_BxLxD, norm_name: str, sublayer, deterministic):
    """x + Dropout(sublayer(LayerNorm(x))): one pre-LN sublayer, as BART/mBART."""
    h = layers.LayerNorm(c.layer_norm_eps, jnp.dtype(c.dtype), name=norm_name)(x_BxLxD)
    return x_BxLxD + nn.Dropout(c.dropout)(sublayer(h), deterministic=deterministic)


def _attention(c: TransformerConfig, name: str) -> layers.MultiHeadAttention:
    return layers.MultiHeadAttention(
        c.num_heads, c.head_dim, c.attention_dropout, jnp.dtype(c.dtype), name=name
    )


def _ffn(c: TransformerConfig) -> layers.FeedForward:
    return layers.FeedForward(c.mlp_dim, c.activation, 0.0, jnp.dtype(c.dtype), name="ffn")


class EncoderLayer(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x_BxLxD, mask, deterministic: bool):
        c = self.config
        attn, ffn = _attention(c, "self_attn"), _ffn(c)
        x_BxLxD = _pre_ln_residual(
            c,
            x_BxLxD,
            "self_attn_layer_norm",
            lambda h: attn(h, h, mask, deterministic),
            deterministic,
        )
        x_BxLxD = _pre_ln_residual(
            c, x_BxLxD, "final_layer_norm", lambda h: ffn(h, deterministic), deterministic
        )
        return layers.constrain(x_BxLxD, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, y_BxTxD, enc_BxSxD, self_mask, cross_mask, deterministic: bool):
        c = self.config
        self_attn, cross_attn, ffn = (
            _attention(c, "self_attn"),
            _attention(c, "encoder_attn"),
            _ffn(c),
        )
        y_BxTxD = _pre_ln_residual(
            c,
            y_BxTxD,
            "self_attn_layer_norm",
            lambda h: self_attn(h, h, self_mask, deterministic),
            deterministic,
        )
        y_BxTxD = _pre_ln_residual(
            c,
            y_BxTxD,
            "encoder_attn_layer_norm",
            lambda h: cross_attn(h, enc_BxSxD, cross_mask, deterministic),
            deterministic,
        )
        y_BxTxD = _pre_ln_residual(
            c, y_BxTxD, "final_layer_norm", lambda h: ffn(h, deterministic), deterministic
        )
        return layers.constrain(y_BxTxD, ("batch", "length", "embed"))


class EncoderDecoder(nn.Module):
    """Shared-embedding encoder-decoder. Logits are float32 [batch, tgt_len, vocab]."""

    config: TransformerConfig

    def setup(self):
        c = self.config
        c.validate()
        dt = jnp.dtype(c.dtype)
        self.shared = layers.Embed(c.vocab_size, c.d_model, dt, name="shared")
        if c.positions == "learned":
            self.enc_positions = layers.LearnedPositions(
                c.max_length, c.d_model, c.position_offset, dt, name="encoder_positions"
            )
            self.dec_positions = layers.LearnedPositions(
                c.max_length, c.d_model, c.position_offset, dt, name="decoder_positions"
            )
        if c.layernorm_embedding:
            self.enc_ln_emb = layers.LayerNorm(
                c.layer_norm_eps, dt, name="encoder_layernorm_embedding"
            )
            self.dec_ln_emb = layers.LayerNorm(
                c.layer_norm_eps, dt, name="decoder_layernorm_embedding"
            )
        self.enc_layers = [
            _remat(EncoderLayer, c.remat)(c, name=f"encoder_layer_{i}")
            for i in range(c.encoder_layers)
        ]
        self.dec_layers = [
            _remat(DecoderLayer, c.remat)(c, name=f"decoder_layer_{i}")
            for i in range(c.decoder_layers)
        ]
        self.enc_ln = layers.LayerNorm(c.layer_norm_eps, dt, name="encoder_layer_norm")
        self.dec_ln = layers.LayerNorm(c.layer_norm_eps, dt, name="decoder_layer_norm")
        if c.final_logits_bias:
            self.logits_bias = self.param(
                "final_logits_bias",
                layers.logical(nn.initializers.zeros_init(), ("vocab",)),
                (c.vocab_size,),
                jnp.float32,
            )
        self.dropout = nn.Dropout(c.dropout)

    def _embed(self, ids_BxL, positions_BxL, table, ln, deterministic):
        c = self.config
        x = self.shared(ids_BxL)
        if c.scale_embedding:
            x = x * jnp.sqrt(jnp.asarray(c.d_model, x.dtype))
        if c.positions == "learned":
            if ids_BxL.shape[1] > c.max_length:
                raise ValueError(
                    f"sequence length {ids_BxL.shape[1]} exceeds the position table "
                    f"(model.max_length={c.max_length}); shorten the input or raise max_length"
                )
            x = x + table(positions_BxL)
        else:
            x = x + layers.sinusoidal_positions(positions_BxL, c.d_model).astype(x.dtype)
        if c.layernorm_embedding:
            x = ln(x)
        x = self.dropout(x, deterministic=deterministic)
        return layers.constrain(x, ("batch", "length", "embed"))

    def encode(
        self,
        input_ids,
        attention_mask,
        *,
        positions=None,
        segment_ids=None,
        deterministic: bool = True,
    ) -> jax.Array:
        """input_ids, attention_mask: [B, S] -> encoder states [B, S, D]."""
        attention_mask = attention_mask.astype(bool)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = self._embed(
            input_ids,
            positions,
            getattr(self, "enc_positions", None),
            getattr(self, "enc_ln_emb", None),
            deterministic,
        )
        mask = layers.attention_mask(
            attention_mask, attention_mask, q_segments_BxQ=segment_ids, k_segments_BxK=segment_ids
        )
        for layer in self.enc_layers:
            x = layer(x, mask, deterministic)
        return self.enc_ln(x)

    def decode(
        self,
        encoded_BxSxD,
        attention_mask,
        decoder_input_ids,
        *,
        decoder_attention_mask=None,
        positions=None,
        segment_ids=None,
        encoder_segment_ids=None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Teacher-forced decoder -> logits [B, T, vocab] f32."""
        attention_mask = attention_mask.astype(bool)
        if decoder_attention_mask is None:
            decoder_attention_mask = jnp.ones(decoder_input_ids.shape, bool)
        decoder_attention_mask = decoder_attention_mask.astype(bool)
        if positions is None:
            positions = jnp.broadcast_to(
                jnp.arange(decoder_input_ids.shape[1]), decoder_input_ids.shape
            )
        y = self._embed(
            decoder_input_ids,
            positions,
            getattr(self, "dec_positions", None),
            getattr(self, "dec_ln_emb", None),
            deterministic,
        )
        self_mask = layers.attention_mask(
            decoder_attention_mask,
            decoder_attention_mask,
            causal=True,
            q_segments_BxQ=segment_ids,
            k_segments_BxK=segment_ids,
        )
        cross_mask = layers.attention_mask(
            decoder_attention_mask,
            attention_mask,
            q_segments_BxQ=segment_ids,
            k_segments_BxK=encoder_segment_ids,
        )
        for layer in self.dec_layers:
            y = layer(y, encoded_BxSxD, self_mask, cross_mask, deterministic)
        y = self.dec_ln(y)
        logits = self.shared.attend(y).astype(jnp.float32)
        if self.config.final_logits_bias:
            logits = logits + self.logits_bias
        return layers.constrain(logits, ("batch", "length", "vocab"))

    def __call__(
        self,
        input_ids,
        attention_mask,
        decoder_input_ids,
        *,
        decoder_attention_mask=None,
        input_positions=None,
        input_segment_ids=None,
        decoder_positions=None,
        decoder_segment_ids=None,
        deterministic: bool = True,
    ) -> jax.Array:
        encoded = self.encode(
            input_ids,
            attention_mask,
            positions=input_positions,
            segment_ids=input_segment_ids,
            deterministic=deterministic,
        )
        return self.decode(
            encoded,
            attention_mask,
            decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            positions=decoder_positions,
            segment_ids=decoder_segment_ids,
            encoder_segment_ids=input_segment_ids,
            deterministic=deterministic,
        )


def count_flops(config: TransformerConfig, batch: int, src_len: int, tgt_len: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward).

    Counts matmuls only (2 FLOPs per multiply-add), attention scores and
    values included, as MaxText's MFU does; no remat recomputation.
    """
    d, f, v = config.d_model, config.mlp_dim, config.vocab_size
    enc_tok, dec_tok = batch * src_len, batch * tgt_len
    per_enc_layer = enc_tok * (4 * d * d + 2 * d * f) + 2 * batch * src_len * src_len * d
    per_dec_layer = (
        dec_tok * (4 * d * d + 2 * d * f)
        + 2 * batch * tgt_len * tgt_len * d
        + dec_tok * 2 * d * d
        + enc_tok * 2 * d * d
        + 2 * batch * tgt_len * src_len * d
    )
    forward = 2 * (
        config.encoder_layers * per_enc_layer
        + config.decoder_layers * per_dec_layer
        + dec_tok * d * v
    )
    return 3.0 * forward


def describe(params: Any) -> str:
    n = sum(x.size for x in jax.tree.leaves(params))
    return f"{n / 1e6:.2f}M parameters"
