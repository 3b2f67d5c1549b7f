"""Zero-shot tokenizer transfer (ZeTT, Minixhofer et al. 2024): the embedding hypernetwork.

A model is bound to its tokenizer through its embedding matrix. The hypernetwork predicts
the embedding of any token of a NEW tokenizer from the token's decomposition into the
model's ORIGINAL tokens (the original tokenizer's model applied to the token's surface
form, at most `max_len` = 7 pieces; zoo.zett.vocab computes it):

    surface ids [V, 7] -> rows of the frozen source embeddings (through a frozen
    per-dimension scaler to mean 0, std 0.02; ids >= source_vocab_size read learned
    fallback rows, one per byte) -> Dense + projector block -> post-LN transformer encoder
    (3 layers, FFN 2x) over the pieces -> hidden state of the first piece -> projector
    block + Dense -> frozen output scaler -> the token's input embedding.

Untied models get a second head for the output (LM-head) rows (`separate_out`); models with
an output bias (mBART's final_logits_bias) a bias head (`predict_bias`). The output scalers
are fitted on anchor tokens (`fit_scalers`) so that the predictions of the source's own
tokens have the source matrix's per-dimension mean and std. Special tokens are never
predicted: `copy_special_rows` puts the source rows back. The hypernetwork knows nothing
of mBART: it reads whatever embedding matrices it is given.

Also here, the heuristic baselines on the same arrays: FVT (mean of the subtoken rows) and
lexical (copy exact matches, the rest get the unknown token's row).

The encoder over the pieces is `zoo.zett.encoder` (packed: one flat matmul over the real
pieces of every token). `predict_embeddings` runs a whole vocabulary (250k) in fixed chunks.

Public face: HypernetConfig, Hypernet, predict_embeddings, fit_scalers, copy_special_rows,
fvt_embeddings, lexical_embeddings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from zoo.nn import layers
from zoo.zett import encoder


@dataclasses.dataclass(frozen=True)
class HypernetConfig:
    source_vocab_size: int = 0  # rows of the source embedding matrix (ids >= it: fallback rows)
    embed_dim: int = 0  # width of one source embedding matrix (the base model's d_model)
    hidden_dim: int = 0  # encoder width; 0 = embed_dim (as ZeTT)
    num_layers: int = 3  # transformer encoder layers over the <= max_len pieces
    num_heads: int = 0  # 0 = max(1, hidden_dim // 64)
    mlp_dim: int = 0  # encoder FFN width; 0 = 2 * hidden_dim
    max_len: int = 7  # pieces per token (longer decompositions are truncated)
    num_fallback: int = 256  # learned rows for ids >= source_vocab_size (one per byte)
    pad_id: int = 1  # pads the decompositions (mBART's <pad>)
    separate_out: bool = False  # untied models: also predict the output (LM-head) rows
    predict_bias: bool = True  # models with an output bias: predict it (mBART: yes)
    dtype: str = "float32"  # compute dtype; parameters stay float32
    # The encoder packs the real pieces into the first of ceil(f * V * max_len) rows, f in
    # packed_pieces, that holds them (zoo.zett.encoder); more: the padded layout. () = always
    # padded. Each entry is one more compiled branch.
    packed_pieces: tuple[float, ...] = (0.3, 0.6)

    def __post_init__(self):  # from JSON: a list
        object.__setattr__(self, "packed_pieces", tuple(float(f) for f in self.packed_pieces))

    @property
    def hidden(self) -> int:
        return self.hidden_dim or self.embed_dim

    @property
    def heads(self) -> int:
        return self.num_heads or max(1, self.hidden // 64)

    @property
    def in_width(self) -> int:
        """Width of the table the pieces are looked up in: [E_in | E_out] for untied models."""
        return self.embed_dim * (2 if self.separate_out else 1)

    def validate(self) -> None:
        if self.source_vocab_size <= 0 or self.embed_dim <= 0:
            raise ValueError(
                f"HypernetConfig needs source_vocab_size and embed_dim > 0 (got "
                f"{self.source_vocab_size}, {self.embed_dim}); they come from the base model"
            )
        if self.hidden % self.heads:
            raise ValueError(f"hidden_dim={self.hidden} is not divisible by num_heads={self.heads}")
        if not all(0.0 < f <= 1.0 for f in self.packed_pieces):
            raise ValueError(
                f"packed_pieces={self.packed_pieces}: fractions of the [V, max_len] slots; use "
                "values in (0, 1], or () for no packing"
            )

    def packed_rows(self, vocab_rows: int) -> tuple[int, ...]:
        """Row counts of the packed layouts for `vocab_rows` tokens, ascending (those below
        the V * max_len slots)."""
        slots = vocab_rows * self.max_len
        rows = {int(np.ceil(f * slots)) for f in self.packed_pieces}
        return tuple(sorted(r for r in rows if 0 < r < slots))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HypernetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown HypernetConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


class Scaler(nn.Module):
    """Frozen per-dimension affine y = x * scale + shift (set by `fit_scalers`, never trained)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale", layers.logical(nn.initializers.ones_init(), ("embed",)), (self.features,)
        )
        shift = self.param(
            "shift", layers.logical(nn.initializers.zeros_init(), ("embed",)), (self.features,)
        )
        return x * scale + shift


