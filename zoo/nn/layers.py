"""Shared linen layers. Every parameter carries logical axis names.

Logical names used here (mapped to mesh axes by one table in `zoo.train.mesh`):
`batch`, `length`, `embed`, `heads`, `kv`, `mlp`, `vocab`, `positions`.
Nothing here knows about tasks, losses or training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any
Initializer = Callable[..., jax.Array]

default_kernel_init = nn.initializers.normal(stddev=0.02)


def logical(init: Initializer, names: Sequence[str | None]) -> Initializer:
    """Wraps an initializer so the parameter is boxed with logical axis names."""
    return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Activation sharding hint by logical names; a no-op outside a rules context."""
    return nn.with_logical_constraint(x, tuple(names))


class Dense(nn.Module):
    """x @ kernel + bias over the last axis, with named axes.

    `axes` names (in_axis, out_axis) of the kernel; the bias takes the out axis.
    """

    features: int
    axes: tuple[str | None, str | None]
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    kernel_init: Initializer = default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            logical(self.kernel_init, self.axes),
            (x.shape[-1], self.features),
            jnp.float32,
        )
        y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param(
                "bias",
                logical(nn.initializers.zeros_init(), (self.axes[1],)),
                (self.features,),
                jnp.float32,
            )
            y = y + bias.astype(self.dtype)
        return y


@jax.custom_vjp
def layer_norm(x, scale, bias, epsilon: float):
    """(x - mean) / sqrt(var + eps) * scale + bias over the last axis, f32, with a hand-written
    backward (dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * scale)."""
    mean = x.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.square(x - mean).mean(-1, keepdims=True) + epsilon)
    return (x - mean) * rstd * scale + bias


def _layer_norm_fwd(x, scale, bias, epsilon):
    mean = x.mean(-1, keepdims=True)
    rstd = jax.lax.rsqrt(jnp.square(x - mean).mean(-1, keepdims=True) + epsilon)
    xhat = (x - mean) * rstd
    return xhat * scale + bias, (xhat, rstd, scale)


def _layer_norm_bwd(res, dy):
    xhat, rstd, scale = res
    g = dy * scale
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    axes = tuple(range(dy.ndim - 1))
    return dx, (dy * xhat).sum(axes), dy.sum(axes), None


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)

# "custom_vjp" (`layer_norm`'s hand-written backward) or "autodiff" (jax.grad of the same
# formula). The custom backward made the mBART train step 1.26x faster on XLA:CPU
# (benchmarks/train_step_variants.py, BENCHMARKS.md): autodiff's backward re-derives the
# statistics inside every consumer's fusion. The switch stays for that benchmark.
LAYER_NORM_GRAD = "custom_vjp"


class LayerNorm(nn.Module):
    """LayerNorm over `embed`. eps defaults to 1e-5 (torch/fairseq), not flax's 1e-6."""

    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param(
            "scale", logical(nn.initializers.ones_init(), ("embed",)), (d,), jnp.float32
        )
        bias = self.param(
            "bias", logical(nn.initializers.zeros_init(), ("embed",)), (d,), jnp.float32
        )
        # Statistics in f32 even under bf16 compute: bf16 variance loses too much.
        x32 = x.astype(jnp.float32)
        if LAYER_NORM_GRAD == "custom_vjp":
            return layer_norm(x32, scale, bias, self.epsilon).astype(self.dtype)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
        return y.astype(self.dtype)


class Embed(nn.Module):
    """Token embedding table [vocab, embed]; `attend` gives tied output logits."""

    num_embeddings: int
    features: int
    dtype: Dtype = jnp.float32
    embedding_init: Initializer = default_kernel_init

    def setup(self):
        self.embedding = self.param(
            "embedding",
            logical(self.embedding_init, ("vocab", "embed")),
            (self.num_embeddings, self.features),
            jnp.float32,
        )

    def __call__(self, ids_BxL: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, ids_BxL, axis=0).astype(self.dtype)

    def attend(self, x_BxLxD: jax.Array) -> jax.Array:
        return jnp.einsum(
            "bld,vd->blv", x_BxLxD.astype(self.dtype), self.embedding.astype(self.dtype)
        )


