"""Decoder-only LMs (Llama / Mistral / Qwen2) as transformers 4.57 computes them, in linen.

One architecture, Llama's (Touvron et al. 2023): pre-RMSNorm blocks, rotary positions (Su et
al. 2021) with transformers' scaling variants, grouped-query attention (Ainslie et al. 2023),
SwiGLU MLP (Shazeer 2020). Mistral adds a sliding attention window, Qwen2 q/k/v biases.

Public face:
  LMConfig (to_dict / from_dict / validate), LM (the module), count_flops, and for cached
  decoding the pure functions `init_cache` / `prefill` / `decode_step` (zoo.decode's
  searches call decode_step).

    logits = model.apply({"params": p}, input_ids, attention_mask)   # [B, L, vocab] f32
    last_BxV, cache = prefill(model, p, input_ids, attention_mask, max_length)
    logits_BxV, cache = decode_step(model, p, cache, token_ids_B)

Parameter tree: embed_tokens/embedding [vocab, hidden]; layers_{i}/{input_layernorm/scale,
self_attn/{q,k,v}_proj/kernel [hidden, heads, head_dim] (+ bias [heads, head_dim]),
self_attn/o_proj/kernel [heads, head_dim, hidden], post_attention_layernorm/scale,
mlp/{gate,up}_proj/kernel [hidden, mlp], mlp/down_proj/kernel [mlp, hidden]}; norm/scale;
lm_head/kernel [hidden, vocab] unless tie_word_embeddings (zoo.lm.convert maps transformers'
names onto these).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from zoo.nn import checks, layers
from zoo.nn.cache import BEAM_SHARED

ROPE_TYPES = ("default", "linear", "llama3")
MODEL_TYPES = ("llama", "mistral", "qwen2")


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Field names follow transformers' LlamaConfig where they exist (num_layers =
    num_hidden_layers, num_heads = num_attention_heads, num_kv_heads = num_key_value_heads)."""

    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None  # None: num_heads (multi-head); fewer: grouped-query
    head_dim: int | None = None  # None: hidden_size // num_heads
    intermediate_size: int = 172  # SwiGLU hidden width
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # None, {"rope_type": "linear", "factor": f} or {"rope_type": "llama3", "factor",
    # "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"} (transformers').
    rope_scaling: dict | None = None
    max_position_embeddings: int = 2048  # informational: rotary positions have no table
    attention_bias: bool = False  # biases on q/k/v (Qwen2; Llama's attention_bias sets both)
    attention_out_bias: bool = False  # bias on o_proj (Llama attention_bias=True only)
    tie_word_embeddings: bool = False  # logits from embed_tokens (no lm_head parameter)
    # Mistral: a query at slot i sees keys at slots j with i - window < j <= i (slots are
    # sequence indices, pads included, as transformers' sliding_window_overlay).
    sliding_window: int | None = None
    model_type: str = "llama"  # "llama" | "mistral" | "qwen2": the export's architecture
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    dtype: str = "float32"  # compute dtype; parameters always stay float32
    remat: str = "none"  # "none" | "full" | a jax.checkpoint_policies name (training)

    def __hash__(self) -> int:  # rope_scaling is a dict; linen hashes module attributes
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def validate(self) -> None:
        """Every field in a real model's range (a config from a file may ask for anything)."""
        checks.int_in("model.vocab_size", self.vocab_size, 1, checks.MAX_VOCAB)
        for field in ("hidden_size", "intermediate_size"):
            checks.int_in(f"model.{field}", getattr(self, field), 1, checks.MAX_WIDTH)
        checks.int_in("model.num_layers", self.num_layers, 0, checks.MAX_LAYERS)
        checks.int_in("model.num_heads", self.num_heads, 1, checks.MAX_HEADS)
        if self.num_kv_heads is not None:
            checks.int_in("model.num_kv_heads", self.num_kv_heads, 1, checks.MAX_HEADS)
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"model.num_heads={self.num_heads} is not a multiple of model.num_kv_heads="
                f"{self.kv_heads}; each key/value head serves a whole group of query heads"
            )
        if self.head_dim is not None:
            checks.int_in("model.head_dim", self.head_dim, 2, checks.MAX_WIDTH)
        elif self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads="
                f"{self.num_heads}; set model.head_dim explicitly or pick a divisor"
            )
        if self.head_size % 2:
            raise ValueError(f"head size {self.head_size} is odd; rotary positions need it even")
        checks.positive("model.rms_norm_eps", self.rms_norm_eps, 1.0)
        checks.positive("model.rope_theta", self.rope_theta)
        checks.int_in(
            "model.max_position_embeddings", self.max_position_embeddings, 1, checks.MAX_LENGTH
        )
        _validate_rope_scaling(self.rope_scaling)
        if self.sliding_window is not None:
            checks.int_in("model.sliding_window", self.sliding_window, 1, checks.MAX_LENGTH)
        for field in ("attention_bias", "attention_out_bias", "tie_word_embeddings"):
            if type(getattr(self, field)) is not bool:
                raise ValueError(f"model.{field}={getattr(self, field)!r} must be true or false")
        for field in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self, field) is not None:
                checks.int_in(f"model.{field}", getattr(self, field), 0, self.vocab_size - 1)
        checks.one_of("model.model_type", self.model_type, MODEL_TYPES)
        checks.one_of("model.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        if self.remat not in ("none", "full") and not hasattr(jax.checkpoint_policies, self.remat):
            raise ValueError(
                f"model.remat={self.remat!r} is not 'none', 'full' or a "
                "jax.checkpoint_policies name (e.g. 'dots_saveable')"
            )

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-serialisable (for model.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LMConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown LMConfig fields {unknown}; known fields: {sorted(known)}")
        config = cls(**d)
        config.validate()
        return config


_ROPE_KEYS = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


def _validate_rope_scaling(rope_scaling: dict | None) -> None:
    if rope_scaling is None:
        return
    if not isinstance(rope_scaling, dict):
        raise ValueError(f"model.rope_scaling={rope_scaling!r} must be null or a dict")
    kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if kind not in ROPE_TYPES:
        raise ValueError(
            f"model.rope_scaling rope_type={kind!r} is not supported; use one of {ROPE_TYPES}"
        )
    for key in _ROPE_KEYS[kind]:
        if key not in rope_scaling:
            raise ValueError(f"model.rope_scaling of rope_type {kind!r} lacks {key!r}")
        checks.positive(f"model.rope_scaling.{key}", rope_scaling[key])
    if kind == "llama3" and rope_scaling["high_freq_factor"] <= rope_scaling["low_freq_factor"]:
        raise ValueError("model.rope_scaling: llama3 needs high_freq_factor > low_freq_factor")


def rope_inv_freq(config: LMConfig) -> np.ndarray:
    """[head_size // 2] float32 inverse frequencies, computed in float32 as transformers'
    ROPE_INIT_FUNCTIONS ("default", "linear", "llama3") do; the attention factor is 1."""
    dim = config.head_size
    base = np.float32(config.rope_theta)
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / (base**exponent)).astype(np.float32)
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        return (inv_freq / np.float32(scaling["factor"])).astype(np.float32)
    if kind == "llama3":
        factor = np.float32(scaling["factor"])
        low, high = np.float32(scaling["low_freq_factor"]), np.float32(scaling["high_freq_factor"])
        old_len = np.float32(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old_len / low, old_len / high
        wavelen = np.float32(2 * math.pi) / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)
    return inv_freq


def rotary(positions_BxL: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, L, head_size] f32 of transformers' rotary embedding (halves, not pairs)."""
    freqs_BxLxK2 = positions_BxL[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)
    emb_BxLxK = jnp.concatenate([freqs_BxLxK2, freqs_BxLxK2], axis=-1)
    return jnp.cos(emb_BxLxK), jnp.sin(emb_BxLxK)


def apply_rotary(x_BxLxHxK: jax.Array, cos_BxLxK: jax.Array, sin_BxLxK: jax.Array) -> jax.Array:
    half = x_BxLxHxK.shape[-1] // 2
    rotated = jnp.concatenate([-x_BxLxHxK[..., half:], x_BxLxHxK[..., :half]], axis=-1)
    cos, sin = (t[:, :, None, :].astype(x_BxLxHxK.dtype) for t in (cos_BxLxK, sin_BxLxK))
    return x_BxLxHxK * cos + rotated * sin


class RMSNorm(nn.Module):
    """x / rms(x) * scale over `embed`, statistics in f32 (transformers' LlamaRMSNorm)."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        scale = self.param(
            "scale", layers.logical(nn.initializers.ones_init(), ("embed",)),
            (x_BxLxD.shape[-1],), jnp.float32,
        )  # fmt: skip
        x32 = x_BxLxD.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + self.epsilon)
        return (scale * x32.astype(self.dtype)).astype(self.dtype)


class HeadsProjection(nn.Module):
    """[B, L, D] -> [B, L, heads, head_dim]: kernel [D, heads, head_dim], optional bias."""

    heads: int
    head_dim: int
    use_bias: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", layers.logical(layers.default_kernel_init, ("embed", "heads", "kv")),
            (x_BxLxD.shape[-1], self.heads, self.head_dim), jnp.float32,
        )  # fmt: skip
        y = jnp.einsum("bld,dhk->blhk", x_BxLxD.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param(
                "bias", layers.logical(nn.initializers.zeros_init(), ("heads", "kv")),
                (self.heads, self.head_dim), jnp.float32,
            )  # fmt: skip
            y = y + bias.astype(self.dtype)
        return y


class HeadsOutput(nn.Module):
    """[B, L, heads, head_dim] -> [B, L, features]: kernel [heads, head_dim, D], optional bias."""

    features: int
    use_bias: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxHxK: jax.Array) -> jax.Array:
        heads, head_dim = x_BxLxHxK.shape[-2:]
        kernel = self.param(
            "kernel", layers.logical(layers.default_kernel_init, ("heads", "kv", "embed")),
            (heads, head_dim, self.features), jnp.float32,
        )  # fmt: skip
        y = jnp.einsum("blhk,hkd->bld", x_BxLxHxK.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param(
                "bias", layers.logical(nn.initializers.zeros_init(), ("embed",)),
                (self.features,), jnp.float32,
            )  # fmt: skip
            y = y + bias.astype(self.dtype)
        return y


class Attention(nn.Module):
    """Grouped-query self-attention: query head h reads key/value head h // (heads / kv_heads)
    (transformers' repeat_kv). Masked scores get f32's most negative value, not -inf."""

    config: LMConfig

    def setup(self):
        c = self.config
        dt = jnp.dtype(c.dtype)
        self.q_proj = HeadsProjection(c.num_heads, c.head_size, c.attention_bias, dt)
        self.k_proj = HeadsProjection(c.kv_heads, c.head_size, c.attention_bias, dt)
        self.v_proj = HeadsProjection(c.kv_heads, c.head_size, c.attention_bias, dt)
        self.o_proj = HeadsOutput(c.hidden_size, c.attention_out_bias, dt)

    def qkv(self, x_BxLxD, cos_BxLxK, sin_BxLxK):
        """Rotated queries [B, L, heads, K] and keys, values [B, L, kv_heads, K]."""
        q_BxLxHxK = apply_rotary(self.q_proj(x_BxLxD), cos_BxLxK, sin_BxLxK)
        k_BxLxGxK = apply_rotary(self.k_proj(x_BxLxD), cos_BxLxK, sin_BxLxK)
        q_BxLxHxK = layers.constrain(q_BxLxHxK, ("batch", "length", "heads", "kv"))
        return q_BxLxHxK, k_BxLxGxK, self.v_proj(x_BxLxD)

    def attend(self, q_BxLxHxK, k_BxGxSxK, v_BxGxSxK, mask_Bx1xLxS) -> jax.Array:
        """Queries over keys/values stored heads-major [B, kv_heads, S, K] -> [B, L, D]."""
        batch, length, heads, head_dim = q_BxLxHxK.shape
        groups = k_BxGxSxK.shape[1]
        q_BxLxGxRxK = q_BxLxHxK.reshape(batch, length, groups, heads // groups, head_dim)
        scores = jnp.einsum("blgrk,bgsk->bgrls", q_BxLxGxRxK, k_BxGxSxK).astype(jnp.float32)
        scores_BxGxRxLxS = scores * (head_dim**-0.5)
        scores_BxGxRxLxS = jnp.where(
            mask_Bx1xLxS[:, :, None], scores_BxGxRxLxS, jnp.finfo(jnp.float32).min
        )
        probs = jax.nn.softmax(scores_BxGxRxLxS, axis=-1).astype(q_BxLxHxK.dtype)
        out_BxLxGxRxK = jnp.einsum("bgrls,bgsk->blgrk", probs, v_BxGxSxK)
        return self.o_proj(out_BxLxGxRxK.reshape(batch, length, heads, head_dim))

    def __call__(self, x_BxLxD, cos_BxLxK, sin_BxLxK, mask_Bx1xLxL) -> jax.Array:
        q_BxLxHxK, k_BxLxGxK, v_BxLxGxK = self.qkv(x_BxLxD, cos_BxLxK, sin_BxLxK)
        heads_major = lambda t: t.transpose(0, 2, 1, 3)  # noqa: E731
        return self.attend(q_BxLxHxK, heads_major(k_BxLxGxK), heads_major(v_BxLxGxK), mask_Bx1xLxL)


class MLP(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases (SwiGLU, Shazeer 2020)."""

    config: LMConfig

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        c = self.config
        dt = jnp.dtype(c.dtype)
        dense = lambda n, axes, name: layers.Dense(n, axes, use_bias=False, dtype=dt, name=name)  # noqa: E731
        gate_BxLxF = dense(c.intermediate_size, ("embed", "mlp"), "gate_proj")(x_BxLxD)
        up_BxLxF = dense(c.intermediate_size, ("embed", "mlp"), "up_proj")(x_BxLxD)
        h_BxLxF = layers.constrain(nn.silu(gate_BxLxF) * up_BxLxF, ("batch", "length", "mlp"))
        return dense(c.hidden_size, ("mlp", "embed"), "down_proj")(h_BxLxF)


class DecoderLayer(nn.Module):
    """x + attn(norm(x)), then + mlp(norm(.)); `__call__` teacher-forces, `cached` uses a cache."""

    config: LMConfig

    def setup(self):
        c = self.config
        dt = jnp.dtype(c.dtype)
        self.input_layernorm = RMSNorm(c.rms_norm_eps, dt)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.rms_norm_eps, dt)
        self.mlp = MLP(c)

    def _mlp_residual(self, h_BxLxD):
        h_BxLxD = h_BxLxD + self.mlp(self.post_attention_layernorm(h_BxLxD))
        return layers.constrain(h_BxLxD, ("batch", "length", "embed"))

    def __call__(self, x_BxLxD, cos_BxLxK, sin_BxLxK, mask_Bx1xLxL):
        h_BxLxD = x_BxLxD + self.self_attn(
            self.input_layernorm(x_BxLxD), cos_BxLxK, sin_BxLxK, mask_Bx1xLxL
        )
        return self._mlp_residual(h_BxLxD)

    def cached(self, x_BxQxD, layer_cache: dict, index_B, cos_BxQxK, sin_BxQxK, mask_Bx1xQxS):
        """Q new tokens per row written at cache slots index_B .. index_B + Q - 1, attending
        over the whole cache under mask. layer_cache: k/v [B, kv_heads, S, K]."""
        q_BxQxHxK, k_BxQxGxK, v_BxQxGxK = self.self_attn.qkv(
            self.input_layernorm(x_BxQxD), cos_BxQxK, sin_BxQxK
        )
        write = jax.vmap(lambda buf, new, i: jax.lax.dynamic_update_slice(buf, new, (0, i, 0)))
        k_BxGxSxK = write(layer_cache["k"], k_BxQxGxK.transpose(0, 2, 1, 3), index_B)
        v_BxGxSxK = write(layer_cache["v"], v_BxQxGxK.transpose(0, 2, 1, 3), index_B)
        h_BxQxD = x_BxQxD + self.self_attn.attend(q_BxQxHxK, k_BxGxSxK, v_BxGxSxK, mask_Bx1xQxS)
        return self._mlp_residual(h_BxQxD), {"k": k_BxGxSxK, "v": v_BxGxSxK}


def _remat(cls: type[nn.Module], policy: str) -> type[nn.Module]:
    if policy == "none":
        return cls
    if policy == "full":
        return nn.remat(cls)
    return nn.remat(cls, policy=getattr(jax.checkpoint_policies, policy))


def _window(mask, q_slots_BxQ, k_slots_S, window: int | None):
    if window is None:
        return mask
    near_BxQxS = q_slots_BxQ[:, :, None] - k_slots_S[None, None, :] < window
    return mask & near_BxQxS[:, None]


def default_positions(attention_mask_BxL: jax.Array) -> jax.Array:
    """cumsum(mask) - 1 clipped at 0: real tokens count from 0 whatever the padding side."""
    return jnp.maximum(jnp.cumsum(attention_mask_BxL.astype(jnp.int32), axis=1) - 1, 0)


class LM(nn.Module):
    """`LlamaForCausalLM` / `MistralForCausalLM` / `Qwen2ForCausalLM` in linen.

    `model.apply({'params': p}, input_ids [B, L] int, attention_mask=None [B, L] (1 real /
    0 pad), *, positions=None, segment_ids=None, deterministic=True)` -> logits [B, L,
    vocab] f32. positions default to `default_positions(attention_mask)` (left padding as
    transformers' generate); segment_ids (packing, 0 = padding) restrict attention to the
    same segment, causally; pass per-segment positions with them.
    """

    config: LMConfig

    def setup(self):
        c = self.config
        c.validate()
        dt = jnp.dtype(c.dtype)
        self.embed_tokens = layers.Embed(c.vocab_size, c.hidden_size, dt)
        layer_cls = _remat(DecoderLayer, c.remat)
        self.layers = [layer_cls(c) for _ in range(c.num_layers)]
        self.norm = RMSNorm(c.rms_norm_eps, dt)
        if not c.tie_word_embeddings:
            self.lm_head = layers.Dense(c.vocab_size, ("embed", "vocab"), use_bias=False, dtype=dt)
        self.inv_freq = rope_inv_freq(c)

    def _logits(self, h_BxLxD) -> jax.Array:
        h_BxLxD = self.norm(h_BxLxD)
        if self.config.tie_word_embeddings:
            logits = self.embed_tokens.attend(h_BxLxD)
        else:
            logits = self.lm_head(h_BxLxD)
        return layers.constrain(logits.astype(jnp.float32), ("batch", "length", "vocab"))

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        *,
        positions=None,
        segment_ids=None,
        deterministic: bool = True,  # no dropout in these models; kept for the loop's call
    ) -> jax.Array:
        del deterministic
        batch, length = input_ids.shape
        if attention_mask is None:
            attention_mask = (
                jnp.ones((batch, length), bool) if segment_ids is None else segment_ids != 0
            )
        valid_BxL = attention_mask.astype(bool)
        if positions is None:
            positions = default_positions(valid_BxL)
        mask_Bx1xLxL = layers.attention_mask(
            valid_BxL, valid_BxL, causal=True, q_segments_BxQ=segment_ids,
            k_segments_BxK=segment_ids,
        )  # fmt: skip
        slots_L = jnp.arange(length)
        mask_Bx1xLxL = _window(
            mask_Bx1xLxL, jnp.broadcast_to(slots_L, (batch, length)), slots_L,
            self.config.sliding_window,
        )  # fmt: skip
        cos_BxLxK, sin_BxLxK = rotary(positions, self.inv_freq)
        h_BxLxD = layers.constrain(self.embed_tokens(input_ids), ("batch", "length", "embed"))
        for layer in self.layers:
            h_BxLxD = layer(h_BxLxD, cos_BxLxK, sin_BxLxK, mask_Bx1xLxL)
        return self._logits(h_BxLxD)

    # -- cached decoding ---------------------------------------------------------------------

    def _cached(self, cache: dict, ids_BxQ, positions_BxQ):
        index_B = cache["index"]
        q_slots_BxQ = index_B[:, None] + jnp.arange(ids_BxQ.shape[1])
        key_mask_BxS = cache[BEAM_SHARED]["key_mask"]
        k_slots_S = jnp.arange(key_mask_BxS.shape[1])
        mask_BxQxS = (k_slots_S[None, None, :] <= q_slots_BxQ[:, :, None]) & key_mask_BxS[:, None]
        mask_Bx1xQxS = _window(
            mask_BxQxS[:, None], q_slots_BxQ, k_slots_S, self.config.sliding_window
        )
        cos_BxQxK, sin_BxQxK = rotary(positions_BxQ, self.inv_freq)
        h_BxQxD = self.embed_tokens(ids_BxQ)
        new_layers = []
        for layer, layer_cache in zip(self.layers, cache["layers"]):
            h_BxQxD, layer_cache = layer.cached(
                h_BxQxD, layer_cache, index_B, cos_BxQxK, sin_BxQxK, mask_Bx1xQxS
            )
            new_layers.append(layer_cache)
        return self._logits(h_BxQxD), tuple(new_layers)

    def init_cache(self, attention_mask, max_length: int) -> dict:
        """An empty cache of `max_length` slots (static) for a prompt with this mask [B, P]
        whose tokens are still to be fed (P may be 0).

        Cache: `index` [B] int32 (next slot), `position` [B] int32 (next position id = real
        tokens fed so far), `layers`: per layer k/v [B, kv_heads, max_length, head_size], and
        under BEAM_SHARED `key_mask` [B, max_length] bool (False at the prompt's pads).
        """
        c = self.config
        batch, prompt_len = attention_mask.shape
        if max_length < prompt_len:
            raise ValueError(
                f"cache max_length={max_length} is shorter than the prompt ({prompt_len} "
                "tokens); size it for prompt + new tokens"
            )
        zeros = jnp.zeros((batch, c.kv_heads, max_length, c.head_size), jnp.dtype(c.dtype))
        pad = jnp.ones((batch, max_length - prompt_len), bool)
        return {
            "index": jnp.zeros((batch,), jnp.int32),
            "position": jnp.zeros((batch,), jnp.int32),
            "layers": tuple({"k": zeros, "v": zeros} for _ in range(c.num_layers)),
            BEAM_SHARED: {"key_mask": jnp.concatenate([attention_mask.astype(bool), pad], 1)},
        }

    def prefill(self, input_ids, attention_mask, max_length: int) -> tuple[jax.Array, dict]:
        """Runs the prompt into a fresh cache (`init_cache`) of `max_length` slots (static).

        input_ids, attention_mask: [B, P], P >= 1 (left padding as transformers' generate;
        right padding works too). Returns (logits [B, vocab] f32 at each row's last real
        token, cache with index P and position = real tokens per row).
        """
        prompt_len = input_ids.shape[1]
        valid_BxP = attention_mask.astype(bool)
        cache = self.init_cache(valid_BxP, max_length)
        logits_BxPxV, new_layers = self._cached(cache, input_ids, default_positions(valid_BxP))
        last_B = jnp.max(jnp.where(valid_BxP, jnp.arange(prompt_len), 0), axis=1)
        logits_BxV = jnp.take_along_axis(logits_BxPxV, last_B[:, None, None], axis=1)[:, 0]
        return logits_BxV, {
            **cache, "index": cache["index"] + prompt_len,
            "position": jnp.sum(valid_BxP, axis=1, dtype=jnp.int32), "layers": new_layers,
        }  # fmt: skip

    def decode_step(self, cache: dict, token_ids_B) -> tuple[jax.Array, dict]:
        """Feeds token_ids_B [B] at each row's next slot -> (logits [B, vocab] f32, cache).

        Equals teacher forcing on the same sequence. A row stepped past max_length is not
        checked (jit): the slot write clamps; size the cache for the longest output.
        """
        logits_Bx1xV, new_layers = self._cached(
            cache, token_ids_B[:, None], cache["position"][:, None]
        )
        new_cache = {
            **cache, "index": cache["index"] + 1, "position": cache["position"] + 1,
            "layers": new_layers,
        }  # fmt: skip
        return logits_Bx1xV[:, 0], new_cache