class ProjectorBlock(nn.Module):
    """LayerNorm(x + gelu(Dense(gelu(Dense(x))))), tanh GELU, eps 1e-6 (ZeTT's projector)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gelu = layers.ACTIVATIONS["gelu_tanh"]
        h = gelu(layers.Dense(self.features, ("embed", "mlp"), dtype=self.dtype, name="fc1")(x))
        h = gelu(layers.Dense(self.features, ("mlp", "embed"), dtype=self.dtype, name="fc2")(h))
        return layers.LayerNorm(1e-6, self.dtype, name="layer_norm")(x + h)


class Hypernet(nn.Module):
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
        mlp = c.mlp_dim or 2 * c.hidden
        self.encoder = [
            encoder.EncoderLayer(c.hidden, c.heads, mlp, dt, name=f"layer_{i}")
            for i in range(c.num_layers)
        ]
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

    def _table(self, source_in_SxD, source_out_SxD):
        """The scaled source rows the pieces are looked up in: [S, in_width] f32."""
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
        return self.in_scaler(jax.lax.stop_gradient(table.astype(jnp.float32)))

    def _row_index(self, ids):
        """Source ids -> rows of [source table; fallback table] (out-of-range ids clipped)."""
        S, F = self.config.source_vocab_size, self.config.num_fallback
        return jnp.where(ids >= S, S + jnp.clip(ids - S, 0, F - 1), jnp.clip(ids, 0, S - 1))

    def _encode_pieces(self, surface_VxL, table_SxW, rows_RxH, layout):
        """Pooled [V, hidden] with the pieces in `layout`; rows_RxH: the input projection of
        every table row (None: project each piece's row instead)."""
        c = self.config
        dt = jnp.dtype(c.dtype)
        V, L = surface_VxL.shape
        ids_P = layout.to_pieces(surface_VxL[..., None])[:, 0]
        positions_P = layout.to_pieces(jnp.broadcast_to(jnp.arange(L), (V, L))[..., None])[:, 0]
        if rows_RxH is not None:
            h = jnp.take(rows_RxH, self._row_index(ids_P), axis=0)
        else:
            is_fallback = ids_P >= c.source_vocab_size
            x = jnp.take(table_SxW, jnp.clip(ids_P, 0, c.source_vocab_size - 1), axis=0)
            fallback = self.fallback(
                jnp.clip(ids_P - c.source_vocab_size, 0, c.num_fallback - 1)
            ).astype(x.dtype)
            x = jnp.where(is_fallback[:, None], fallback, x).astype(dt)
            h = self.input_block(self.input_projection(x))
        h = h + self.positions(positions_P) + self.type_embedding.astype(h.dtype)
        h = self.embedding_norm(h)
        for i, layer in enumerate(self.encoder):
            h = layer(h, layout, first_only=i == len(self.encoder) - 1)
        return h if self.encoder else layout.first(h)

    def encode(self, surface_VxL, source_in_SxD, source_out_SxD=None) -> jax.Array:
        """Pooled hidden state [V, hidden] (before the heads): the first piece's state."""
        c = self.config
        if surface_VxL.shape[-1] != c.max_len:
            raise ValueError(
                f"decompositions have {surface_VxL.shape[-1]} columns; this hypernetwork "
                f"reads {c.max_len}"
            )
        surface_VxL = jnp.asarray(surface_VxL)
        V, L = surface_VxL.shape
        table = self._table(source_in_SxD, source_out_SxD)
        packed = c.packed_rows(V)
        rows_RxH = None
        if c.source_vocab_size + c.num_fallback < (packed[0] if packed else V * L):
            # Fewer table rows than pieces: project each row once, then look the pieces up.
            rows = jnp.concatenate([table, self.fallback.embedding.astype(table.dtype)])
            rows_RxH = self.input_block(self.input_projection(rows.astype(jnp.dtype(c.dtype))))
        valid_VxL = (surface_VxL != c.pad_id).at[:, 0].set(True)
        if not packed or self.is_initializing():  # init outside nn.switch: the same rngs as before
            return self._encode_pieces(surface_VxL, table, rows_RxH, encoder.full_layout(valid_VxL))

        def branch(rows):
            def run(mdl, surface, table, table_rows, valid):
                layout = encoder.packed_layout(valid, rows) if rows else encoder.full_layout(valid)
                return mdl._encode_pieces(surface, table, table_rows, layout)

            return run

        # The smallest packed layout that holds the real pieces; the last branch: padded.
        branches = [branch(rows) for rows in packed] + [branch(0)]
        index = (valid_VxL.sum() > jnp.asarray(packed)).sum()
        return nn.switch(index, branches, self, surface_VxL, table, rows_RxH, valid_VxL)

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


# --------------------------------------------------------------------------- prediction


def predict_embeddings(
    model: Hypernet,
    params: Any,
    surface_VxL: np.ndarray,
    source_in_SxD: Any,
    source_out_SxD: Any = None,
    *,
    chunk: int = 16384,
) -> dict[str, np.ndarray | None]:
    """The hypernetwork's predictions for a whole vocabulary, `chunk` tokens at a time.

    surface_VxL: [V, max_len] decompositions (any V; 250k is fine). One compiled shape
    [chunk, max_len] (the last chunk padded with one-piece rows, then cut), so device memory
    is bounded by the chunk; the results stay on the host. Equal to one
    `model.apply({'params': params}, surface_VxL, ...)` (each row depends only on its own
    decomposition). Returns {'in': [V, D], 'out': [V, D] or None, 'bias': [V] or None},
    float32 numpy.
    """
    if chunk <= 0:
        raise ValueError(f"chunk={chunk}; use a positive number of tokens per chunk")
    surface_VxL = np.asarray(surface_VxL, np.int32)
    n = surface_VxL.shape[0]
    chunk = min(chunk, max(n, 1))
    source_in = jax.device_put(source_in_SxD)
    source_out = None if source_out_SxD is None else jax.device_put(source_out_SxD)
    fn = jax.jit(lambda p, s, e_in, e_out: model.apply({"params": p}, s, e_in, e_out))
    outs: dict[str, list[np.ndarray]] = {"in": [], "out": [], "bias": []}
    for lo in range(0, n, chunk):
        block = surface_VxL[lo : lo + chunk]
        rows = block.shape[0]
        if rows < chunk:  # the tail: pad rows of one piece (cheapest; cut below)
            pad = np.full((chunk - rows, block.shape[1]), model.config.pad_id, np.int32)
            block = np.concatenate([block, pad])
        out = jax.device_get(fn(params, block, source_in, source_out))
        for key, value in out.items():
            if value is not None:
                outs[key].append(np.asarray(value[:rows], np.float32))
    return {k: (np.concatenate(v) if v else None) for k, v in outs.items()}


# --------------------------------------------------------------------------- scalers


def _affine_to(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per column so that pred * scale + shift has target's mean and std."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    scale = target.std(0) / np.maximum(pred.std(0), 1e-12)
    shift = target.mean(0) - pred.mean(0) * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def fit_scalers(
    model: Hypernet,
    params: Any,
    source_in: Any,
    anchor_surface: np.ndarray,
    anchor_ids: np.ndarray,
    *,
    source_out: Any = None,
    source_bias: Any = None,
) -> Any:
    """Sets the frozen scalers; returns a new parameter tree (the others unchanged).

    in_scaler: each column of the source table gets mean 0 and std 0.02.
    out scalers: the predictions for the anchor tokens (their decompositions anchor_surface
    [N, max_len], their source ids anchor_ids [N]) get, per dimension, the mean and std of
    the anchors' source rows (and of their biases for the bias head).
    """
    c = model.config
    params = jax.tree.map(np.asarray, params)
    table = np.asarray(source_in, np.float64)
    if c.separate_out:
        table = np.concatenate([table, np.asarray(source_out, np.float64)], axis=-1)
    std = np.maximum(table.std(0), 1e-12)
    params["in_scaler"] = {
        "scale": (0.02 / std).astype(np.float32),
        "shift": (-table.mean(0) * 0.02 / std).astype(np.float32),
    }
    raw = model.apply(
        {"params": params}, jnp.asarray(anchor_surface), source_in, source_out, scale=False
    )
    ids = np.asarray(anchor_ids)
    targets = {"in": np.asarray(source_in)[ids]}
    names = {"in": "out_scaler"}
    if c.separate_out:
        targets["out"], names["out"] = np.asarray(source_out)[ids], "out_scaler_out"
    if c.predict_bias:
        if source_bias is None:
            raise ValueError("predict_bias=True needs the source output bias to fit its scaler")
        targets["bias"] = np.asarray(source_bias)[ids][:, None]
        names["bias"] = "bias_scaler"
    for key, target in targets.items():
        pred = np.asarray(raw[key])
        pred = pred[:, None] if pred.ndim == 1 else pred
        scale, shift = _affine_to(pred, target)
        params[names[key]] = {"scale": scale, "shift": shift}
    return params


def copy_special_rows(pred: jax.Array, source: jax.Array, special_source_V: jax.Array):
    """Rows with special_source_V >= 0 become source[special_source_V] (exactly); [V, ...]."""
    special_source_V = jnp.asarray(special_source_V)
    rows = jnp.take(jnp.asarray(source), jnp.maximum(special_source_V, 0), axis=0)
    keep = (special_source_V < 0).reshape((-1,) + (1,) * (pred.ndim - 1))
    return jnp.where(keep, pred, rows.astype(pred.dtype))


# --------------------------------------------------------------------------- baselines


def fvt_embeddings(
    source: np.ndarray, decompositions: Sequence[Sequence[int]], *, unk_id: int
) -> np.ndarray:
    """FVT (Gee et al. 2022): each new row = mean of the source rows of its decomposition.

    source: [S, ...] (an embedding matrix, or a bias vector [S]); decompositions: one list of
    source ids per new token (untruncated); ids outside the source (byte fallback) read the
    unknown token's row. An exact match (a one-piece decomposition) is copied unchanged.
    """
    source = np.asarray(source)
    out = np.empty((len(decompositions),) + source.shape[1:], source.dtype)
    size = source.shape[0]
    for v, ids in enumerate(decompositions):
        ids = [i if 0 <= i < size else unk_id for i in ids] or [unk_id]
        out[v] = source[ids[0]] if len(ids) == 1 else source[ids].mean(0)
    return out


def lexical_embeddings(
    source: np.ndarray, exact_source_V: np.ndarray, *, unk_id: int
) -> np.ndarray:
    """Lexical baseline: rows of tokens that exist verbatim in the source vocabulary are copied
    (exact_source_V[v] = that source id), every other row is the unknown token's row."""
    source = np.asarray(source)
    exact = np.asarray(exact_source_V)
    return source[np.where(exact >= 0, exact, unk_id)]
