"""De novo peptide sequencing: a shared spectrum encoder with AR and NAR decoders.

One config, three models (`PeptideConfig.mode`):
- "ar": Casanovo 5 (`casanovo.denovo.model.Spec2Pep` on depthcharge 0.4): a peak Transformer
  encoder and a causal peptide decoder whose first position is the precursor. Parameter for
  parameter the same network, so `zoo.peptide.casanovo` imports its checkpoints.
- "nar": PrimeNovo-style: 40 non-causal slots queried from the precursor, CTC classes
  (class 0 = blank).
- "hybrid": CrossNovo: both decoders on the shared encoder; every AR cross-attention reads
  [stop_gradient(NAR last-layer states) + slot positions ; encoder output] instead of the
  encoder output alone (cross-decoder attention). The stop_gradient is the paper's gradient
  block: the AR loss never reaches the NAR decoder.

Token ids: `TokenLayout` below, the one definition every part of the family uses (task,
searches, CTC, mass control, Casanovo import): 0 pad (the CTC blank in NAR outputs), 1..n the
residues in `Residues.tokens` order (n = `n_residues`), n + 1 the stop token `$` (AR only).

Casanovo's layers, exactly (torch.nn.Transformer{Encoder,Decoder}Layer as depthcharge builds
them): post-LN (norm_first=False), ReLU, LayerNorm eps 1e-5, biases everywhere, dropout after
attention, inside the FFN and after it. Sinusoids are depthcharge's `FloatEncoder`:
sin(x / t_i) for the first ceil(d/2) features, cos(x / t_j) for the rest, with
t = (lambda_min / 2 pi) (lambda_max / lambda_min)^(i / (count - 1)) per half.
- peaks: [FloatEncoder(m/z; 1e-3, 1e4) ; FloatEncoder(intensity; 1e-6, 1)] -> Linear(2d, d)
  without bias; a learned latent-spectrum token is prepended; a peak is padding when its m/z
  and intensity sum to 0 (depthcharge's rule).
- precursor: FloatEncoder(neutral mass; 1e-3, 1e4) + charge embedding (row charge - 1).
- decoder positions: FloatEncoder(position; 1, 1e5) added to every position, precursor too.
- residues: an embedding [n + 2, d]; pad tokens are masked as attention keys.

The FloatEncoder wavelengths are parameters (`terms`, [d]) used under stop_gradient, hence never
trained (zero gradient; 1-D, so the loop's AdamW does not decay them). They are parameters and
not constants so that an imported Casanovo model uses the float32 values its checkpoint holds:
torch computes them with a vectorised powf whose last bit depends on the CPU, and at m/z ~1000
with the shortest wavelength one ulp moves the phase by ~0.4 rad.

Public face: `TokenLayout`, `PeptideConfig`, `PeptideModel` (`encode`, `nar`, `ar`,
`__call__`, `ar_init_cache`, `ar_step`), `float_encoder_terms`, `count_flops`. Usable with
nothing but `model.apply(..., method=...)`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from zoo.nn import checks, layers
from zoo.nn.cache import BEAM_SHARED

MODES = ("ar", "nar", "hybrid")


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """THE ids of a peptide model's classes, for residue tokens `tokens` (in model order).

    0 (`PAD`): padding of token arrays and of AR inputs/targets; also the CTC blank (`BLANK`)
      among the NAR classes.
    1..n: residue `tokens[id - 1]`.
    n + 1 (`stop`): the stop token `$`, AR outputs only.
    AR outputs have n + 2 classes (`ar_classes`), NAR outputs n + 1 (`nar_classes`).
    `TokenLayout.of_size(n)` gives the counts when only n is known (a model config).
    """

    tokens: tuple[str, ...]

    PAD: ClassVar[int] = 0
    BLANK: ClassVar[int] = 0

    @classmethod
    def of_size(cls, n_residues: int) -> TokenLayout:
        return cls(tuple(str(i) for i in range(n_residues)))

    @property
    def n_residues(self) -> int:
        return len(self.tokens)

    @property
    def stop(self) -> int:
        return self.n_residues + 1

    @property
    def ar_classes(self) -> int:
        return self.n_residues + 2

    @property
    def nar_classes(self) -> int:
        return self.n_residues + 1

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return {t: i + 1 for i, t in enumerate(self.tokens)}

    def ids(self, names: Sequence[str]) -> list[int]:
        """Ids of residue tokens (KeyError names an unknown one)."""
        return [self._ids[t] for t in names]

    def names(self, ids: Sequence[int]) -> list[str]:
        """Residue tokens of ids, as depthcharge detokenizes: pads skipped, `$` ends them."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.stop:
                break
            if i != self.PAD:
                out.append(self.tokens[i - 1])
        return out

    def per_class(self, value: Callable[[str], Any], fill: Any = 0.0, *, ar: bool = True) -> list:
        """[value(token) for each residue class] with `fill` at pad/blank (and stop if `ar`),
        in class order: e.g. the mass of every AR class."""
        return [fill, *(value(t) for t in self.tokens)] + ([fill] if ar else [])


