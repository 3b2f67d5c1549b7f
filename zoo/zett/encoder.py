"""The hypernetwork's transformer encoder over each token's <= max_len pieces, as large matmuls.

Most tokens of a vocabulary are one to three source pieces, so most of the [V, max_len] slots
are padding, and a [V, max_len, H] encoder spends most of its time on them. Here every dense op
(the q/k/v and attention output projections, the FFN, the layer norms) runs
on one flat [P, H] array of pieces, all tokens folded into the matmul's rows; only the
max_len x max_len attention uses the padded [V, max_len] layout, as one batched einsum under
the key mask. Two layouts of the pieces (`Layout`), chosen per call with lax.cond:

- packed: only the real pieces, P = `packed_rows` (fixed, so one compiled shape), rows past
  the real pieces repeat the first piece and are never read back;
- full: every slot, P = V * max_len, when the real pieces do not fit in `packed_rows`.

Both give the same result. The last layer computes only the first piece's state, the one the
heads read: keys and values from all pieces, the query, attention output and FFN for V rows.
The parameter tree is that of a post-LN layer of `zoo.nn.layers` modules (attention/
{query,key,value,out}, attention_layer_norm, ffn/{fc1,fc2}, ffn_layer_norm).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from zoo.nn import layers


class Layout(NamedTuple):
    """Where each (token, slot) lives in the flat piece array, and back.

    valid_VxL: real pieces (slot 0 always). slot_VxL: piece row of each slot (padding slots:
    the token's first piece). piece_P: flat slot (v * max_len + j) of each piece row. first_V:
    piece row of each token's first piece. The index arrays are None in the full layout,
    where piece row = flat slot.
    """

    valid_VxL: jax.Array
    slot_VxL: jax.Array | None = None
    piece_P: jax.Array | None = None
    first_V: jax.Array | None = None

    def to_slots(self, a: jax.Array, axis: int = 0) -> jax.Array:
        """Pieces along `axis` [.., P, ..] -> slots along axis, axis + 1 [.., V, max_len, ..]."""
        if self.slot_VxL is None:
            return a.reshape(a.shape[:axis] + self.valid_VxL.shape + a.shape[axis + 1 :])
        return jnp.take(a, self.slot_VxL, axis=axis)

    def to_pieces(self, a: jax.Array, axis: int = 0) -> jax.Array:
        """Slots along axis, axis + 1 [.., V, max_len, ..] -> pieces along axis [.., P, ..]."""
        flat = a.reshape(a.shape[:axis] + (-1,) + a.shape[axis + 2 :])
        return flat if self.piece_P is None else jnp.take(flat, self.piece_P, axis=axis)

    def first(self, a_PxF: jax.Array) -> jax.Array:
        """[P, F] -> [V, F], each token's first piece."""
        if self.first_V is None:
            return a_PxF.reshape(self.valid_VxL.shape + (-1,))[:, 0]
        return jnp.take(a_PxF, self.first_V, axis=0)


def full_layout(valid_VxL: jax.Array) -> Layout:
    return Layout(valid_VxL)


def packed_layout(valid_VxL: jax.Array, rows: int) -> Layout:
    """The real pieces in order (a token's pieces stay contiguous) in `rows` rows; pieces past
    `rows` are dropped, so the caller checks valid_VxL.sum() <= rows."""
    V, L = valid_VxL.shape
    flat = valid_VxL.reshape(-1)
    row = jnp.cumsum(flat) - 1  # piece row of each real slot
    slot_VxL = jnp.where(valid_VxL, row.reshape(V, L), row.reshape(V, L)[:, :1])
    # Slots of real pieces scattered to their rows; spare rows read flat slot 0 (a real piece).
    piece_P = (
        jnp.zeros((rows,), jnp.int32)
        .at[jnp.where(flat, row, rows)]
        .set(jnp.arange(V * L, dtype=jnp.int32), mode="drop")
    )
    return Layout(valid_VxL, slot_VxL.astype(jnp.int32), piece_P, slot_VxL[:, 0].astype(jnp.int32))


class _HeadsParams(nn.Module):
    """Declares a q/k/v projection's parameters as `nn.DenseGeneral((heads, head_dim))`."""

    embed: int
    heads: int
    head_dim: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param(
            "kernel",
            layers.logical(layers.default_kernel_init, ("embed", "heads", "kv")),
            (self.embed, self.heads, self.head_dim),
            jnp.float32,
        )
        bias = self.param(
            "bias",
            layers.logical(nn.initializers.zeros_init(), ("heads", "kv")),
            (self.heads, self.head_dim),
            jnp.float32,
        )
        return kernel.reshape(self.embed, -1), bias.reshape(-1)


class _OutParams(nn.Module):
    """Declares the attention output projection's parameters as `layers._HeadsToEmbed`."""

    embed: int
    heads: int
    head_dim: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param(
            "kernel",
            layers.logical(layers.default_kernel_init, ("heads", "kv", "embed")),
            (self.heads, self.head_dim, self.embed),
            jnp.float32,
        )
        bias = self.param(
            "bias",
            layers.logical(nn.initializers.zeros_init(), ("embed",)),
            (self.embed,),
            jnp.float32,
        )
        return kernel.reshape(-1, self.embed), bias


class _AttentionParams(nn.Module):
    """The parameters of `layers.MultiHeadAttention` (query, key, value, out), unapplied."""

    embed: int
    heads: int
    head_dim: int

    @nn.compact
    def __call__(self) -> dict[str, tuple[jax.Array, jax.Array]]:
        dims = (self.embed, self.heads, self.head_dim)
        out = {name: _HeadsParams(*dims, name=name)() for name in ("query", "key", "value")}
        out["out"] = _OutParams(*dims, name="out")()
        return out


class _FeedForward(nn.Module):
    """fc1 -> exact GELU -> fc2 on any [..., H] (the parameters of `layers.FeedForward`)."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = layers.Dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name="fc1")(x)
        h = layers.ACTIVATIONS["gelu"](h)
        return layers.Dense(x.shape[-1], ("mlp", "embed"), dtype=self.dtype, name="fc2")(h)


def _attend(q_VxQxH, k_VxLxH, v_VxLxH, valid_VxL, heads: int, dtype) -> jax.Array:
    """Softmax attention of each token's queries over its own pieces: [V, Q, H].

    The heads are stacked along the queries, each query zeroed outside its head's columns, so
    both contractions are plain batched matmuls over V ([V, heads * Q, H] x [V, L, H]) that
    need no transpose to heads-major; the extra products (x heads) are on L = 7 keys.
    """
    V, Q, H = q_VxQxH.shape
    head_NxH = (jnp.arange(H)[None, :] // (H // heads) == jnp.arange(heads)[:, None]).astype(dtype)
    q_VxNQxH = (q_VxQxH[:, None] * head_NxH[None, :, None, :]).reshape(V, heads * Q, H)
    logits = jnp.einsum("vqd,vkd->vqk", q_VxNQxH, k_VxLxH).astype(jnp.float32)
    # The most negative finite value, not -inf, as layers.MultiHeadAttention.
    logits = jnp.where(valid_VxL[:, None, :], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    out_VxNxQxH = jnp.einsum("vqk,vkd->vqd", probs, v_VxLxH).reshape(V, heads, Q, H)
    return (out_VxNxQxH * head_NxH[None, :, None, :]).sum(1)


class EncoderLayer(nn.Module):
    """Post-LN (RoBERTa) layer: x = LN(x + attn(x)); x = LN(x + ffn(x)), on flat pieces.

    `__call__(x_PxH, layout)` -> [P, H]; with first_only=True -> [V, H], the first piece of
    each token (what the last layer needs).
    """

    hidden: int
    heads: int
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_PxH: jax.Array, layout: Layout, first_only: bool = False) -> jax.Array:
        dt, H, heads = jnp.dtype(self.dtype), self.hidden, self.heads
        head_dim = H // heads
        p = _AttentionParams(H, heads, head_dim, name="attention")()
        x_PxH = x_PxH.astype(dt)

        def project(name, x):
            kernel, bias = p[name]
            return jnp.dot(x, kernel.astype(dt)) + bias.astype(dt)

        k = layout.to_slots(project("key", x_PxH))  # [V, max_len, H]
        v = layout.to_slots(project("value", x_PxH))
        if first_only:
            x_PxH = layout.first(x_PxH)  # [V, H] from here on
            q = project("query", x_PxH)[:, None] * head_dim**-0.5
            attn = _attend(q, k, v, layout.valid_VxL, heads, dt)[:, 0]
        else:
            q = layout.to_slots(project("query", x_PxH)) * head_dim**-0.5
            attn = layout.to_pieces(_attend(q, k, v, layout.valid_VxL, heads, dt))
        out_kernel, out_bias = p["out"]
        attn = jnp.dot(attn, out_kernel.astype(dt)) + out_bias.astype(dt)
        x_PxH = layers.LayerNorm(1e-5, dt, name="attention_layer_norm")(x_PxH + attn)
        ffn = _FeedForward(self.mlp_dim, dt, name="ffn")
        return layers.LayerNorm(1e-5, dt, name="ffn_layer_norm")(x_PxH + ffn(x_PxH))
