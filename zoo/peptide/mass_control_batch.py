"""Precise mass control for a batch of spectra: the grid DP of `zoo.peptide.mass_control` run
on all spectra at once, the exact search only where the grid cannot prove its answer.

`ctc_mass_control_batch` returns what `ctc_mass_control` returns for each spectrum, and
`ctc_decode_with_mass_batch` what `ctc_decode_with_mass` does, with the same floats and
ties: the forward pass (jitted, float64, `backend="jax"`) and the trace are the
per-spectrum ones (`_forward`, `_trace`, `_grid_dp`) with a leading spectrum axis, and the
fallback is the same function (`_fallback`), run only for the spectra the grid leaves
unproven. Spectra of one call share the mass axis, sized for the heaviest; bins only
flow towards heavier masses, so the extra bins of a lighter spectrum change none of its
own. Spectra are sorted by precursor mass and run in chunks of `chunk` so the axis stays
close to each one's and the back-pointers ([T, chunk, C, bins] bools) stay small.

`stats` (a dict, when given) counts per call: "spectra", "beam_fits" (kept the beam
search's peptide), "grid" (mass control runs), "certified" (the grid proved its answer),
"fallback" (the exact search ran) and "gave_up" (it ran out of budget: optimal=False).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from zoo.peptide.ctc import (
    CTCDecoded,
    _check_log_probs,
    _decoded,
    ctc_beam_search,
    ctc_greedy,
)
from zoo.peptide.mass_control import (
    MICRO,
    _fallback,
    _fits,
    _Grid,
    _grid_dp,
    _make_grid,
    _micro_masses,
    _residue_sum,
    _window,
    default_grid,
)
from zoo.peptide.residues import H2O


@functools.lru_cache(maxsize=16)
def _forward_fn(kb: tuple, emits_after: tuple, offset: int, n: int):
    """The jitted forward pass for one mass table, grid and axis length (see `_forward`)."""
    kb_C, emits_C = np.array(kb), np.array(emits_after)
    C = len(kb_C)
    shifts = np.where(emits_C, kb_C, 0).tolist()
    top = max(shifts)
    first_bin = kb_C + offset
    first_CxN = np.zeros((C, n), bool)  # the cell of each residue emitted first
    for c in range(1, C):
        if 0 <= first_bin[c] < n:
            first_CxN[c, first_bin[c]] = True
    emits = jnp.asarray(emits_C)[None, :, None]
    rows = jnp.arange(C)[None, :, None]

    def shifted(x_BxN, fill):  # [B, C, n]: row c is x moved up by shifts[c] bins
        x = jnp.pad(x_BxN, ((0, 0), (top, 0)), constant_values=fill)
        return jnp.stack([x[:, top - k : top - k + n] for k in shifts], 1)

    def step(carry, lp_BxC):
        score, start = carry
        v1, i1 = score.max(1), jnp.argmax(score, 1)
        masked = jnp.where(rows == i1[:, None], -jnp.inf, score)
        v2, i2 = masked.max(1), jnp.argmax(masked, 1)
        # Residue c after the best state at bin b - k_c, or after the second best when the
        # best is c itself.
        own = shifted(i1, -1) == rows
        emit = jnp.where(own, shifted(v2, -jnp.inf), shifted(v1, -jnp.inf))
        emit = jnp.where(emits, emit, -jnp.inf)
        better = first_CxN[None] & (start[:, None, None] > emit)
        emit = jnp.where(better, start[:, None, None], emit)
        stayed = score >= emit
        new = jnp.maximum(score, emit).at[:, 0].set(v1) + lp_BxC[:, :, None]
        trace = (i1.astype(jnp.int16), i2.astype(jnp.int16), stayed, better.any(2))
        return (new, start + lp_BxC[:, 0]), trace

    @jax.jit
    def forward(lp_BxTxC):
        B = lp_BxTxC.shape[0]
        init = (jnp.full((B, C, n), -jnp.inf), jnp.zeros(B))
        (score, start), trace = jax.lax.scan(step, init, jnp.swapaxes(lp_BxTxC, 0, 1))
        return score, start, trace

    return forward


def _forward_batch(lp_BxTxC: np.ndarray, g: _Grid, n: int):
    """`_forward` for B spectra on a shared axis of n bins, jitted, in float64 (traces with a
    spectrum axis: best1, best2 [T, B, n], stayed [T, B, C, n], from_start [T, B, C])."""
    B = len(lp_BxTxC)
    padded = 1 << (B - 1).bit_length()  # batch sizes 1, 2, 4, ...: few compiled shapes
    lp_BxTxC = np.concatenate([lp_BxTxC, np.repeat(lp_BxTxC[-1:], padded - B, 0)])
    fn = _forward_fn(tuple(g.kb.tolist()), tuple(g.emits_after.tolist()), g.offset, n)
    with jax.enable_x64(True):
        score, start, trace = jax.device_get(fn(jnp.asarray(lp_BxTxC, jnp.float64)))
    return score[:B], start[:B], tuple(x[:, :B] for x in trace)


def _trace_batch(spec, cells_state, cells_bin, g: _Grid, trace, mk, T):
    """`_trace` for cells of several spectra (`spec`: each cell's row in the batch)."""
    best1, best2, stayed, from_start = trace
    s, b = cells_state.copy(), cells_bin.copy()
    S = np.zeros(len(s), np.int64)
    paths = np.zeros((len(s), T), np.int64)
    alive = np.ones(len(s), bool)
    for t in range(T - 1, -1, -1):
        paths[:, t] = np.where(alive, s, 0)
        residue = s != 0
        stay = residue & stayed[t, spec, s, b]
        first = residue & ~stay & from_start[t, spec, s] & (b == g.kb[s] + g.offset)
        emitted = residue & ~stay & ~first
        S += np.where(alive & (emitted | first), mk[s], 0)
        src = np.where(emitted, b - g.kb[s], b)
        j1, j2 = best1[t, spec, src], best2[t, spec, src]
        prev = np.where(stay, s, np.where(emitted & (j1 == s), j2, j1))
        alive &= ~first
        s, b = np.where(alive, prev, 0), np.where(alive, src, b)
    return S, paths


def _grid_dp_batch(lp_BxTxC, mk, grids: list[_Grid], windows):
    """`_grid_dp` per spectrum, computed together: a list of (best, certified)."""
    B, T, C = lp_BxTxC.shape
    n = -(-max(g.n_bins for g in grids) // 256) * 256  # few compiled shapes
    score, start, trace = _forward_batch(lp_BxTxC, grids[0], n)
    spec, states, bins = [], [], []
    for i, g in enumerate(grids):
        w_lo, w_hi = windows[i]
        s_min, s_max = g.exact_range()
        may_fit = np.flatnonzero((s_min <= w_hi) & (s_max >= w_lo))
        cell_state, j = np.nonzero(np.isfinite(score[i][:, may_fit]))
        spec.append(np.full(len(j), i))
        states.append(cell_state)
        bins.append(may_fit[j])
    spec, states, bins = np.concatenate(spec), np.concatenate(states), np.concatenate(bins)
    S, paths = _trace_batch(spec, states, bins, grids[0], trace, mk, T)
    cell_score = score[spec, states, bins]
    lo = np.array([w[0] for w in windows])[spec]
    hi = np.array([w[1] for w in windows])[spec]
    fits = (S >= lo) & (S <= hi)
    bounds = np.searchsorted(spec, np.arange(B + 1))
    out = []
    for i in range(B):
        k0, k1 = bounds[i], bounds[i + 1]
        f, sc = fits[k0:k1], cell_score[k0:k1]
        best, best_score = None, -np.inf
        if f.any():
            k = int(np.where(f, sc, -np.inf).argmax())
            best, best_score = (paths[k0 + k].tolist(), int(S[k0 + k])), sc[k]
        w_lo, w_hi = windows[i]
        if w_lo <= 0 <= w_hi and start[i] > best_score:
            best, best_score = ([0] * T, 0), start[i]
        unsure = sc[~f].max(initial=-np.inf)
        out.append((best, bool(unsure <= best_score)))
    return out


def ctc_mass_control_batch(
    log_probs_BxTxC: np.ndarray,
    residue_masses: Sequence[float],
    precursor_mass_B: Sequence[float],
    tolerance: float = 0.1,
    *,
    nterm: Sequence[int] = (),
    grid: float | None = None,
    max_exact_nodes: int = 100_000,
    chunk: int = 16,
    backend: str = "auto",
    stats: dict | None = None,
) -> list[CTCDecoded | None]:
    """`zoo.peptide.mass_control.ctc_mass_control` for B spectra, with the same results.

    log_probs_BxTxC: [B, T, C] log-probabilities; precursor_mass_B: [B] neutral masses (Da).
    chunk: spectra per forward pass (memory: T x chunk x C x bins bytes of back-pointers).
    backend: "jax" runs the grid DP's forward pass jitted on `chunk` spectra at once; "numpy"
        runs `_grid_dp` spectrum by spectrum (as fast on a 2-core CPU, where XLA's float64
        loop is no faster than NumPy's, and nothing to compile); "auto": "jax" when JAX's
        default backend is an accelerator. Both give the same results.
    stats: a dict to add the counts of the module docstring to.
    """
    lp = _check_log_probs(log_probs_BxTxC, (3,), "ctc_mass_control_batch")
    B, T, C = lp.shape
    masses = np.asarray(precursor_mass_B, dtype=np.float64).reshape(-1)
    if masses.shape != (B,):
        raise ValueError(
            f"ctc_mass_control_batch: {B} spectra but precursor_mass_B has shape "
            f"{np.shape(precursor_mass_B)}; pass one neutral mass per spectrum"
        )
    mk, is_nterm = _micro_masses(residue_masses, C, nterm)
    step = int(round((grid or default_grid(residue_masses)) * MICRO))
    if step < 1:
        raise ValueError(f"ctc_mass_control_batch: grid {grid} Da is below 1e-6 Da")
    out: list[CTCDecoded | None] = [None] * B
    todo = []  # (spectrum, window, grid) of the spectra some path may fit
    for i in range(B):
        window = _window(float(masses[i]), tolerance)
        g = None if window is None else _make_grid(mk, is_nterm, T, window, step)
        if g is not None:
            todo.append((i, window, g))
    if backend == "auto":
        backend = "numpy" if jax.default_backend() == "cpu" else "jax"
    if backend not in ("jax", "numpy"):
        raise ValueError(f"ctc_mass_control_batch: backend {backend!r}; use jax, numpy or auto")
    if backend == "numpy":
        chunk = 1
    todo.sort(key=lambda x: x[2].n_bins)
    counts = dict.fromkeys(("grid", "certified", "fallback", "gave_up"), 0)
    for k in range(0, len(todo), chunk):
        part = todo[k : k + chunk]
        idx = [i for i, _, _ in part]
        if backend == "numpy":
            results = [_grid_dp(lp[i], mk, g, window) for i, window, g in part]
        else:
            grids, windows = [g for *_, g in part], [w for _, w, _ in part]
            results = _grid_dp_batch(lp[idx], mk, grids, windows)
        counts["grid"] += len(part)
        for (i, window, g), (best, optimal) in zip(part, results):
            counts["certified"] += optimal
            if not optimal:
                counts["fallback"] += 1
                best, optimal = _fallback(lp[i], mk, is_nterm, g, window, best, max_exact_nodes)
                counts["gave_up"] += not optimal
            if best is not None:
                path, S = best
                out[i] = _decoded(
                    lp[i],
                    path,
                    0,
                    mass=S / MICRO + H2O,
                    fits=True,
                    optimal=optimal,
                    source="mass_control",
                )
    if stats is not None:
        for key, value in counts.items():
            stats[key] = stats.get(key, 0) + value
    return out


def ctc_decode_with_mass_batch(
    log_probs_BxTxC: np.ndarray,
    residue_masses: Sequence[float],
    precursor_mass_B: Sequence[float],
    *,
    beam: int = 5,
    tolerance: float = 0.1,
    nterm: Sequence[int] = (),
    grid: float | None = None,
    backend: str = "auto",
    stats: dict | None = None,
) -> list[CTCDecoded]:
    """`zoo.peptide.mass_control.ctc_decode_with_mass` for B spectra, with the same results:
    one batched CTC beam search, then batched mass control for the peptides that miss."""
    lp = _check_log_probs(log_probs_BxTxC, (3,), "ctc_decode_with_mass_batch")
    B = lp.shape[0]
    masses = np.asarray(precursor_mass_B, dtype=np.float64).reshape(-1)
    if masses.shape != (B,):
        raise ValueError(
            f"ctc_decode_with_mass_batch: {B} spectra but precursor_mass_B has shape "
            f"{np.shape(precursor_mass_B)}; pass one neutral mass per spectrum"
        )
    beams = ctc_beam_search(lp, beam, top_k=1)
    out, missed = [], []
    for i, found in enumerate(beams):
        top = found[0] if found else ctc_greedy(lp[i : i + 1])[0]
        S = _residue_sum(top.tokens, residue_masses)
        fits = _fits(S, float(masses[i]), tolerance)
        out.append(dataclasses.replace(top, mass=S / MICRO + H2O, fits=fits))
        if not fits:
            missed.append(i)
    if stats is not None:
        stats["spectra"] = stats.get("spectra", 0) + B
        stats["beam_fits"] = stats.get("beam_fits", 0) + B - len(missed)
    if missed:
        controlled = ctc_mass_control_batch(
            lp[missed], residue_masses, masses[missed], tolerance, nterm=nterm, grid=grid,
            backend=backend, stats=stats,
        )  # fmt: skip
        for i, d in zip(missed, controlled):
            if d is not None:
                out[i] = d
    return out