# depthcharge 0.4 wavelength ranges (min, max) of each FloatEncoder.
MZ_WAVELENGTHS = (0.001, 10000.0)
INTENSITY_WAVELENGTHS = (1e-6, 1.0)
MASS_WAVELENGTHS = (0.001, 10000.0)
POSITION_WAVELENGTHS = (1.0, 1e5)


@dataclasses.dataclass(frozen=True)
class PeptideConfig:
    mode: str = "hybrid"  # "ar" (Casanovo-like) | "nar" (PrimeNovo-like) | "hybrid" (CrossNovo)
    n_residues: int = 27  # residue tokens (len(Residues.tokens)); AR classes n+2, NAR n+1
    d_model: int = 512  # width of every stack (Casanovo dim_model)
    n_heads: int = 8  # attention heads everywhere (Casanovo n_head)
    d_ff: int = 1024  # FFN hidden width (Casanovo dim_feedforward)
    encoder_layers: int = 9  # spectrum encoder layers (Casanovo n_layers)
    ar_layers: int = 9  # AR decoder layers (Casanovo n_layers)
    nar_layers: int = 9  # NAR decoder layers (PrimeNovo: 9)
    dropout: float = 0.0  # attention probabilities, FFN activation, residual branches
    max_charge: int = 4  # rows of the charge embeddings; charge c reads row c-1 (clipped)
    nar_slots: int = 40  # NAR decoder length: the longest CTC path (PrimeNovo: 40)
    max_peptide_len: int = 100  # longest peptide the AR decoder is trained/decoded for
    reverse: bool = True  # AR decodes C->N like Casanovo 5 (data helpers reverse peptides)
    dtype: str = "float32"  # compute dtype; parameters and sinusoid phases stay float32

    @property
    def layout(self) -> TokenLayout:
        """The class ids (`TokenLayout`) of a vocabulary of n_residues tokens."""
        return TokenLayout.of_size(self.n_residues)

    @property
    def ar_vocab(self) -> int:
        """AR output classes: pad, residues, stop."""
        return self.layout.ar_classes

    @property
    def nar_classes(self) -> int:
        """NAR output classes: CTC blank (0) and residues."""
        return self.layout.nar_classes

    @property
    def stop_id(self) -> int:
        return self.layout.stop

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def has_ar(self) -> bool:
        return self.mode in ("ar", "hybrid")

    @property
    def has_nar(self) -> bool:
        return self.mode in ("nar", "hybrid")

    def validate(self) -> None:
        """Every field of a real model's range (a checkpoint's hyper-parameters may ask for
        anything, e.g. max_peptide_len=1e9)."""
        checks.one_of("model.mode", self.mode, MODES)
        checks.int_in("model.n_residues", self.n_residues, 1, 4096)
        checks.int_in("model.d_model", self.d_model, 4, checks.MAX_WIDTH)
        checks.int_in("model.n_heads", self.n_heads, 1, checks.MAX_HEADS)
        checks.int_in("model.d_ff", self.d_ff, 1, checks.MAX_WIDTH)
        for field in ("encoder_layers", "ar_layers", "nar_layers"):
            checks.int_in(f"model.{field}", getattr(self, field), 0, checks.MAX_LAYERS)
        checks.fraction("model.dropout", self.dropout)
        checks.int_in("model.max_charge", self.max_charge, 1, 100)
        checks.int_in("model.nar_slots", self.nar_slots, 1, 4096)
        # Peptides of ~50 residues are long; 1000 covers any protein fragment a spectrum holds.
        checks.int_in("model.max_peptide_len", self.max_peptide_len, 1, 1000)
        if type(self.reverse) is not bool:
            raise ValueError(f"model.reverse={self.reverse!r} must be true or false")
        checks.one_of("model.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model={self.d_model} is not divisible by model.n_heads="
                f"{self.n_heads}; pick a head count that divides the width"
            )