class LearnedPositions(nn.Module):
    """Learned position table; row = position + offset (mBART uses offset 2)."""

    num_positions: int
    features: int
    offset: int = 0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, positions_BxL: jax.Array) -> jax.Array:
        table = self.param(
            "embedding",
            logical(default_kernel_init, ("positions", "embed")),
            (self.num_positions + self.offset, self.features),
            jnp.float32,
        )
        return jnp.take(table, positions_BxL + self.offset, axis=0).astype(self.dtype)


def sinusoidal_positions(
    positions_BxL: jax.Array, features: int, max_timescale: float = 1e4
) -> jax.Array:
    """Fixed sin/cos position features (Vaswani et al. 2017, sec. 3.5): [B, L, features] f32."""
    half = features // 2
    inv = np.exp(-np.log(max_timescale) * np.arange(half) / max(half - 1, 1))
    angles = positions_BxL[..., None].astype(jnp.float32) * inv
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def attention_mask(
    q_valid_BxQ: jax.Array,
    k_valid_BxK: jax.Array,
    *,
    causal: bool = False,
    q_segments_BxQ: jax.Array | None = None,
    k_segments_BxK: jax.Array | None = None,
) -> jax.Array:
    """Boolean mask [B, 1, Q, K]: True where a query may attend to a key.

    Segment ids (packing) restrict attention to the same packed example.
    """
    mask = q_valid_BxQ[:, :, None] & k_valid_BxK[:, None, :]
    if causal:
        q_len, k_len = q_valid_BxQ.shape[1], k_valid_BxK.shape[1]
        mask = mask & jnp.tril(jnp.ones((q_len, k_len), bool))[None]
    if q_segments_BxQ is not None:
        mask = mask & (q_segments_BxQ[:, :, None] == k_segments_BxK[:, None, :])
    return mask[:, None]