# Cached decoding: pure functions over (model, params); zoo.decode's searches call them.


def prefill(model: LM, params: Any, input_ids, attention_mask, max_length: int):
    """`LM.prefill` through apply: (logits [B, vocab] f32, cache)."""
    return model.apply(
        {"params": params}, input_ids, attention_mask, max_length, method=model.prefill
    )


def init_cache(model: LM, params: Any, attention_mask, max_length: int) -> dict:
    """`LM.init_cache` through apply: an empty cache for a prompt still to be fed."""
    return model.apply({"params": params}, attention_mask, max_length, method=model.init_cache)


def decode_step(model: LM, params: Any, cache: dict, token_ids_B):
    """`LM.decode_step` through apply: (logits [B, vocab] f32, cache)."""
    return model.apply({"params": params}, cache, token_ids_B, method=model.decode_step)


def count_params(config: LMConfig) -> int:
    """Parameters of the model (embedding and lm_head included)."""
    d, f, v, k = config.hidden_size, config.intermediate_size, config.vocab_size, config.head_size
    h, g = config.num_heads, config.kv_heads
    per_layer = d * h * k + 2 * d * g * k + h * k * d + 3 * d * f + 2 * d
    if config.attention_bias:
        per_layer += h * k + 2 * g * k
    if config.attention_out_bias:
        per_layer += d
    head = 0 if config.tie_word_embeddings else d * v
    return config.num_layers * per_layer + v * d + head + d


def count_flops(config: LMConfig, batch: int, length: int) -> float:
    """Model FLOPs of one training step on [batch, length] tokens (forward + backward).

    6 * N * tokens over the matmul parameters N (every layer's projections and the output
    projection, tied or not; not the embedding lookup, norms or biases), plus attention
    scores and values, 3 * 4 * B * L^2 * heads * head_size per layer (full square, as the
    core's count_flops; no causal halving, no remat recomputation).
    """
    d, f, v, k = config.hidden_size, config.intermediate_size, config.vocab_size, config.head_size
    h, g = config.num_heads, config.kv_heads
    matmul_params = config.num_layers * (2 * d * h * k + 2 * d * g * k + 3 * d * f) + d * v
    tokens = batch * length
    attention = config.num_layers * 4 * batch * length * length * h * k
    return 6.0 * matmul_params * tokens + 3.0 * attention