# ---------------------------------------------------------------------------------------------
# Sinusoidal encoders
# ---------------------------------------------------------------------------------------------


def float_encoder_terms(features: int, min_wavelength: float, max_wavelength: float) -> np.ndarray:
    """depthcharge `FloatEncoder`'s divisors [features] f32: ceil(d/2) sin terms, then cos terms.

    Computed in float64 and rounded once (depthcharge uses float32 powf; see the module
    docstring for why imported models bring their own values).
    """
    d_sin = math.ceil(features / 2)
    d_cos = features - d_sin
    base = min_wavelength / (2 * np.pi)
    scale = max_wavelength / min_wavelength
    sin_exp = np.arange(d_sin, dtype=np.float64) / max(d_sin - 1, 1)
    cos_exp = np.arange(d_cos, dtype=np.float64) / max(d_cos - 1, 1)
    return (base * scale ** np.concatenate([sin_exp, cos_exp])).astype(np.float32)


class FloatEncoder(nn.Module):
    """depthcharge `FloatEncoder`: x [...] -> [..., features] (sin half, then cos half).

    Phases x / terms are computed in float32 whatever the compute dtype: with wavelengths
    down to 1e-3 Da, bf16 phases would be noise.
    """

    features: int
    min_wavelength: float
    max_wavelength: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = float_encoder_terms(self.features, self.min_wavelength, self.max_wavelength)
        terms = self.param(
            "terms",
            layers.logical(lambda *_: jnp.asarray(init), ("embed",)),
            (self.features,),
            jnp.float32,
        )
        x = x.astype(jnp.float32)
        # A true division, as torch does: XLA rewrites x / broadcast(t) as x * broadcast(1 / t),
        # which rounds differently, and at phases ~1e7 rad that moves sin by up to 0.5. The
        # barrier hides the broadcast from that rewrite; fusion still avoids materialising it.
        terms = jax.lax.optimization_barrier(
            jnp.broadcast_to(jax.lax.stop_gradient(terms), (*x.shape, self.features))
        )
        phase = x[..., None] / terms
        d_sin = math.ceil(self.features / 2)
        out = jnp.concatenate([jnp.sin(phase[..., :d_sin]), jnp.cos(phase[..., d_sin:])], -1)
        return out.astype(self.dtype)


def _positions(module: FloatEncoder, length: int) -> jax.Array:
    """Position encodings [1, length, d] for positions 0..length-1."""
    return module(jnp.arange(length, dtype=jnp.float32))[None]


class PeakEncoder(nn.Module):
    """depthcharge `PeakEncoder`: m/z and intensity sinusoids, concatenated, Linear(2d -> d)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, mz_BxP: jax.Array, intensity_BxP: jax.Array) -> jax.Array:
        mz = FloatEncoder(self.features, *MZ_WAVELENGTHS, self.dtype, name="mz_encoder")(mz_BxP)
        inten = FloatEncoder(self.features, *INTENSITY_WAVELENGTHS, self.dtype, name="int_encoder")(
            intensity_BxP
        )
        both_BxPx2D = jnp.concatenate([mz, inten], -1)
        return layers.Dense(
            self.features, ("mlp", "embed"), use_bias=False, dtype=self.dtype, name="combiner"
        )(both_BxPx2D)


class PrecursorEncoder(nn.Module):
    """Casanovo's precursor token: FloatEncoder(neutral mass) + charge embedding [B, D]."""

    features: int
    max_charge: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, precursor_mass_B: jax.Array, charge_B: jax.Array) -> jax.Array:
        mass_BxD = FloatEncoder(self.features, *MASS_WAVELENGTHS, self.dtype, name="mass_encoder")(
            precursor_mass_B
        )
        table = self.param(
            "charge_embedding",
            layers.logical(layers.default_kernel_init, (None, "embed")),
            (self.max_charge, self.features),
            jnp.float32,
        )
        # Casanovo reads row charge - 1 (torch would fail past max_charge; data filters those).
        row_B = jnp.clip(jnp.asarray(charge_B).astype(jnp.int32) - 1, 0, self.max_charge - 1)
        return mass_BxD + jnp.take(table, row_B, axis=0).astype(self.dtype)