class _HeadsToEmbed(nn.Module):
    """Output projection [B, Q, H, K] -> [B, Q, D]; D comes from the caller at call time.

    Parameter layout equals `nn.DenseGeneral(D, axis=(-2, -1))`: kernel [H, K, D], bias [D].
    """

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxQxHxK: jax.Array, features: int) -> jax.Array:
        heads, head_dim = x_BxQxHxK.shape[-2:]
        kernel = self.param(
            "kernel",
            logical(default_kernel_init, ("heads", "kv", "embed")),
            (heads, head_dim, features),
            jnp.float32,
        )
        bias = self.param(
            "bias", logical(nn.initializers.zeros_init(), ("embed",)), (features,), jnp.float32
        )
        y = jnp.einsum("bqhk,hkd->bqd", x_BxQxHxK.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


# "einsum" (default): scores, mask, softmax and mix written out; "dot_product_attention":
# jax.nn.dot_product_attention where no dropout falls on the probabilities. Measured on
# XLA:CPU by benchmarks/train_step_variants.py (BENCHMARKS.md); einsum is kept.
ATTENTION = "einsum"


class MultiHeadAttention(nn.Module):
    """Multi-head attention with biases on q/k/v/out (as BART/mBART).

    q is scaled by head_dim**-0.5 after its projection. Masked logits get the
    dtype's most negative finite value, not -inf, so a fully masked row (a pad
    query) gives uniform weights rather than NaN.

    Besides `__call__`, `project_kv` and `attend` expose the two halves so that
    incremental decoding can keep keys/values in a cache (self-attention) or
    compute them once per source (cross-attention).
    """

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    def setup(self):
        def proj():
            return nn.DenseGeneral(
                (self.num_heads, self.head_dim),
                dtype=self.dtype,
                param_dtype=jnp.float32,
                kernel_init=logical(default_kernel_init, ("embed", "heads", "kv")),
                bias_init=logical(nn.initializers.zeros_init(), ("heads", "kv")),
            )

        self.query, self.key, self.value = proj(), proj(), proj()
        self.out = _HeadsToEmbed(self.dtype)
        self.probs_dropout = nn.Dropout(self.dropout_rate)

    def project_kv(self, kv_BxKxD: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values, each [B, K, heads, head_dim] in the compute dtype."""
        return self.key(kv_BxKxD), self.value(kv_BxKxD)

    def attend(
        self,
        x_BxQxD: jax.Array,
        k_BxKxHxK: jax.Array,
        v_BxKxHxK: jax.Array,
        mask_Bx1xQxK: jax.Array | None,
        deterministic: bool = True,
    ) -> jax.Array:
        """Queries from x attend over given keys/values: [B, Q, D]."""
        q_BxQxHxK = self.query(x_BxQxD) * (self.head_dim**-0.5)
        q_BxQxHxK = constrain(q_BxQxHxK, ("batch", "length", "heads", "kv"))
        dropping = self.dropout_rate > 0.0 and not deterministic
        if ATTENTION == "dot_product_attention" and not dropping:
            # Benchmark switch (benchmarks/train_step_variants.py): jax's fused attention;
            # the q scale is already applied, so scale=1.
            out_BxQxHxK = jax.nn.dot_product_attention(
                q_BxQxHxK, k_BxKxHxK, v_BxKxHxK, mask=mask_Bx1xQxK, scale=1.0
            )
            return self.out(out_BxQxHxK, x_BxQxD.shape[-1])
        logits_BxHxQxK = jnp.einsum("bqhd,bkhd->bhqk", q_BxQxHxK, k_BxKxHxK).astype(jnp.float32)
        if mask_Bx1xQxK is not None:
            logits_BxHxQxK = jnp.where(mask_Bx1xQxK, logits_BxHxQxK, jnp.finfo(jnp.float32).min)
        probs_BxHxQxK = jax.nn.softmax(logits_BxHxQxK, axis=-1).astype(self.dtype)
        if dropping:
            probs_BxHxQxK = self.probs_dropout(probs_BxHxQxK, deterministic=False)
        out_BxQxHxK = jnp.einsum("bhqk,bkhd->bqhd", probs_BxHxQxK, v_BxKxHxK)
        return self.out(out_BxQxHxK, x_BxQxD.shape[-1])

    def attend_heads_major(
        self,
        x_BxQxD: jax.Array,
        k_BxHxKxD: jax.Array,
        v_BxHxKxD: jax.Array,
        mask_Bx1xQxK: jax.Array | None,
    ) -> jax.Array:
        """`attend` (deterministic) over keys/values stored heads-major [B, heads, K, head_dim].

        Decoding caches use this layout: the score and mix contractions then take their
        operands as stored, where the [B, K, heads, head_dim] layout costs a transpose of the
        whole cache at every step.
        """
        q_BxQxHxK = self.query(x_BxQxD) * (self.head_dim**-0.5)
        logits_BxHxQxK = jnp.einsum("bqhd,bhkd->bhqk", q_BxQxHxK, k_BxHxKxD).astype(jnp.float32)
        if mask_Bx1xQxK is not None:
            logits_BxHxQxK = jnp.where(mask_Bx1xQxK, logits_BxHxQxK, jnp.finfo(jnp.float32).min)
        probs_BxHxQxK = jax.nn.softmax(logits_BxHxQxK, axis=-1).astype(self.dtype)
        out_BxQxHxK = jnp.einsum("bhqk,bhkd->bqhd", probs_BxHxQxK, v_BxHxKxD)
        return self.out(out_BxQxHxK, x_BxQxD.shape[-1])

    def __call__(
        self,
        x_BxQxD: jax.Array,
        kv_BxKxD: jax.Array,
        mask_Bx1xQxK: jax.Array | None,
        deterministic: bool = True,
    ) -> jax.Array:
        k_BxKxHxK, v_BxKxHxK = self.project_kv(kv_BxKxD)
        return self.attend(x_BxQxD, k_BxKxHxK, v_BxKxHxK, mask_Bx1xQxK, deterministic)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    # Exact erf GELU (torch's default and mBART's); flax's nn.gelu defaults to tanh.
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
}


class FeedForward(nn.Module):
    """fc1 -> activation -> dropout -> fc2."""

    mlp_dim: int
    activation: str = "gelu"
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BxLxD: jax.Array, deterministic: bool = True) -> jax.Array:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={self.activation!r} is unknown; use one of {sorted(ACTIVATIONS)}"
            )
        h_BxLxF = Dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name="fc1")(x_BxLxD)
        h_BxLxF = ACTIVATIONS[self.activation](h_BxLxF)
        h_BxLxF = constrain(h_BxLxF, ("batch", "length", "mlp"))
        h_BxLxF = nn.Dropout(self.dropout_rate)(h_BxLxF, deterministic=deterministic)
        return Dense(x_BxLxD.shape[-1], ("mlp", "embed"), dtype=self.dtype, name="fc2")(h_BxLxF)
