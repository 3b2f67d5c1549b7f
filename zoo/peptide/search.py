"""Autoregressive peptide decoding: greedy and beam search with Casanovo's rules, jit-friendly.

A peptide model plugs in as in `zoo.decode.search`: `first_logits_BxV` (the distribution of the
first generated token, from the precursor alone), an initial `cache` whose every leaf has the
batch as its leading dim, and `step_fn(token_ids_N, cache) -> (logits_NxV, cache)` that feeds
one token per row (`PeptideModel.ar_init_cache` / `ar_step`). Token ids: `TokenLayout` (0 pad,
1..n the residues in `Residues.tokens` order, n+1 the stop `$`; V = n + 2). Tokens come in
generation order, C->N when the model decodes `reverse`d (Casanovo 5). Rows are spectra x beams (row
b*S + s is beam s of spectrum b); `zoo.nn.cache.repeat_rows` / `gather_rows` expand and
reorder the cache, so the model needs no beam logic.

Rules (flags are Python bools, or traced bool scalars for one compiled search of every mode):

- `casanovo_compatible=True` is Casanovo 5.2.1's `Spec2Pep.beam_search_decode`, quirks
  included (tests/decode/test_peptide_search.py compares with Casanovo itself): the first
  token is the top-S of the raw logits over the whole vocabulary (pad and `$` included);
  candidates rank by the mean *logit* of their tokens; rows that ended are not removed but
  score 0 and can be picked again when fewer than S live candidates score above 0; a pad
  candidate scores 1e-8 x its mean; a beam is discarded when it picks pad, stops with fewer
  than `min_length` tokens (an N-terminal modification counts), or holds more than one
  N-terminal modification or one away from the N-terminus; only beams that pick `$` become
  predictions; the score is the product of the token probabilities, `$` included, each
  clipped to [float64 eps, 1]; the best kept beam is the answer. Not reproduced: the order
  among exactly equal candidate scores (torch `topk` leaves it unspecified; it needs fewer
  than S live candidates above 0), and a beam whose score Casanovo computes as NaN (a `$`
  picked from a row that had ended), which is never preferred here.
- `casanovo_compatible=False` (default) states these rules as constraints: pad is never
  picked, `$` only once the peptide has `min_length` tokens, an N-terminal modification only
  at the N-terminus (the first token, or when reversed the last, `$` forced next) and once;
  ended rows never come back; live beams rank by mean token log-probability.

`precursor_filter=True` adds Casanovo 4's precursor filter (dropped from de novo mode in
Casanovo 5.2): a beam is terminated once its mass exceeds the precursor by more than
`tolerance_ppm` at every isotope in `isotopes`, even with the most negative N-terminal
modification added (Casanovo 4 always allows for it; the default rules only while it can
still come, i.e. reversed and none yet); a terminated beam with `min_length` tokens is kept
as a prediction, its missing `$` counting probability 0; the score is Casanovo 4's: mean token
probability, `$` included, minus 1 when the peptide misses the precursor. Without the filter
the score is Casanovo 5.2.1's product. A peptide matches when |ppm| <= `tolerance_ppm` at some
isotope (Casanovo's `_calc_mass_error`, 13C spacing `C13_SHIFT`); the flag is returned in
every mode.

Masses are summed in float32 as an exact part (multiples of 2^-10 Da, exact below 16384 Da)
plus a small remainder, so the ppm test agrees with float64 to ~1e-5 ppm when the precursor
m/z comes split on the host (`mz_parts`). The search is one `lax.while_loop` with static
shapes; call it inside `jax.jit` (build `step_fn` from the params inside the jitted function).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zoo.nn.cache import gather_rows, repeat_rows
from zoo.peptide.model import TokenLayout
from zoo.peptide.residues import C13_SHIFT, H2O, PROTON, Residues, precursor_mz

StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]

PAD = TokenLayout.PAD
EPS = float(np.finfo(np.float64).eps)  # Casanovo's _peptide_score clip (as float32: 2.2e-16)
_GRID = 1024.0  # masses split into multiples of 1/_GRID Da (exact in float32) + remainder


def stop_id(residues: Residues) -> int:
    """Id of the stop token `$` (`TokenLayout.stop`)."""
    return TokenLayout(residues.tokens).stop


# ---------------------------------------------------------------------------------------------
# Exact-enough mass arithmetic in float32
# ---------------------------------------------------------------------------------------------


def _split(x) -> tuple[jax.Array, jax.Array]:
    """(hi, lo) float32 with hi a multiple of 1/_GRID and x = hi + lo (lo within 1/2048).

    Concrete inputs are split in float64 (full precision kept); traced ones in float32.
    """
    if isinstance(x, jax.Array) and not isinstance(x, np.ndarray):
        x = x.astype(jnp.float32)
        hi = jnp.round(x * _GRID) / _GRID
        return hi, x - hi
    x64 = np.asarray(x, np.float64)
    hi = np.round(x64 * _GRID) / _GRID
    return jnp.asarray(hi, jnp.float32), jnp.asarray(x64 - hi, jnp.float32)


class MzParts(NamedTuple):
    """A precursor m/z as float32 hi + lo (hi a multiple of 1/1024): float64 precision in jit."""

    hi: jax.Array
    lo: jax.Array


def mz_parts(precursor_mz) -> MzParts:
    """Split m/z values for `ar_beam_search`: in float64 when given NumPy/Python numbers (call
    this outside jit to keep full precision), in float32 when given a JAX array."""
    return MzParts(*_split(precursor_mz))


@dataclasses.dataclass(frozen=True)
class _Vocab:
    """Per-token constants of one residue vocabulary (host arrays, turned into constants)."""

    stop: int
    mass_hi_V: np.ndarray
    mass_lo_V: np.ndarray
    is_mod_V: np.ndarray  # N-terminal modification
    correction: float  # most negative N-terminal modification mass (0 if none)


def _vocab(residues: Residues) -> _Vocab:
    layout = TokenLayout(residues.tokens)
    mass_V = np.array(layout.per_class(residues.mass), np.float64)
    hi = np.round(mass_V * _GRID) / _GRID
    is_mod_V = np.array(layout.per_class(lambda t: t in residues.nterm, False))
    negative = [residues.mass(t) for t in residues.nterm if residues.mass(t) < 0]
    return _Vocab(
        stop=layout.stop,
        mass_hi_V=hi.astype(np.float32),
        mass_lo_V=(mass_V - hi).astype(np.float32),
        is_mod_V=is_mod_V,
        correction=min(negative, default=0.0),
    )


def _ppm_NxI(mass_hi_N, mass_lo_N, extra: float, mz_hi_N, mz_lo_N, z_N, isotopes_I):
    """Casanovo's ppm error of residues mass (+ extra Da) against the precursor, per isotope.

    ppm = (calc_mz - (obs_mz - iso * C13 / z)) / obs_mz * 1e6
        = (M + H2O + z * PROTON - z * obs_mz + iso * C13) / (z * obs_mz) * 1e6,
    with the large terms summed on the 1/_GRID grid (exact) and the remainders apart.
    """
    h2o_hi, h2o_lo = _split(H2O)
    p_hi, p_lo = _split(PROTON)
    x_hi, x_lo = _split(extra)
    diff_hi = mass_hi_N + h2o_hi + x_hi + z_N * p_hi - z_N * mz_hi_N
    diff_lo = mass_lo_N + h2o_lo + x_lo + z_N * p_lo - z_N * mz_lo_N
    diff_NxI = (diff_hi + diff_lo)[:, None] + isotopes_I[None, :] * jnp.float32(C13_SHIFT)
    return diff_NxI / (z_N * (mz_hi_N + mz_lo_N))[:, None] * 1e6


# ---------------------------------------------------------------------------------------------
# Search state
# ---------------------------------------------------------------------------------------------


class _Rows(NamedTuple):
    """One search row per (spectrum, beam); every leaf [N, ...] so gather_rows reorders it."""

    tokens_NxT: jax.Array  # int32, generation order, pad after the last position
    prob_NxT: jax.Array  # f32 softmax probability of each token
    logit_NxT: jax.Array  # f32 logit of each token (Casanovo ranks by mean logit)
    rank_sum_N: jax.Array  # f32 sum of logits (compatible) or log-probs (default) of the tokens
    logp_sum_N: jax.Array  # f32 sum of log(clip(prob, eps, 1)): Casanovo 5's product score
    prob_sum_N: jax.Array  # f32 sum of probabilities: Casanovo 4's mean score
    mass_hi_N: jax.Array  # f32 residue mass, grid part (stop and pad weigh 0)
    mass_lo_N: jax.Array  # f32 residue mass, remainder
    n_mods_N: jax.Array  # int32 N-terminal modifications among the tokens
    n_real_N: jax.Array  # int32 leading positions Casanovo has scores for (the rest are NaN)
    alive_N: jax.Array  # bool: a live beam that may be extended


class _Best(NamedTuple):
    """The top_k kept predictions per spectrum, best first (K = top_k)."""

    score_BxK: jax.Array  # f32, -inf where none is kept yet
    tokens_BxKxT: jax.Array  # int32 generation order, without the final `$`
    prob_BxKxT: jax.Array  # f32
    length_BxK: jax.Array  # int32 positions in tokens
    matches_BxK: jax.Array  # bool


class ARSearchResult(NamedTuple):
    """Best prediction per spectrum; arrays, so a jitted search can return it.

    tokens_BxT: [B, T] int32 token ids in generation order (C->N when reversed), without the
      final `$`, pad after `length_B`. prob_BxT: [B, T] f32 probability of each of those
      tokens (Casanovo's aa_scores). score_B: [B] f32 peptide score (-inf where none).
      matches_B: [B] bool, the peptide matches the precursor (|ppm| <= tol at some isotope).
      found_B: [B] bool, a prediction was kept (Casanovo writes no PSM otherwise).
    top: with top_k > 1, the same fields for the top_k predictions of each spectrum, best
      first ([B, K, ...]; the first equals the fields above); None with top_k = 1.
    """

    tokens_BxT: jax.Array
    length_B: jax.Array
    score_B: jax.Array
    prob_BxT: jax.Array
    matches_B: jax.Array
    found_B: jax.Array
    top: ARTopK | None = None


class ARTopK(NamedTuple):
    """Casanovo's `top_match`: the K best kept predictions per spectrum, best first."""

    tokens_BxKxT: jax.Array
    length_BxK: jax.Array
    score_BxK: jax.Array
    prob_BxKxT: jax.Array
    matches_BxK: jax.Array
    found_BxK: jax.Array


@dataclasses.dataclass(frozen=True)
class PeptidePrediction:
    """One spectrum's prediction as Casanovo reports it (N->C order)."""

    peptide: str  # Casanovo notation, e.g. "+42.011PEPC+57.021K"
    tokens: tuple[str, ...]  # N->C
    score: float
    aa_scores: np.ndarray  # f32, one per generated token, N->C (before Casanovo's N-term merge)
    matches_precursor: bool
    calc_mz: float  # m/z of the peptide at the precursor charge


# ---------------------------------------------------------------------------------------------
# The search
# ---------------------------------------------------------------------------------------------


def ar_greedy(step_fn: StepFn, first_logits_BxV, cache, **kwargs) -> ARSearchResult:
    """`ar_beam_search` with one beam (Casanovo's default `n_beams: 1`)."""
    return ar_beam_search(step_fn, first_logits_BxV, cache, beam_size=1, **kwargs)


def _pick(flag, if_true, if_false):
    """`if_true if flag else if_false` for a Python bool; elementwise select for a traced one."""
    if isinstance(flag, bool):
        return if_true if flag else if_false
    return jnp.where(flag, if_true, if_false)


def ar_beam_search(
    step_fn: StepFn,
    first_logits_BxV: jax.Array,
    cache,
    *,
    precursor_mz_B,
    charge_B,
    residues: Residues,
    beam_size: int,
    max_length: int = 100,
    min_length: int | jax.Array = 6,
    reverse: bool | jax.Array = True,
    precursor_filter: bool | jax.Array = True,
    casanovo_compatible: bool | jax.Array = False,
    tolerance_ppm: float = 50.0,
    isotopes: Sequence[int] = (0, 1),
    top_k: int = 1,
) -> ARSearchResult:
    """Beam search for the best peptide of each spectrum (rules in the module docstring).

    first_logits_BxV: [B, V] logits of the first generated token. cache: pytree, leaves
      [B, ...]; it must take `max_length - 1` fed tokens. precursor_mz_B: [B] observed m/z,
      or `MzParts` from `mz_parts` (computed on the host in float64; a plain array is
      float32 inside jit, ~0.1 ppm). charge_B: [B] int. residues: the model's vocabulary
      (V = len(residues.tokens) + 2). beam_size, max_length, residues: static.
    max_length: Casanovo's `max_peptide_len`: at most this many generated tokens, `$`
      included. min_length: Casanovo's `min_peptide_len`, in tokens. reverse: the model
      generates C->N. The three rule flags are normally Python bools; traced bool scalars
      also work (one compiled search for every mode, computing both rule sets each step).
    top_k: Casanovo's `top_match`, static: keep the top_k best predictions per spectrum
      (`result.top`), as Casanovo's heap keeps every kept beam's best top_match; ties keep
      the earlier kept prediction (Casanovo draws a random tie key).
    """
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (Casanovo's top_match)")
    voc = _vocab(residues)
    batch, vocab = first_logits_BxV.shape
    if vocab != voc.stop + 1:
        raise ValueError(
            f"first_logits_BxV has vocab {vocab}, but the residue vocabulary has "
            f"{len(residues.tokens)} tokens, so V should be {voc.stop + 1} (pad, residues, $); "
            f"pass the Residues the model was built with"
        )
    if beam_size < 1 or (casanovo_compatible is True and beam_size > vocab):
        raise ValueError(
            f"beam_size={beam_size}; use 1 or more (at most V={vocab} when "
            f"casanovo_compatible: Casanovo's first step takes the top beam_size tokens)"
        )
    if max_length < 2:
        raise ValueError(f"max_length={max_length}; use 2 or more")
    s, t_len, n_rows = beam_size, max_length, batch * beam_size
    compat, filt, rev = casanovo_compatible, precursor_filter, reverse

    mass_hi_V, mass_lo_V = jnp.asarray(voc.mass_hi_V), jnp.asarray(voc.mass_lo_V)
    is_mod_V = jnp.asarray(voc.is_mod_V)
    tok_V = jnp.arange(vocab, dtype=jnp.int32)
    pos_T = jnp.arange(t_len, dtype=jnp.int32)
    isotopes_I = jnp.asarray(isotopes, jnp.float32)
    parts = precursor_mz_B if isinstance(precursor_mz_B, MzParts) else mz_parts(precursor_mz_B)
    mz_hi_N, mz_lo_N = jnp.repeat(parts.hi, s), jnp.repeat(parts.lo, s)
    z_N = jnp.repeat(jnp.asarray(charge_B).astype(jnp.float32), s)

    def rows_ppm_NxI(rows: _Rows, extra: float = 0.0):
        return _ppm_NxI(rows.mass_hi_N, rows.mass_lo_N, extra, mz_hi_N, mz_lo_N, z_N, isotopes_I)

    def token_at(tokens_NxT, pos):
        return jax.lax.dynamic_index_in_dim(tokens_NxT, jnp.maximum(pos, 0), 1, False)

    def allowed_NxV(rows: _Rows, step):
        """Tokens the default rules allow at position `step` (length = step tokens so far)."""
        stop_ok = (step > 0) & (step >= min_length)
        allowed = (tok_V != PAD) & ~is_mod_V & (tok_V != voc.stop)
        allowed = allowed[None, :] | ((tok_V == voc.stop) & stop_ok)[None, :]
        # Reversed, the modification comes last, `$` right after it; else only first.
        mod_ok_N = _pick(rev, (rows.n_mods_N == 0) & (step + 1 >= min_length), step == 0)
        mod_ok_N = jnp.broadcast_to(mod_ok_N, (n_rows,))
        allowed = allowed | (is_mod_V[None, :] & mod_ok_N[:, None])
        after_mod_N = rev & (step > 0) & is_mod_V[token_at(rows.tokens_NxT, step - 1)]
        return jnp.where(after_mod_N[:, None], (tok_V == voc.stop)[None, :], allowed)

    def advance(rows: _Rows, logits_NxV, step):
        """Fill position `step`: Casanovo's _get_topk_beams (first step: top-S tokens)."""
        logits_NxV = logits_NxV.astype(jnp.float32)
        logp_NxV = jax.nn.log_softmax(logits_NxV, axis=-1)
        count = (step + 1).astype(jnp.float32)
        first = step == 0
        if compat is not False:
            mean_NxV = (rows.rank_sum_N[:, None] + logits_NxV) / count
            # An ended row's candidates score 0, its pad 1e-8 x the nanmean of what it has.
            real_NxT = pos_T[None, :] < rows.n_real_N[:, None]
            real_mean_N = jnp.sum(jnp.where(real_NxT, rows.logit_NxT, 0.0), 1) / jnp.maximum(
                rows.n_real_N, 1
            )
            value_c = jnp.where(rows.alive_N[:, None], mean_NxV, 0.0)
            pad_N = jnp.where(rows.alive_N, mean_NxV[:, PAD], real_mean_N) * jnp.float32(1e-8)
            value_c = value_c.at[:, PAD].set(pad_N)
            # First token: top-S of the raw logits (rows past the first of each spectrum are
            # copies and sit out).
            value_c = jnp.where(
                first, jnp.where(rows.alive_N[:, None], logits_NxV, -jnp.inf), value_c
            )
        if compat is not True:
            ok_NxV = allowed_NxV(rows, step) & rows.alive_N[:, None]
            mean_logp_NxV = (rows.rank_sum_N[:, None] + logp_NxV) / count
            value_d = jnp.where(ok_NxV, mean_logp_NxV, -jnp.inf)
        if isinstance(compat, bool):
            value_NxV = value_c if compat else value_d
        else:
            value_NxV = jnp.where(compat, value_c, value_d)
        # Casanovo's candidate layout is (V S): index v * S + s.
        value_BxVS = value_NxV.reshape(batch, s, vocab).transpose(0, 2, 1).reshape(batch, -1)
        top_BxS, idx_BxS = jax.lax.top_k(value_BxVS, s)
        token_BxS, parent_BxS = idx_BxS // s, idx_BxS % s
        flat_N = (jnp.arange(batch)[:, None] * s + parent_BxS).reshape(-1)
        tok_N = token_BxS.reshape(-1)
        logit_N = logits_NxV[flat_N, tok_N]
        logp_N = logp_NxV[flat_N, tok_N]
        prob_N = jnp.exp(logp_N)
        alive_N = _pick(compat, jnp.ones((n_rows,), bool), jnp.isfinite(top_BxS.reshape(-1)))

        def put(x_NxT, v_N):  # in-place column write
            return jax.lax.dynamic_update_slice(x_NxT, v_N[:, None].astype(x_NxT.dtype), (0, step))

        rows = gather_rows(rows, parent_BxS)
        rows = _Rows(
            tokens_NxT=put(rows.tokens_NxT, tok_N),
            prob_NxT=put(rows.prob_NxT, prob_N),
            logit_NxT=put(rows.logit_NxT, logit_N),
            rank_sum_N=rows.rank_sum_N + _pick(compat, logit_N, logp_N),
            logp_sum_N=rows.logp_sum_N + jnp.log(jnp.clip(prob_N, jnp.float32(EPS), 1.0)),
            prob_sum_N=rows.prob_sum_N + prob_N,
            mass_hi_N=rows.mass_hi_N + mass_hi_V[tok_N],
            mass_lo_N=rows.mass_lo_N + mass_lo_V[tok_N],
            n_mods_N=rows.n_mods_N + is_mod_V[tok_N].astype(jnp.int32),
            # Casanovo rescored a row's positions only while it was live (else NaN).
            n_real_N=jnp.where(rows.alive_N, step + 1, rows.n_real_N),
            alive_N=alive_N,
        )
        return rows, parent_BxS

    def settle(rows: _Rows, best: _Best, step):
        """Casanovo's _finish_beams + _cache_finished_beams for the tokens at `step`."""
        tok_N = token_at(rows.tokens_NxT, step)
        is_stop = tok_N == voc.stop
        length_N = step + 1 - is_stop.astype(jnp.int32)
        ppm_NxI = rows_ppm_NxI(rows)
        fits_N = jnp.any(jnp.abs(ppm_NxI) <= tolerance_ppm, axis=1)

        # Casanovo 5: pad, a short peptide, misplaced or repeated modifications discard.
        at_nterm = _pick(
            rev,
            jnp.where(is_stop, token_at(rows.tokens_NxT, step - 1), tok_N),
            rows.tokens_NxT[:, 0],
        )
        bad_mods = (rows.n_mods_N > 1) | ((rows.n_mods_N > 0) & ~is_mod_V[at_nterm])
        discarded = (tok_N == PAD) | ((step > 0) & bad_mods) | (is_stop & (length_N < min_length))
        discarded = _pick(compat, discarded, jnp.zeros_like(discarded))
        finished = _pick(compat, is_stop, rows.alive_N & is_stop)
        live = _pick(compat, ~discarded, rows.alive_N)

        # Casanovo 4's filter: terminate a beam past the precursor for good.
        exceeds_N = jnp.all(ppm_NxI > tolerance_ppm, axis=1)
        if voc.correction < 0:
            corrected_N = jnp.all(rows_ppm_NxI(rows, voc.correction) > tolerance_ppm, axis=1)
            # Casanovo 4 always assumes it can come; the default rules while it still can.
            correctable_N = _pick(compat, True, rev & (rows.n_mods_N == 0))
            exceeds_N = jnp.where(correctable_N, corrected_N, exceeds_N)
        terminated = filt & live & ~finished & exceeds_N
        # Casanovo 4: mean probability, a missing `$` counting 0, minus 1 on a miss;
        # Casanovo 5: the product of the probabilities.
        count_N = (step + 1 + (~is_stop).astype(jnp.int32)).astype(jnp.float32)
        mean_N = rows.prob_sum_N / count_N - jnp.where(fits_N & is_stop, 0.0, 1.0)
        score_N = _pick(filt, mean_N, jnp.exp(rows.logp_sum_N))

        ended = finished | terminated
        # A position Casanovo never scored makes its score NaN: never kept here.
        keep = ended & (length_N >= min_length) & ~discarded
        keep = keep & _pick(compat, rows.n_real_N >= step + 1, True)
        rows = rows._replace(alive_N=_pick(compat, ~(ended | discarded), rows.alive_N & ~ended))

        # The top_k kept predictions per spectrum over everything Casanovo's heap ever holds:
        # the K kept so far first (they win ties), then this step's S candidates.
        cand_BxS = jnp.where(keep, score_N, -jnp.inf).reshape(batch, s)
        valid_NxT = pos_T[None, :] < length_N[:, None]
        all_score = jnp.concatenate([best.score_BxK, cand_BxS], axis=1)
        _, idx_BxK = jax.lax.top_k(all_score, top_k)  # ties: the lower index first

        def merge(old, new):
            new = new.reshape((batch, s) + new.shape[1:])
            both = jnp.concatenate([old, new], axis=1)
            idx = idx_BxK.reshape(idx_BxK.shape + (1,) * (both.ndim - 2))
            return jnp.take_along_axis(both, idx, axis=1)

        best = _Best(
            score_BxK=merge(best.score_BxK, cand_BxS.reshape(-1)),
            tokens_BxKxT=merge(best.tokens_BxKxT, jnp.where(valid_NxT, rows.tokens_NxT, PAD)),
            prob_BxKxT=merge(best.prob_BxKxT, jnp.where(valid_NxT, rows.prob_NxT, 0.0)),
            length_BxK=merge(best.length_BxK, length_N),
            matches_BxK=merge(best.matches_BxK, fits_N),
        )
        return rows, best

    zeros_N = jnp.zeros((n_rows,), jnp.float32)
    zeros_NxT = jnp.zeros((n_rows, t_len), jnp.float32)
    rows = _Rows(
        tokens_NxT=jnp.zeros((n_rows, t_len), jnp.int32),
        prob_NxT=zeros_NxT,
        logit_NxT=zeros_NxT,
        rank_sum_N=zeros_N,
        logp_sum_N=zeros_N,
        prob_sum_N=zeros_N,
        mass_hi_N=zeros_N,
        mass_lo_N=zeros_N,
        n_mods_N=jnp.zeros((n_rows,), jnp.int32),
        n_real_N=jnp.zeros((n_rows,), jnp.int32),
        alive_N=jnp.arange(n_rows) % s == 0,  # the first token comes from one row per spectrum
    )
    best = _Best(
        score_BxK=jnp.full((batch, top_k), -jnp.inf, jnp.float32),
        tokens_BxKxT=jnp.zeros((batch, top_k, t_len), jnp.int32),
        prob_BxKxT=jnp.zeros((batch, top_k, t_len), jnp.float32),
        length_BxK=jnp.zeros((batch, top_k), jnp.int32),
        matches_BxK=jnp.zeros((batch, top_k), bool),
    )

    def cond(state):
        step, rows = state[0], state[1]
        return (step < t_len) & jnp.any(rows.alive_N)

    def body(state):
        step, rows, best, cache, logits_NxV = state
        rows, parent_BxS = advance(rows, logits_NxV, step)
        rows, best = settle(rows, best, step)
        cache = gather_rows(cache, parent_BxS)

        def feed():
            logits, new_cache = step_fn(token_at(rows.tokens_NxT, step), cache)
            return logits.astype(jnp.float32), new_cache

        # The model runs only when another position follows.
        more = (step + 1 < t_len) & jnp.any(rows.alive_N)
        logits_NxV, cache = jax.lax.cond(more, feed, lambda: (logits_NxV, cache))
        return step + 1, rows, best, cache, logits_NxV

    logits_NxV = jnp.repeat(first_logits_BxV.astype(jnp.float32), s, axis=0)
    state = (jnp.int32(0), rows, best, repeat_rows(cache, s), logits_NxV)
    best = jax.lax.while_loop(cond, body, state)[2]
    found_BxK = jnp.isfinite(best.score_BxK)
    top = None
    if top_k > 1:
        top = ARTopK(
            tokens_BxKxT=best.tokens_BxKxT,
            length_BxK=best.length_BxK,
            score_BxK=best.score_BxK,
            prob_BxKxT=best.prob_BxKxT,
            matches_BxK=best.matches_BxK,
            found_BxK=found_BxK,
        )
    return ARSearchResult(
        tokens_BxT=best.tokens_BxKxT[:, 0],
        length_B=best.length_BxK[:, 0],
        score_B=best.score_BxK[:, 0],
        prob_BxT=best.prob_BxKxT[:, 0],
        matches_B=best.matches_BxK[:, 0],
        found_B=found_BxK[:, 0],
        top=top,
    )


# ---------------------------------------------------------------------------------------------
# Host side: Casanovo's detokenisation and report
# ---------------------------------------------------------------------------------------------


def to_predictions(
    result: ARSearchResult,
    *,
    residues: Residues,
    reverse: bool,
    charge_B,
) -> list[PeptidePrediction | None]:
    """Per spectrum, the prediction as Casanovo's `_get_top_peptide` reports it, or None.

    Like depthcharge's `detokenize`: pad ids are skipped and a `$` inside the tokens (which
    Casanovo-compatible search can produce, see the module doc) ends the peptide; reversed
    tokens and aa_scores are put back in N->C order. calc_mz is computed in float64 from the
    residue masses, as Casanovo's `calculate_precursor_ions`.
    """
    tokens_BxT = np.asarray(result.tokens_BxT)
    length_B = np.asarray(result.length_B)
    score_B = np.asarray(result.score_B)
    prob_BxT = np.asarray(result.prob_BxT)
    matches_B = np.asarray(result.matches_B)
    found_B = np.asarray(result.found_B)
    charge_B = np.asarray(charge_B)
    layout = TokenLayout(residues.tokens)
    out: list[PeptidePrediction | None] = []
    for b in range(tokens_BxT.shape[0]):
        if not found_B[b]:
            out.append(None)
            continue
        names = layout.names(tokens_BxT[b, : length_B[b]])
        aa_scores = prob_BxT[b, : length_B[b]].astype(np.float32)
        if reverse:
            names, aa_scores = names[::-1], aa_scores[::-1].copy()
        calc_mz = precursor_mz(residues.peptide_mass(names), int(charge_B[b])) if names else np.nan
        out.append(
            PeptidePrediction(
                peptide=residues.to_string(names),
                tokens=tuple(names),
                score=float(score_B[b]),
                aa_scores=aa_scores,
                matches_precursor=bool(matches_B[b]),
                calc_mz=float(calc_mz),
            )
        )
    return out


def to_top_predictions(
    result: ARSearchResult, *, residues: Residues, reverse: bool, charge_B
) -> list[list[PeptidePrediction]]:
    """Per spectrum, its top_k predictions best first (`result.top`; Casanovo's top_match
    PSMs), each as `to_predictions` reports one; an empty list where none was kept."""
    if result.top is None:
        best = to_predictions(result, residues=residues, reverse=reverse, charge_B=charge_B)
        return [[] if p is None else [p] for p in best]
    t = result.top
    k = np.asarray(t.score_BxK).shape[1]
    per_rank = [
        to_predictions(
            ARSearchResult(
                tokens_BxT=np.asarray(t.tokens_BxKxT)[:, r],
                length_B=np.asarray(t.length_BxK)[:, r],
                score_B=np.asarray(t.score_BxK)[:, r],
                prob_BxT=np.asarray(t.prob_BxKxT)[:, r],
                matches_B=np.asarray(t.matches_BxK)[:, r],
                found_B=np.asarray(t.found_BxK)[:, r],
            ),
            residues=residues,
            reverse=reverse,
            charge_B=charge_B,
        )
        for r in range(k)
    ]
    return [[p for p in ranks if p is not None] for ranks in zip(*per_rank)]


def merge_nterm_scores(prediction: PeptidePrediction, residues: Residues) -> np.ndarray:
    """aa_scores as Casanovo's mzTab writer stores them: when the peptide starts with an
    N-terminal modification, its score is multiplied into the first residue's and dropped
    (`Spec2Pep.on_predict_batch_end`)."""
    aa = prediction.aa_scores.copy()
    if len(aa) >= 2 and prediction.tokens and prediction.tokens[0] in residues.nterm:
        aa[1] *= aa[0]
        aa = aa[1:]
    return aa