# ---------------------------------------------------------------------------------------------
# Post-LN layers (torch.nn.TransformerEncoderLayer / TransformerDecoderLayer defaults)
# ---------------------------------------------------------------------------------------------


def _attention(c: PeptideConfig) -> layers.MultiHeadAttention:
    return layers.MultiHeadAttention(c.n_heads, c.head_dim, c.dropout, jnp.dtype(c.dtype))


def _ffn(c: PeptideConfig) -> layers.FeedForward:
    return layers.FeedForward(c.d_ff, "relu", c.dropout, jnp.dtype(c.dtype))


def _norm(c: PeptideConfig) -> layers.LayerNorm:
    return layers.LayerNorm(1e-5, jnp.dtype(c.dtype))


class EncoderLayer(nn.Module):
    """x = LN1(x + SelfAttn(x)); x = LN2(x + FFN(x))."""

    config: PeptideConfig

    def setup(self):
        c = self.config
        self.self_attn, self.norm1 = _attention(c), _norm(c)
        self.ffn, self.norm2 = _ffn(c), _norm(c)
        self.dropout = nn.Dropout(c.dropout)

    def __call__(self, x_BxSxD, mask_Bx1xSxS, deterministic: bool):
        a = self.self_attn(x_BxSxD, x_BxSxD, mask_Bx1xSxS, deterministic)
        x_BxSxD = self.norm1(x_BxSxD + self.dropout(a, deterministic=deterministic))
        f = self.ffn(x_BxSxD, deterministic)
        x_BxSxD = self.norm2(x_BxSxD + self.dropout(f, deterministic=deterministic))
        return layers.constrain(x_BxSxD, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    """y = LN1(y + SelfAttn(y)); y = LN2(y + CrossAttn(y, src)); y = LN3(y + FFN(y)).

    `__call__` runs all positions (causal or not, by the mask); `step` one position per row
    with keys/values of earlier positions in a cache. Post-LN, so a position's keys/values
    are projections of the layer input itself.
    """

    config: PeptideConfig

    def setup(self):
        c = self.config
        self.self_attn, self.norm1 = _attention(c), _norm(c)
        self.cross_attn, self.norm2 = _attention(c), _norm(c)
        self.ffn, self.norm3 = _ffn(c), _norm(c)
        self.dropout = nn.Dropout(c.dropout)

    def _cross_and_ffn(self, y_BxTxD, cross_fn, deterministic):
        a = cross_fn(y_BxTxD)
        y_BxTxD = self.norm2(y_BxTxD + self.dropout(a, deterministic=deterministic))
        f = self.ffn(y_BxTxD, deterministic)
        y_BxTxD = self.norm3(y_BxTxD + self.dropout(f, deterministic=deterministic))
        return layers.constrain(y_BxTxD, ("batch", "length", "embed"))

    def __call__(self, y_BxTxD, src_BxSxD, self_mask, cross_mask, deterministic: bool):
        a = self.self_attn(y_BxTxD, y_BxTxD, self_mask, deterministic)
        y_BxTxD = self.norm1(y_BxTxD + self.dropout(a, deterministic=deterministic))
        return self._cross_and_ffn(
            y_BxTxD,
            lambda h: self.cross_attn(h, src_BxSxD, cross_mask, deterministic),
            deterministic,
        )

    def cross_kv(self, src_BxSxD) -> dict:
        """Cross-attention keys/values of the source, each [B, heads, S, head_dim]."""
        k_BxSxHxK, v_BxSxHxK = self.cross_attn.project_kv(src_BxSxD)
        return {"k": k_BxSxHxK.transpose(0, 2, 1, 3), "v": v_BxSxHxK.transpose(0, 2, 1, 3)}

    def step(self, y_Bx1xD, layer_cache: dict, cross: dict, index_B, self_mask_Bx1x1xL, cross_mask):
        """One position per row (row b at index_B[b]) -> (y [B, 1, D], updated layer_cache).

        layer_cache: self_k/self_v [B, heads, L, head_dim]; self_mask_Bx1x1xL says which
        slots this position may read (earlier non-pad slots and itself).
        """
        k_Bx1xHxK, v_Bx1xHxK = self.self_attn.project_kv(y_Bx1xD)
        write = jax.vmap(lambda buf, new, i: jax.lax.dynamic_update_slice(buf, new, (0, i, 0)))
        self_k = write(layer_cache["self_k"], k_Bx1xHxK.transpose(0, 2, 1, 3), index_B)
        self_v = write(layer_cache["self_v"], v_Bx1xHxK.transpose(0, 2, 1, 3), index_B)
        a = self.self_attn.attend_heads_major(y_Bx1xD, self_k, self_v, self_mask_Bx1x1xL)
        y_Bx1xD = self.norm1(y_Bx1xD + a)
        y_Bx1xD = self._cross_and_ffn(
            y_Bx1xD,
            lambda h: self.cross_attn.attend_heads_major(h, cross["k"], cross["v"], cross_mask),
            True,
        )
        return y_Bx1xD, {"self_k": self_k, "self_v": self_v}


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class PeptideModel(nn.Module):
    """Spectrum encoder + AR and/or NAR decoders (see the module docstring).

    Top-level parameter names start with the part they belong to, so that one regex selects
    a part (stage 2 freezes `^encoder_` and `^nar_`): `encoder_{peak_encoder,
    latent_spectrum, layer_i}`, `ar_{aa_embedding, precursor, positions, layer_i, output,
    nar_slot_positions (hybrid)}`, `nar_{precursor, positions, layer_i, output}`.
    """

    config: PeptideConfig

    def setup(self):
        c = self.config
        c.validate()
        dt = jnp.dtype(c.dtype)
        self.peak_encoder = PeakEncoder(c.d_model, dt, name="encoder_peak_encoder")
        self.latent_spectrum = self.param(
            "encoder_latent_spectrum",
            layers.logical(nn.initializers.normal(1.0), ("embed",)),  # torch.randn, as Casanovo
            (c.d_model,),
            jnp.float32,
        )
        self.encoder_layers = [
            EncoderLayer(c, name=f"encoder_layer_{i}") for i in range(c.encoder_layers)
        ]
        if c.has_ar:
            self.aa_embedding = layers.Embed(c.ar_vocab, c.d_model, dt, name="ar_aa_embedding")
            self.ar_precursor = PrecursorEncoder(c.d_model, c.max_charge, dt, name="ar_precursor")
            self.ar_positions = FloatEncoder(
                c.d_model, *POSITION_WAVELENGTHS, dt, name="ar_positions"
            )
            self.ar_layers = [DecoderLayer(c, name=f"ar_layer_{i}") for i in range(c.ar_layers)]
            self.ar_output = layers.Dense(
                c.ar_vocab, ("embed", "vocab"), dtype=dt, name="ar_output"
            )
            if c.mode == "hybrid":
                self.nar_slot_positions = FloatEncoder(
                    c.d_model, *POSITION_WAVELENGTHS, dt, name="ar_nar_slot_positions"
                )
        if c.has_nar:
            self.nar_precursor = PrecursorEncoder(c.d_model, c.max_charge, dt, name="nar_precursor")
            self.nar_positions = FloatEncoder(
                c.d_model, *POSITION_WAVELENGTHS, dt, name="nar_positions"
            )
            self.nar_layers = [DecoderLayer(c, name=f"nar_layer_{i}") for i in range(c.nar_layers)]
            self.nar_output = layers.Dense(
                c.nar_classes, ("embed", "vocab"), dtype=dt, name="nar_output"
            )

    # --- encoder ---------------------------------------------------------------------------
    def encode(self, mz_BxP, intensity_BxP, *, deterministic: bool = True):
        """Peaks -> (memory [B, 1+P, D], memory_mask [B, 1+P] bool, True = real).

        mz, intensity: [B, P] f32, zero-padded (a peak is padding when mz + intensity == 0).
        Position 0 is the latent-spectrum token, always real.
        """
        mz_BxP = jnp.asarray(mz_BxP, jnp.float32)
        intensity_BxP = jnp.asarray(intensity_BxP, jnp.float32)
        batch = mz_BxP.shape[0]
        real_BxP = (mz_BxP + intensity_BxP) != 0
        mask_BxS = jnp.concatenate([jnp.ones((batch, 1), bool), real_BxP], 1)
        peaks_BxPxD = self.peak_encoder(mz_BxP, intensity_BxP)
        latent_Bx1xD = jnp.broadcast_to(
            self.latent_spectrum.astype(peaks_BxPxD.dtype), (batch, 1, self.config.d_model)
        )
        x_BxSxD = jnp.concatenate([latent_Bx1xD, peaks_BxPxD], 1)
        x_BxSxD = layers.constrain(x_BxSxD, ("batch", "length", "embed"))
        # torch's src_key_padding_mask masks keys only; pad queries compute (unused) values.
        mask = layers.attention_mask(jnp.ones_like(mask_BxS), mask_BxS)
        for layer in self.encoder_layers:
            x_BxSxD = layer(x_BxSxD, mask, deterministic)
        return x_BxSxD, mask_BxS

    # --- NAR decoder -----------------------------------------------------------------------
    def nar(self, memory, memory_mask, precursor_mass_B, charge_B, *, deterministic: bool = True):
        """Non-causal slots -> (states [B, N, D], logits [B, N, n+1] f32; class 0 = blank).

        Queries: the precursor encoding repeated over N = nar_slots slots, plus positions.
        """
        c = self.config
        if not c.has_nar:
            raise ValueError(f"model.mode={c.mode!r} has no NAR decoder; use 'nar' or 'hybrid'")
        batch = memory.shape[0]
        prec_BxD = self.nar_precursor(precursor_mass_B, charge_B)
        # No dropout on decoder inputs, as torch's decoder layers (only inside them).
        y_BxNxD = prec_BxD[:, None, :] + _positions(self.nar_positions, c.nar_slots)
        slots = jnp.ones((batch, c.nar_slots), bool)
        self_mask = layers.attention_mask(slots, slots)
        cross_mask = layers.attention_mask(slots, memory_mask.astype(bool))
        for layer in self.nar_layers:
            y_BxNxD = layer(y_BxNxD, memory, self_mask, cross_mask, deterministic)
        logits = self.nar_output(y_BxNxD).astype(jnp.float32)
        return y_BxNxD, layers.constrain(logits, ("batch", "length", "vocab"))

    # --- AR decoder ------------------------------------------------------------------------
    def _cross_source(self, memory, memory_mask, nar_states):
        """What AR cross-attention reads: memory, or [sg(NAR states) + slot positions; memory]."""
        c = self.config
        memory_mask = memory_mask.astype(bool)
        if c.mode != "hybrid":
            if nar_states is not None:
                raise ValueError(
                    f"model.mode={c.mode!r}: the AR decoder reads the encoder only; "
                    "nar_states are for mode 'hybrid'"
                )
            return memory, memory_mask
        if nar_states is None:
            raise ValueError(
                "model.mode='hybrid': pass nar_states (the first output of `nar`) to the AR "
                "decoder; its cross-attention reads them"
            )
        # The gradient block: the AR loss must not train the NAR decoder (CrossNovo sec. 3).
        slots_BxNxD = jax.lax.stop_gradient(nar_states) + _positions(
            self.nar_slot_positions, nar_states.shape[1]
        ).astype(nar_states.dtype)
        src = jnp.concatenate([slots_BxNxD.astype(memory.dtype), memory], 1)
        slot_mask = jnp.ones(nar_states.shape[:2], bool)
        return src, jnp.concatenate([slot_mask, memory_mask], 1)

    def _ar_check(self):
        if not self.config.has_ar:
            raise ValueError(
                f"model.mode={self.config.mode!r} has no AR decoder; use 'ar' or 'hybrid'"
            )

    def ar(
        self,
        tokens_BxT,
        precursor_mass_B,
        charge_B,
        memory,
        memory_mask,
        nar_states=None,
        *,
        deterministic: bool = True,
    ):
        """Teacher-forced causal decoder -> logits [B, T+1, n+2] f32.

        Position 0 is the precursor; logits[:, t] predicts token t from tokens[:, :t].
        tokens: [B, T] int, in decoding order (reversed when config.reverse), 0-padded.
        """
        self._ar_check()
        tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
        batch, length = tokens_BxT.shape
        prec_Bx1xD = self.ar_precursor(precursor_mass_B, charge_B)[:, None, :]
        y_BxLxD = jnp.concatenate([prec_Bx1xD, self.aa_embedding(tokens_BxT)], 1)
        y_BxLxD = y_BxLxD + _positions(self.ar_positions, length + 1).astype(y_BxLxD.dtype)
        y_BxLxD = layers.constrain(y_BxLxD, ("batch", "length", "embed"))
        # Casanovo masks pad tokens as keys (their embedding row is zero); position 0 is real.
        keys_BxL = jnp.concatenate([jnp.ones((batch, 1), bool), tokens_BxT != 0], 1)
        queries_BxL = jnp.ones_like(keys_BxL)
        self_mask = layers.attention_mask(queries_BxL, keys_BxL, causal=True)
        src, src_mask = self._cross_source(memory, memory_mask, nar_states)
        cross_mask = layers.attention_mask(queries_BxL, src_mask)
        for layer in self.ar_layers:
            y_BxLxD = layer(y_BxLxD, src, self_mask, cross_mask, deterministic)
        logits = self.ar_output(y_BxLxD).astype(jnp.float32)
        return layers.constrain(logits, ("batch", "length", "vocab"))

    def ar_init_cache(
        self, precursor_mass_B, charge_B, memory, memory_mask, nar_states, max_length: int
    ):
        """Starts incremental decoding -> (logits [B, n+2] for the first token, cache).

        The cache holds every position 0..max_length (precursor + max_length tokens); every
        leaf has the batch as its leading dim (zoo.decode.search gathers/repeats rows):
          index [B] int32: the position the next `ar_step` token goes to (starts at 1);
          key_valid [B, max_length+1] bool: positions readable as keys (pad tokens are not);
          layers: per layer self_k/self_v [B, heads, max_length+1, head_dim];
          beam_shared: cross_mask [B, S'] and per layer the source keys/values (never
          reordered between an item's beams).
        """
        self._ar_check()
        c = self.config
        batch = memory.shape[0]
        src, src_mask = self._cross_source(memory, memory_mask, nar_states)
        slots = max_length + 1
        zeros = jnp.zeros((batch, c.n_heads, slots, c.head_dim), jnp.dtype(c.dtype))
        cache = {
            "index": jnp.zeros((batch,), jnp.int32),
            "key_valid": jnp.zeros((batch, slots), bool),
            "layers": tuple({"self_k": zeros, "self_v": zeros} for _ in self.ar_layers),
            BEAM_SHARED: {
                "cross_mask": src_mask,
                "cross": tuple(layer.cross_kv(src) for layer in self.ar_layers),
            },
        }
        y_Bx1xD = self.ar_precursor(precursor_mass_B, charge_B)[:, None, :]
        return self._step(y_Bx1xD, jnp.ones((batch,), bool), cache)

    def ar_step(self, token_ids_B, cache):
        """Feeds one token per row at its cache index -> (logits [B, n+2] f32, cache).

        Equals `ar` teacher-forced on the same prefix (deterministic). A row past
        max_length overwrites its last slot: stop decoding before that.
        """
        self._ar_check()
        token_ids_B = jnp.asarray(token_ids_B, jnp.int32)
        y_Bx1xD = self.aa_embedding(token_ids_B[:, None])
        return self._step(y_Bx1xD, token_ids_B != 0, cache)

    def _step(self, x_Bx1xD, is_key_B, cache):
        index_B = cache["index"]
        pos_Bx1xD = self.ar_positions(index_B.astype(jnp.float32))[:, None, :]
        y_Bx1xD = x_Bx1xD + pos_Bx1xD.astype(x_Bx1xD.dtype)
        slots_L = jnp.arange(cache["key_valid"].shape[1])
        key_valid = jnp.where(
            slots_L[None] == index_B[:, None], is_key_B[:, None], cache["key_valid"]
        )
        self_mask = (key_valid & (slots_L[None] <= index_B[:, None]))[:, None, None, :]
        shared = cache[BEAM_SHARED]
        cross_mask = shared["cross_mask"][:, None, None, :]
        new_layers = []
        for layer, layer_cache, cross in zip(self.ar_layers, cache["layers"], shared["cross"]):
            y_Bx1xD, layer_cache = layer.step(
                y_Bx1xD, layer_cache, cross, index_B, self_mask, cross_mask
            )
            new_layers.append(layer_cache)
        logits_BxV = self.ar_output(y_Bx1xD)[:, 0].astype(jnp.float32)
        new_cache = {
            **cache,
            "index": index_B + 1,
            "key_valid": key_valid,
            "layers": tuple(new_layers),
        }
        return logits_BxV, new_cache

    # --- everything the mode trains ----------------------------------------------------------
    def __call__(
        self,
        mz_BxP,
        intensity_BxP,
        precursor_mass_B,
        charge_B,
        tokens_BxT,
        *,
        deterministic: bool = True,
    ) -> dict:
        """-> {"memory", "memory_mask", and per mode "nar_states", "nar_logits", "ar_logits"}.

        Shapes as `encode`, `nar` and `ar` return them (unused entries cost nothing under jit).
        """
        c = self.config
        memory, memory_mask = self.encode(mz_BxP, intensity_BxP, deterministic=deterministic)
        out: dict = {"memory": memory, "memory_mask": memory_mask}
        nar_states = None
        if c.has_nar:
            nar_states, out["nar_logits"] = self.nar(
                memory, memory_mask, precursor_mass_B, charge_B, deterministic=deterministic
            )
            out["nar_states"] = nar_states
        if c.has_ar:
            out["ar_logits"] = self.ar(
                tokens_BxT,
                precursor_mass_B,
                charge_B,
                memory,
                memory_mask,
                nar_states if c.mode == "hybrid" else None,
                deterministic=deterministic,
            )
        return out


def count_flops(config: PeptideConfig, batch: int, n_peaks: int, target_len: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward).

    target_len: AR decoder positions (precursor + tokens). Matmuls only (2 FLOPs per
    multiply-add), attention scores and mixing included, as `transformer.count_flops`.
    """
    c = config
    d, f = c.d_model, c.d_ff
    s = n_peaks + 1
    n = c.nar_slots

    def self_layer(q_len: int) -> int:  # q/k/v/out projections, FFN, scores and mixing
        return q_len * (4 * d * d + 2 * d * f) + 2 * q_len * q_len * d

    def cross(q_len: int, k_len: int) -> int:  # q/out on queries, k/v on the source
        return 2 * q_len * d * d + 2 * k_len * d * d + 2 * q_len * k_len * d

    forward = n_peaks * 2 * d * d + c.encoder_layers * self_layer(s)
    if c.has_nar:
        forward += c.nar_layers * (self_layer(n) + cross(n, s)) + n * d * c.nar_classes
    if c.has_ar:
        src = s + (n if c.mode == "hybrid" else 0)
        t = target_len
        forward += c.ar_layers * (self_layer(t) + cross(t, src)) + t * d * c.ar_vocab
    return 3.0 * 2 * batch * forward
