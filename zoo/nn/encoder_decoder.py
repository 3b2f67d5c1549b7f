"""Pre-LN encoder-decoder Transformer: the shared base of the mBART family and the smoke task.

Public face: `TransformerConfig`, `EncoderDecoder` (`encode`, `decode`,
`__call__`, and for incremental decoding `init_decode_cache` / `decode_step`),
`count_flops`. Usable with nothing but `model.apply`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from zoo.nn import checks, layers
from zoo.nn.cache import BEAM_SHARED


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int = 64
    d_model: int = 64  # model width
    num_heads: int = 4  # encoder heads; the decoder's too unless decoder_num_heads is set
    mlp_dim: int = 256  # encoder FFN hidden width; the decoder's too unless decoder_mlp_dim is set
    encoder_layers: int = 2
    decoder_layers: int = 2
    max_length: int = 256  # rows of the learned position table
    position_offset: int = 0  # mBART: 2 (fairseq's padding_idx + 1)
    positions: str = "learned"  # "learned" | "sinusoidal"
    activation: str = "gelu"  # "gelu" (exact erf) | "relu" | "gelu_tanh"
    decoder_num_heads: int | None = None  # None: num_heads (HF decoder_attention_heads)
    decoder_mlp_dim: int | None = None  # None: mlp_dim (HF decoder_ffn_dim)
    dropout: float = 0.0  # after embeddings, attention out-projections and fc2
    attention_dropout: float = 0.0  # on attention probabilities
    activation_dropout: float = 0.0  # after the FFN activation
    layernorm_embedding: bool = True  # LN right after token+position embedding
    scale_embedding: bool = True  # multiply token embeddings by sqrt(d_model)
    final_logits_bias: bool = True  # output bias [vocab] on the tied projection
    layer_norm_eps: float = 1e-5
    dtype: str = "float32"  # compute dtype; parameters always stay float32
    remat: str = "none"  # "none" | "full" | a jax.checkpoint_policies name

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def dec_heads(self) -> int:
        return self.decoder_num_heads or self.num_heads

    @property
    def dec_mlp_dim(self) -> int:
        return self.decoder_mlp_dim or self.mlp_dim

    def validate(self) -> None:
        """Every field of a real model's range (a config from a file may ask for anything)."""
        for field in ("d_model", "mlp_dim"):
            checks.int_in(f"model.{field}", getattr(self, field), 1, checks.MAX_WIDTH)
        checks.int_in("model.vocab_size", self.vocab_size, 1, checks.MAX_VOCAB)
        checks.int_in("model.num_heads", self.num_heads, 1, checks.MAX_HEADS)
        for field in ("encoder_layers", "decoder_layers"):
            checks.int_in(f"model.{field}", getattr(self, field), 0, checks.MAX_LAYERS)
        checks.int_in("model.max_length", self.max_length, 1, checks.MAX_LENGTH)
        checks.int_in("model.position_offset", self.position_offset, 0, 64)
        if self.decoder_num_heads is not None:
            checks.int_in("model.decoder_num_heads", self.decoder_num_heads, 1, checks.MAX_HEADS)
        if self.decoder_mlp_dim is not None:
            checks.int_in("model.decoder_mlp_dim", self.decoder_mlp_dim, 1, checks.MAX_WIDTH)
        for field in ("dropout", "attention_dropout", "activation_dropout"):
            checks.fraction(f"model.{field}", getattr(self, field))
        checks.positive("model.layer_norm_eps", self.layer_norm_eps, 1.0)
        checks.one_of("model.activation", self.activation, layers.ACTIVATIONS)
        checks.one_of("model.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        for field in ("layernorm_embedding", "scale_embedding", "final_logits_bias"):
            if type(getattr(self, field)) is not bool:
                raise ValueError(f"model.{field}={getattr(self, field)!r} must be true or false")
        for field, heads in (("num_heads", self.num_heads), ("decoder_num_heads", self.dec_heads)):
            if self.d_model % heads:
                raise ValueError(
                    f"model.d_model={self.d_model} is not divisible by model.{field}="
                    f"{heads}; pick a head count that divides the width"
                )
        if self.positions not in ("learned", "sinusoidal"):
            raise ValueError(f"model.positions={self.positions!r}; use 'learned' or 'sinusoidal'")


def _remat(cls: type[nn.Module], policy: str) -> type[nn.Module]:
    # `deterministic` (the last argument of __call__, self counted as 0) must stay static:
    # flax's nn.remat does not resolve negative static_argnums, so give the index.
    static = (len(inspect.signature(cls.__call__).parameters) - 1,)
    if policy == "none":
        return cls
    if policy == "full":
        return nn.remat(cls, static_argnums=static)
    if not hasattr(jax.checkpoint_policies, policy):
        raise ValueError(
            f"model.remat={policy!r} is not 'none', 'full' or a "
            "jax.checkpoint_policies name (e.g. 'dots_saveable')"
        )
    return nn.remat(cls, policy=getattr(jax.checkpoint_policies, policy), static_argnums=static)


def _pre_ln_residual(x_BxLxD, norm: nn.Module, sublayer, dropout: nn.Module, deterministic):
    """x + Dropout(sublayer(LayerNorm(x))): one pre-LN sublayer, as BART/mBART."""
    return x_BxLxD + dropout(sublayer(norm(x_BxLxD)), deterministic=deterministic)


def _attention(c: TransformerConfig, heads: int) -> layers.MultiHeadAttention:
    return layers.MultiHeadAttention(
        heads, c.d_model // heads, c.attention_dropout, jnp.dtype(c.dtype)
    )


def _ffn(c: TransformerConfig, mlp_dim: int) -> layers.FeedForward:
    return layers.FeedForward(mlp_dim, c.activation, c.activation_dropout, jnp.dtype(c.dtype))


def _norm(c: TransformerConfig) -> layers.LayerNorm:
    return layers.LayerNorm(c.layer_norm_eps, jnp.dtype(c.dtype))


class EncoderLayer(nn.Module):
    config: TransformerConfig

    def setup(self):
        c = self.config
        self.self_attn_layer_norm, self.self_attn = _norm(c), _attention(c, c.num_heads)
        self.final_layer_norm, self.ffn = _norm(c), _ffn(c, c.mlp_dim)
        self.dropout = nn.Dropout(c.dropout)

    def __call__(self, x_BxLxD, mask, deterministic: bool):
        x_BxLxD = _pre_ln_residual(
            x_BxLxD,
            self.self_attn_layer_norm,
            lambda h: self.self_attn(h, h, mask, deterministic),
            self.dropout,
            deterministic,
        )
        x_BxLxD = _pre_ln_residual(
            x_BxLxD,
            self.final_layer_norm,
            lambda h: self.ffn(h, deterministic),
            self.dropout,
            deterministic,
        )
        return layers.constrain(x_BxLxD, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention, FFN; `__call__` teacher-forces, `step` uses a KV cache."""

    config: TransformerConfig

    def setup(self):
        c = self.config
        self.self_attn_layer_norm, self.self_attn = _norm(c), _attention(c, c.dec_heads)
        self.encoder_attn_layer_norm, self.encoder_attn = _norm(c), _attention(c, c.dec_heads)
        self.final_layer_norm, self.ffn = _norm(c), _ffn(c, c.dec_mlp_dim)
        self.dropout = nn.Dropout(c.dropout)

    def _cross_and_ffn(self, y_BxTxD, cross, deterministic):
        y_BxTxD = _pre_ln_residual(
            y_BxTxD, self.encoder_attn_layer_norm, cross, self.dropout, deterministic
        )
        y_BxTxD = _pre_ln_residual(
            y_BxTxD,
            self.final_layer_norm,
            lambda h: self.ffn(h, deterministic),
            self.dropout,
            deterministic,
        )
        return layers.constrain(y_BxTxD, ("batch", "length", "embed"))

    def __call__(self, y_BxTxD, enc_BxSxD, self_mask, cross_mask, deterministic: bool):
        y_BxTxD = _pre_ln_residual(
            y_BxTxD,
            self.self_attn_layer_norm,
            lambda h: self.self_attn(h, h, self_mask, deterministic),
            self.dropout,
            deterministic,
        )
        return self._cross_and_ffn(
            y_BxTxD,
            lambda h: self.encoder_attn(h, enc_BxSxD, cross_mask, deterministic),
            deterministic,
        )

    def cross_kv(self, enc_BxSxD) -> tuple[jax.Array, jax.Array]:
        """Cross-attention keys/values of the encoder states, each [B, heads, S, head_dim]."""
        k_BxSxHxK, v_BxSxHxK = self.encoder_attn.project_kv(enc_BxSxD)
        return k_BxSxHxK.transpose(0, 2, 1, 3), v_BxSxHxK.transpose(0, 2, 1, 3)

    def step(self, y_Bx1xD, layer_cache: dict, cross_kv: dict, index_B, cross_mask_Bx1x1xS):
        """One token per row at position index_B; returns (y [B, 1, D], updated layer_cache).

        layer_cache: self_k/self_v [B, heads, max_len, head_dim] (row b written at index_B[b];
        rows may be at different steps); cross_kv: k/v [B, heads, S, head_dim] (from
        `cross_kv`, read only). Heads-major so that the attention reads the cache as stored,
        and the write is a per-row in-place update, not a pass over the whole cache.
        """
        h_Bx1xD = self.self_attn_layer_norm(y_Bx1xD)
        k_Bx1xHxK, v_Bx1xHxK = self.self_attn.project_kv(h_Bx1xD)
        write = jax.vmap(lambda buf, new, i: jax.lax.dynamic_update_slice(buf, new, (0, i, 0)))
        self_k = write(layer_cache["self_k"], k_Bx1xHxK.transpose(0, 2, 1, 3), index_B)
        self_v = write(layer_cache["self_v"], v_Bx1xHxK.transpose(0, 2, 1, 3), index_B)
        # Causal: slots up to and including this step; later slots hold zeros or stale values.
        slots_L = jnp.arange(self_k.shape[2])
        self_mask_Bx1x1xL = (slots_L[None, :] <= index_B[:, None])[:, None, None, :]
        y_Bx1xD = y_Bx1xD + self.self_attn.attend_heads_major(
            h_Bx1xD, self_k, self_v, self_mask_Bx1x1xL
        )
        y_Bx1xD = self._cross_and_ffn(
            y_Bx1xD,
            lambda h: self.encoder_attn.attend_heads_major(
                h, cross_kv["k"], cross_kv["v"], cross_mask_Bx1x1xS
            ),
            True,
        )
        return y_Bx1xD, {**layer_cache, "self_k": self_k, "self_v": self_v}


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
        logits = self._logits(self.dec_ln(y))
        return layers.constrain(logits, ("batch", "length", "vocab"))

    def init_decode_cache(self, encoded_BxSxD, attention_mask, max_length: int) -> dict:
        """Cache for `decode_step`; every leaf has leading dim B so beams can gather rows.

        `index` [B] int32 (the next position per row); `layers`: per decoder layer the
        self-attention K/V buffers `self_k`/`self_v` [B, H, max_length, K] (zeros); and under
        `BEAM_SHARED` (equal across an item's beams, never reordered) `encoder_mask`
        [B, S] bool and `cross`: per layer the encoder states' K/V `k`/`v` [B, H, S, K].
        """
        c = self.config
        if c.positions == "learned" and max_length > c.max_length:
            raise ValueError(
                f"decode max_length={max_length} exceeds the position table "
                f"(model.max_length={c.max_length} positions); decode at most "
                f"{c.max_length} tokens"
            )
        batch = encoded_BxSxD.shape[0]
        zeros = jnp.zeros(
            (batch, c.dec_heads, max_length, c.d_model // c.dec_heads), jnp.dtype(c.dtype)
        )
        layer_caches, cross = [], []
        for layer in self.dec_layers:
            cross_k, cross_v = layer.cross_kv(encoded_BxSxD)
            layer_caches.append({"self_k": zeros, "self_v": zeros})
            cross.append({"k": cross_k, "v": cross_v})
        return {
            "index": jnp.zeros((batch,), jnp.int32),
            "layers": tuple(layer_caches),
            BEAM_SHARED: {
                "encoder_mask": attention_mask.astype(bool),
                "cross": tuple(cross),
            },
        }

    def decode_step(self, cache: dict, token_ids_B) -> tuple[jax.Array, dict]:
        """Feeds token_ids_B [B] at each row's cache index -> (logits [B, vocab] f32, cache).

        Equals `decode` teacher-forced on the same prefix (deterministic; no dropout).
        """
        index_B = cache["index"]
        y_Bx1xD = self._embed(
            token_ids_B[:, None],
            index_B[:, None],
            getattr(self, "dec_positions", None),
            getattr(self, "dec_ln_emb", None),
            True,
        )
        shared = cache[BEAM_SHARED]
        cross_mask_Bx1x1xS = shared["encoder_mask"][:, None, None, :]
        new_layers = []
        for layer, layer_cache, cross_kv in zip(self.dec_layers, cache["layers"], shared["cross"]):
            y_Bx1xD, layer_cache = layer.step(
                y_Bx1xD, layer_cache, cross_kv, index_B, cross_mask_Bx1x1xS
            )
            new_layers.append(layer_cache)
        logits_BxV = self._logits(self.dec_ln(y_Bx1xD))[:, 0]
        new_cache = {**cache, "index": index_B + 1, "layers": tuple(new_layers)}
        return logits_BxV, new_cache

    def _logits(self, y_BxTxD) -> jax.Array:
        logits = self.shared.attend(y_BxTxD).astype(jnp.float32)
        if self.config.final_logits_bias:
            logits = logits + self.logits_bias
        return logits

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
    f_dec = config.dec_mlp_dim
    enc_tok, dec_tok = batch * src_len, batch * tgt_len
    per_enc_layer = enc_tok * (4 * d * d + 2 * d * f) + 2 * batch * src_len * src_len * d
    per_dec_layer = (
        dec_tok * (4 * d * d + 2 * d * f_dec)
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
