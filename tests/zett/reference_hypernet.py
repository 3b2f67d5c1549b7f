"""The hypernetwork as it was before the packed encoder (zoo commit 591f8a1), kept verbatim
as the reference the new one must equal: a [V, max_len, H] post-LN encoder of
zoo.nn.layers modules over every slot, padding included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from zoo.nn import layers
from zoo.zett.hypernet import HypernetConfig, ProjectorBlock, Scaler


class EncoderLayer(nn.Module):
    """Post-LN (RoBERTa) layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    config: HypernetConfig

    @nn.compact
    def __call__(self, x_VxLxH: jax.Array, mask_Vx1xLxL: jax.Array) -> jax.Array:
        c = self.config
        dt = jnp.dtype(c.dtype)
        attn = layers.MultiHeadAttention(c.heads, c.hidden // c.heads, 0.0, dt, name="attention")
        x_VxLxH = layers.LayerNorm(1e-5, dt, name="attention_layer_norm")(
            x_VxLxH + attn(x_VxLxH, x_VxLxH, mask_Vx1xLxL)
        )
        ffn = layers.FeedForward(c.mlp_dim or 2 * c.hidden, "gelu", 0.0, dt, name="ffn")
        return layers.LayerNorm(1e-5, dt, name="ffn_layer_norm")(x_VxLxH + ffn(x_VxLxH))


class ReferenceHypernet(nn.Module):
    """Predicts embeddings from decompositions.

    `apply({'params': p}, surface_VxL, source_in_SxD, source_out_SxD=None)` ->
    {'in': [V, D], 'out': [V, D] or None, 'bias': [V] or None}, float32.
    surface_VxL: source ids of each token's pieces, right-padded with pad_id (the first
    entry is always a real piece); source_in_SxD (and source_out_SxD for separate_out): the
    frozen base model's matrices, passed at call time and never stored here. Each row of the
    output depends only on its own row of surface_VxL.
    """

    config: HypernetConfig

    def setup(self):
        c = self.config
        c.validate()
        dt = jnp.dtype(c.dtype)
        self.in_scaler = Scaler(c.in_width)
        self.fallback = layers.Embed(c.num_fallback, c.in_width, name="fallback_embeddings")
        self.input_projection = layers.Dense(c.hidden, ("embed", "mlp"), dtype=dt)
        self.input_block = ProjectorBlock(c.hidden, dt)
        self.positions = layers.LearnedPositions(c.max_len, c.hidden, 0, dt, name="positions")
        self.type_embedding = self.param(
            "type_embedding",
            layers.logical(layers.default_kernel_init, ("embed",)),
            (c.hidden,),
            jnp.float32,
        )
        self.embedding_norm = layers.LayerNorm(1e-5, dt)
        self.encoder = [EncoderLayer(c, name=f"layer_{i}") for i in range(c.num_layers)]
        self.output_block = ProjectorBlock(c.hidden, dt)
        self.output_projection = layers.Dense(c.embed_dim, ("mlp", "embed"), dtype=dt)
        self.out_scaler = Scaler(c.embed_dim)
        if c.separate_out:
            self.output_block_out = ProjectorBlock(c.hidden, dt)
            self.output_projection_out = layers.Dense(c.embed_dim, ("mlp", "embed"), dtype=dt)
            self.out_scaler_out = Scaler(c.embed_dim)
        if c.predict_bias:
            self.bias_projection = layers.Dense(1, ("mlp", None), dtype=dt)
            self.bias_scaler = Scaler(1)

    def _pieces(self, surface_VxL, source_in_SxD, source_out_SxD):
        c = self.config
        table = source_in_SxD
        if c.separate_out:
            if source_out_SxD is None:
                raise ValueError("separate_out=True needs the source output embeddings")
            table = jnp.concatenate([source_in_SxD, source_out_SxD], axis=-1)
        if table.shape != (c.source_vocab_size, c.in_width):
            raise ValueError(
                f"source embeddings are {table.shape}, the hypernetwork was built for "
                f"({c.source_vocab_size}, {c.in_width}); pass the base model it was trained for"
            )
        table = self.in_scaler(jax.lax.stop_gradient(table.astype(jnp.float32)))
        is_fallback = surface_VxL >= c.source_vocab_size
        rows = jnp.take(table, jnp.clip(surface_VxL, 0, c.source_vocab_size - 1), axis=0)
        fallback = self.fallback(jnp.clip(surface_VxL - c.source_vocab_size, 0, c.num_fallback - 1))
        return jnp.where(is_fallback[..., None], fallback.astype(rows.dtype), rows)

    def encode(self, surface_VxL, source_in_SxD, source_out_SxD=None) -> jax.Array:
        """Pooled hidden state [V, hidden] (before the heads)."""
        c = self.config
        if surface_VxL.shape[-1] != c.max_len:
            raise ValueError(
                f"decompositions have {surface_VxL.shape[-1]} columns; this hypernetwork "
                f"reads {c.max_len}"
            )
        x = self._pieces(surface_VxL, source_in_SxD, source_out_SxD).astype(jnp.dtype(c.dtype))
        h = self.input_block(self.input_projection(x))
        positions = jnp.broadcast_to(jnp.arange(c.max_len), surface_VxL.shape)
        h = h + self.positions(positions) + self.type_embedding.astype(h.dtype)
        h = self.embedding_norm(h)
        valid_VxL = (jnp.asarray(surface_VxL) != c.pad_id).at[:, 0].set(True)
        mask = layers.attention_mask(valid_VxL, valid_VxL)
        for layer in self.encoder:
            h = layer(h, mask)
        return h[:, 0]

    def __call__(self, surface_VxL, source_in_SxD, source_out_SxD=None, *, scale: bool = True):
        """scale=False skips the output scalers (what `fit_scalers` measures)."""
        c = self.config
        pooled = self.encode(surface_VxL, source_in_SxD, source_out_SxD)

        def head(block, proj, scaler):
            y = proj(block(pooled)).astype(jnp.float32)
            return scaler(y) if scale else y

        out = {"in": head(self.output_block, self.output_projection, self.out_scaler)}
        out["out"] = (
            head(self.output_block_out, self.output_projection_out, self.out_scaler_out)
            if c.separate_out
            else None
        )
        out["bias"] = (
            head(lambda x: x, self.bias_projection, self.bias_scaler)[:, 0]
            if c.predict_bias
            else None
        )
        return out
