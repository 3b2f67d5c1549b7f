"""Precise mass control (PMC) for CTC peptide decoding, and PrimeNovo's decoding policy.

`ctc_mass_control` finds the most probable CTC path (max over paths, Viterbi-style, as
PrimeNovo's PMC) whose collapsed peptide has a neutral mass (residue masses + H2O) within
`tolerance` Da of the precursor's neutral mass M. `ctc_decode_with_mass` is PrimeNovo's
policy around it: beam search first; keep its best peptide when it fits, else run PMC.

How it differs from PrimeNovo's PMC (BEAM-Labs/denovo, `PrimeNovo` `mass_con.py`, as
summarised in the project's reference notes): PrimeNovo runs a CUDA DP over a 1-Da mass grid
with log-probs clamped at -20 and H2O = 18.01, so its mass test is only as fine as its grid.
This one runs on the CPU with exact log-probabilities, checks the exact mass of what it
returns (a returned path always fits), and proves the path is the most probable fitting one
(`optimal=True`) or says it could not.

Masses are integers in micro-dalton (Casanovo's table is given to 1e-6 Da, so this is exact);
a peptide "fits" when |S * 1e-6 + H2O - M| <= tolerance for its residue-mass sum S.

1. Grid DP (`_forward`, `_grid_dp`). Cells (slot t, state, mass bin). State = the class at
   slot t: 0 = a blank after some residue, c = residue c; the all-blank prefix is one more
   cell. A bin K is a sum of per-residue rounded masses round(m / grid). Per slot, residue
   state c is reached by repeating c (no new residue), by emitting c after any other state
   (from bin K - k_c), or as the first residue; N-terminal classes (`nterm`) only first.
   Each cell keeps its best path. The default grid is ~1.00044 Da (`default_grid`): peptide
   masses follow the mass-defect line, so every residue lies within 0.04 Da of a whole
   number of such bins, as close as on a 0.1 Da grid with a tenth of the bins.
2. Guarantee. Rounding mixes paths of slightly different exact mass in one bin, so a bin's
   best path may miss the window while a worse path of the same bin fits. The exact mass of
   every returned path is checked, so a returned path always fits. To prove it is also the
   best, each bin carries the range of exact masses any residue composition landing there
   can have (log-prob independent, cached). Bins whose range misses the window hold no
   fitting path; if no bin whose range meets the window has a non-fitting best path scoring
   above the answer, the answer is optimal (`optimal=True`), and "no fitting path" is
   proven when no such bin is reachable.
3. Exact fallback (`_exact_search`), when the proof fails. The same search with cells keyed
   by exact mass (nothing rounded), pruned with an upper bound: the best score of the
   remaining slots over the mass bins that could still bring the peptide into the window
   (`_suffix_bound`, a backward grid DP). It is exact; it gives up after `max_exact_nodes`
   cells and then returns its best fitting path so far with `optimal=False`: the better of
   the grid's and that of a beam-limited run of the same search (256 cells per slot, by
   score plus bound), which also runs first to supply the pruning threshold. On confident
   posteriors the fallback is rare; on near-uniform ones it runs for ~10% of spectra and
   gives up for a few percent.

Cost per spectrum (T = 40, C = 28, 2-core CPU): ~40 ms typical, ~1 s worst case with the
default fallback budget.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from zoo.peptide.ctc import CTCDecoded, _check_log_probs, _decoded, ctc_beam_search, ctc_greedy
from zoo.peptide.residues import H2O

MICRO = 1_000_000  # integer mass units per Da


# --- masses and the tolerance window ---------------------------------------------------------
def _micro_masses(residue_masses: Sequence[float], C: int, nterm: Sequence[int]):
    masses = np.asarray(residue_masses, dtype=np.float64)
    if masses.shape != (C,):
        raise ValueError(
            f"ctc_mass_control: residue_masses has shape {masses.shape}, expected ({C},): one "
            f"mass per class of log_probs, 0 for the blank (class 0)"
        )
    mk = np.rint(masses * MICRO).astype(np.int64)
    mk[0] = 0
    is_nterm = np.zeros(C, dtype=bool)
    for c in nterm:
        if not 1 <= c < C:
            raise ValueError(f"ctc_mass_control: nterm class {c} is not a residue class 1..{C - 1}")
        is_nterm[c] = True
    bad = [c for c in range(1, C) if not is_nterm[c] and mk[c] <= 0]
    if bad:
        raise ValueError(
            f"ctc_mass_control: classes {bad} have mass <= 0 but are not N-terminal "
            f"modifications; pass them in `nterm` (they may only come first) or fix the masses"
        )
    return mk, is_nterm


def _residue_sum(tokens: Sequence[int], residue_masses: Sequence[float]) -> int:
    mk = np.rint(np.asarray(residue_masses, dtype=np.float64) * MICRO).astype(np.int64)
    return int(sum(int(mk[c]) for c in tokens))


def peptide_mass(tokens: Sequence[int], residue_masses: Sequence[float]) -> float:
    """Neutral mass (Da) of a peptide of class ids, summed in micro-dalton as mass control
    does: sum(round(m * 1e6)) * 1e-6 + H2O."""
    return _residue_sum(tokens, residue_masses) / MICRO + H2O


def fits_precursor(
    tokens: Sequence[int],
    residue_masses: Sequence[float],
    precursor_mass: float,
    tolerance: float = 0.1,
) -> bool:
    """Whether a peptide's neutral mass is within `tolerance` Da of the precursor's, exactly
    as mass control decides it."""
    return _fits(_residue_sum(tokens, residue_masses), float(precursor_mass), tolerance)


def _fits(S: int, precursor_mass: float, tolerance: float) -> bool:
    return abs(S / MICRO + H2O - precursor_mass) <= tolerance


def _window(precursor_mass: float, tolerance: float) -> tuple[int, int] | None:
    """[lo, hi]: the residue-mass sums S (micro-Da) that fit, or None if none does."""
    centre = (precursor_mass - H2O) * MICRO
    lo, hi = math.ceil(centre - tolerance * MICRO), math.floor(centre + tolerance * MICRO)
    # Settle float rounding at the edges with the predicate itself.
    while _fits(lo - 1, precursor_mass, tolerance):
        lo -= 1
    while lo <= hi and not _fits(lo, precursor_mass, tolerance):
        lo += 1
    while _fits(hi + 1, precursor_mass, tolerance):
        hi += 1
    while hi >= lo and not _fits(hi, precursor_mass, tolerance):
        hi -= 1
    return (lo, hi) if lo <= hi else None


# --- the mass grid ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Grid:
    """The mass axis of the dynamic programs. Bin b holds the paths whose per-residue rounded
    masses sum to K = b - offset (K in units of `step` micro-Da); their exact residue-mass
    sums S lie in [step * K + lo[b], step * K + hi[b]] (lo = inf: no composition lands there)."""

    step: int
    kb: np.ndarray  # [C] int64: bins per class, round(mass / step); 0 for the blank
    emits_after: np.ndarray  # [C] bool: residue classes that may follow another residue
    offset: int
    n_bins: int
    lo: np.ndarray  # [n_bins] float64
    hi: np.ndarray

    def exact_range(self) -> tuple[np.ndarray, np.ndarray]:
        """[n_bins] min and max exact residue-mass sum (micro-Da) per bin."""
        K = self.step * (np.arange(self.n_bins) - self.offset)
        return K + self.lo, K + self.hi


_BOUNDS_CACHE: dict = {}
_STEP_CACHE: dict = {}


def default_grid(residue_masses: Sequence[float]) -> float:
    """The bin width (Da) near 1 Da that puts every residue mass closest to a whole number of
    bins: peptide masses grow by ~1.0005 Da per nominal dalton (the mass defect), so with
    Casanovo's table 1.00044 Da leaves every residue within 0.04 Da of a bin multiple, as
    close as a 0.1-Da grid does, with a tenth of the bins."""
    mk = np.rint(np.asarray(residue_masses, dtype=np.float64)[1:] * MICRO).astype(np.int64)
    key = mk.tobytes()
    if key not in _STEP_CACHE:
        steps = np.arange(980_000, 1_020_001, 10)  # micro-Da
        dev = mk[None, :] - steps[:, None] * np.rint(mk[None, :] / steps[:, None])
        _STEP_CACHE[key] = int(steps[np.abs(dev).max(1).argmin()]) / MICRO
    return _STEP_CACHE[key]


def _make_grid(mk, is_nterm, T, window, step) -> _Grid | None:
    C = len(mk)
    kb = np.rint(mk / step).astype(np.int64)
    kb[0] = 0
    dev = (mk - step * kb).astype(np.float64)  # exact - step * bins, per class
    emits_after = (np.arange(C) >= 1) & ~is_nterm
    if (kb[emits_after] < 1).any():
        raise ValueError(
            f"ctc_mass_control: grid {step / MICRO} Da is coarser than twice the lightest "
            f"residue; use a finer grid"
        )
    offset = -min(0, int(kb[1:].min())) if C > 1 else 0
    # Paths heavier than the window never come back (residues after the first weigh > 0), so
    # the axis ends where even the lightest exact mass a bin can hold is too heavy.
    k_max = int((window[1] - T * min(0.0, float(dev.min()))) // step)
    n_bins = k_max + offset + 1
    if n_bins <= 0:
        return None
    if T * C * n_bins > 300_000_000:
        raise ValueError(
            f"ctc_mass_control: a {step / MICRO} Da grid needs {n_bins} mass bins for "
            f"{T} slots x {C} classes (over 300 MB of back-pointers); use a coarser grid or "
            f"the default"
        )
    # Exact-mass ranges per bin over every composition of <= T residues (N-terminal classes
    # only first): independent of the log-probs, so computed once per mass table and cached.
    key = (T, mk.tobytes(), is_nterm.tobytes(), step)
    cached = _BOUNDS_CACHE.get(key)
    if cached is None or len(cached[0]) < n_bins:
        size = int(n_bins * 1.25) + 1  # headroom for the next, heavier precursor
        lo, hi = np.full(size, np.inf), np.full(size, -np.inf)
        for _ in range(T):
            new_lo, new_hi = lo.copy(), hi.copy()
            for c in np.flatnonzero(emits_after):
                k = int(kb[c])
                if k < size:
                    np.minimum(new_lo[k:], lo[: size - k] + dev[c], out=new_lo[k:])
                    np.maximum(new_hi[k:], hi[: size - k] + dev[c], out=new_hi[k:])
            for c in range(1, C):  # the first residue
                j = int(kb[c]) + offset
                if 0 <= j < size:
                    new_lo[j], new_hi[j] = min(new_lo[j], dev[c]), max(new_hi[j], dev[c])
            lo, hi = new_lo, new_hi
        if 0 <= offset < size:  # the empty peptide
            lo[offset], hi[offset] = min(lo[offset], 0.0), max(hi[offset], 0.0)
        if len(_BOUNDS_CACHE) > 8:
            _BOUNDS_CACHE.clear()
        _BOUNDS_CACHE[key] = cached = (lo, hi)
    return _Grid(step, kb, emits_after, offset, n_bins, cached[0][:n_bins], cached[1][:n_bins])


def _top2(score_CxN: np.ndarray):
    """Per column: best value and its (first) row, second best and its row."""
    rows = np.arange(score_CxN.shape[0])[:, None]
    cols = np.arange(score_CxN.shape[1])
    v1 = score_CxN.max(0)
    i1 = np.where(score_CxN == v1, rows, score_CxN.shape[0]).min(0)
    masked = score_CxN.copy()
    masked[i1, cols] = -np.inf
    v2 = masked.max(0)
    i2 = np.where(masked == v2, rows, score_CxN.shape[0]).min(0)
    return v1, i1, v2, i2


def _shift_rows(values_N: np.ndarray, shifts_C: np.ndarray) -> np.ndarray:
    """[C, N]: row c is `values_N` moved up by shifts_C[c] >= 0 bins, -inf shifted in."""
    n, top = len(values_N), int(shifts_C.max(initial=0))
    padded = np.concatenate([np.full(top, -np.inf), values_N])
    return sliding_window_view(padded, n)[top - shifts_C]


# --- forward dynamic program -----------------------------------------------------------------
def _forward(lp, g: _Grid):
    """Best-path scores per (slot, state, bin) with back-pointers (see the module docstring).
    Returns (final scores [C, n_bins], final all-blank score, trace) where trace holds, per
    slot, the best and second-best previous state per bin, whether each residue cell kept
    its state (a repeat), and which residues were emitted first (from the all-blank prefix)."""
    T, C = lp.shape
    n = g.n_bins
    bins = np.arange(n)
    shifts = np.where(g.emits_after, g.kb, 0)
    first_bin = g.kb + g.offset
    first = np.flatnonzero((np.arange(C) >= 1) & (first_bin >= 0) & (first_bin < n))
    score = np.full((C, n), -np.inf)
    start = 0.0
    best1 = np.zeros((T, n), np.int16)
    best2 = np.zeros((T, n), np.int16)
    stayed = np.zeros((T, C, n), bool)
    from_start = np.zeros((T, C), bool)
    for t in range(T):
        v1, i1, v2, i2 = _top2(score)
        best1[t], best2[t] = i1, i2
        emit = _shift_rows(v1, shifts)  # emit residue c after the best state at bin b - k_c ...
        own = g.emits_after[i1]  # ... unless that state is c itself: then the second best
        src = bins[own]
        c, dst = i1[own], src + g.kb[i1[own]]
        inside = dst < n
        emit[c[inside], dst[inside]] = v2[src[inside]]
        emit[~g.emits_after] = -np.inf
        better = start > emit[first, first_bin[first]]
        emit[first[better], first_bin[first[better]]] = start
        from_start[t, first[better]] = True
        stayed[t] = score >= emit
        np.maximum(score, emit, out=emit)
        emit[0] = v1  # a blank after anything
        emit += lp[t][:, None]
        score, start = emit, start + lp[t, 0]
    return score, start, (best1, best2, stayed, from_start)


def _trace(cells_state, cells_bin, g: _Grid, trace, mk, T):
    """Back-pointers followed from final cells, all at once: (exact residue-mass sum S of
    each cell's best path, its paths [n, T])."""
    best1, best2, stayed, from_start = trace
    s, b = cells_state.copy(), cells_bin.copy()
    S = np.zeros(len(s), np.int64)
    paths = np.zeros((len(s), T), np.int64)
    alive = np.ones(len(s), bool)  # not yet back at the all-blank prefix
    for t in range(T - 1, -1, -1):
        paths[:, t] = np.where(alive, s, 0)
        residue = s != 0
        stay = residue & stayed[t, s, b]
        first = residue & ~stay & from_start[t, s] & (b == g.kb[s] + g.offset)
        emitted = residue & ~stay & ~first
        S += np.where(alive & (emitted | first), mk[s], 0)
        src = np.where(emitted, b - g.kb[s], b)
        j1, j2 = best1[t, src], best2[t, src]
        prev = np.where(stay, s, np.where(emitted & (j1 == s), j2, j1))
        alive &= ~first
        s, b = np.where(alive, prev, 0), np.where(alive, src, b)
    return S, paths


def _grid_dp(lp, mk, g: _Grid, window):
    """Returns (best, certified): best = (path, S) of the most probable fitting path among
    the cells' best paths, or None; certified = no other path can beat it (or, when best is
    None, no path fits at all)."""
    T, C = lp.shape
    w_lo, w_hi = window
    score, start, trace = _forward(lp, g)
    s_min, s_max = g.exact_range()
    may_fit = np.flatnonzero((s_min <= w_hi) & (s_max >= w_lo))
    cells = np.isfinite(score[:, may_fit])
    cell_state, j = np.nonzero(cells)
    cell_bin = may_fit[j]
    S, paths = _trace(cell_state, cell_bin, g, trace, mk, T)
    cell_score = score[cell_state, cell_bin]
    fits = (S >= w_lo) & (S <= w_hi)
    best, best_score = None, -np.inf
    if fits.any():
        i = int(np.where(fits, cell_score, -np.inf).argmax())
        best, best_score = (paths[i].tolist(), int(S[i])), cell_score[i]
    if w_lo <= 0 <= w_hi and start > best_score:
        best, best_score = ([0] * T, 0), start
    unsure = cell_score[~fits].max(initial=-np.inf)
    return best, bool(unsure <= best_score)


# --- exact search (fallback) -----------------------------------------------------------------
def _suffix_bound(lp, g: _Grid, is_nterm):
    """[T, n_bins]: per slot t and bin Ks, an upper bound on the score of slots t+1..T-1
    given that the residues they emit sum to Ks bins (max over the state at slot t): the
    backward twin of `_forward`, keeping scores only."""
    T, C = lp.shape
    n = g.n_bins
    bound = np.full((T, n), -np.inf)
    suffix = np.full((C, n), -np.inf)  # best suffix after slot t, per state at slot t
    suffix[:, g.offset] = 0.0
    start = np.full(n, -np.inf)  # the same from the all-blank state
    start[g.offset] = 0.0
    bound[T - 1] = np.maximum(suffix.max(0), start)
    for t in range(T - 2, -1, -1):
        # Slot t+1 emits c' (bin + k_c', N-terminal c' only after the all-blank state),
        # repeats the state's residue, or is blank.
        emit = np.full((C, n), -np.inf)
        for c in range(1, C):
            k = int(g.kb[c])
            if 0 <= k < n:
                emit[c, k:] = suffix[c, : n - k]
            elif -n < k < 0:
                emit[c, :k] = suffix[c, -k:]
        emit += lp[t + 1][:, None]
        allowed = emit.copy()
        allowed[is_nterm] = -np.inf
        v1, i1, v2, _ = _top2(allowed)
        new = np.where(i1[None, :] == np.arange(C)[:, None], v2, v1)  # emit c' != own state
        np.maximum(new, suffix + lp[t + 1][:, None], out=new)  # repeat own residue
        new[0] = np.maximum(v1, suffix[0] + lp[t + 1, 0])
        np.maximum(new[1:], (suffix[0] + lp[t + 1, 0])[None, :], out=new[1:])  # blank
        start = np.maximum(start + lp[t + 1, 0], emit.max(0))
        suffix = new
        bound[t] = np.maximum(suffix.max(0), start)
    return bound


def _exact_search(
    lp, mk, is_nterm, g: _Grid, window, lower_bound, max_nodes, beam=None, bound=None
):
    """The most probable fitting path with cells keyed by exact mass (no rounding): (path, S),
    None when no path fits, or "budget" when it needs more than `max_nodes` cells. Cells
    whose score plus `_suffix_bound` over the mass bins that could still fit stays below
    `lower_bound` (the score of a fitting path already known) are pruned. `max_nodes` caps
    the cells kept over all slots. With `beam`, only the `beam` cells of highest score plus
    bound survive each slot: no longer exact, a quick way to some good fitting path."""
    T, C = lp.shape
    w_lo, w_hi = window
    START = C
    bound = _suffix_bound(lp, g, is_nterm) if bound is None else bound
    s_min, s_max = g.exact_range()
    finite = np.isfinite(g.lo)
    dev_lo, dev_hi = g.lo[finite].min(), g.hi[finite].max()
    width = int((w_hi - w_lo + dev_hi - dev_lo) // g.step) + 3
    slack = 1e-9 * (1.0 + abs(lower_bound)) if np.isfinite(lower_bound) else 0.0
    # Max of the bound over every run of `width` bins: a looser, one-lookup bound first.
    padded = np.full((T, g.n_bins + 2 * width), -np.inf)
    padded[:, width : width + g.n_bins] = bound
    runs = sliding_window_view(padded, width, axis=1).max(-1)

    def first_bin(S):  # lowest suffix bin that could bring S into the window
        return np.floor((w_lo - S - dev_hi) / g.step).astype(np.int64) + g.offset

    def best_suffix_loose(t, S):
        return runs[t][np.clip(first_bin(S) + width, 0, runs.shape[1] - 1)]

    def best_suffix(t, S):
        # Suffix bins whose exact range meets the window minus S; max of the bound there.
        idx = first_bin(S)[:, None] + np.arange(width)[None, :]
        ok = (idx >= 0) & (idx < g.n_bins)
        idx = np.clip(idx, 0, g.n_bins - 1)
        ok &= (s_min[idx] <= (w_hi - S)[:, None]) & (s_max[idx] >= (w_lo - S)[:, None])
        return np.where(ok, bound[t][idx], -np.inf).max(1)

    state = np.array([START])
    mass = np.array([0], np.int64)
    score = np.array([0.0])
    history = []  # per slot: (state, parent index) of the surviving cells
    visited = 0
    classes = np.arange(C)
    for t in range(T):
        n = len(state)
        s_new = np.broadcast_to(classes, (n, C))
        prev = np.broadcast_to(state[:, None], (n, C))
        emits = (s_new != 0) & (s_new != prev)
        m_new = mass[:, None] + np.where(emits, mk[None, :], 0)
        s_new = np.where((prev == START) & (s_new == 0), START, s_new)
        ok = ~(is_nterm[None, :] & emits & (prev != START))  # N-terminal: first only
        sc = score[:, None] + lp[t][None, :]
        parent = np.broadcast_to(np.arange(n)[:, None], (n, C))[ok]
        s_new, m_new, sc = s_new[ok], m_new[ok], sc[ok]
        for bound_fn in (best_suffix_loose, None, best_suffix):
            if bound_fn is None:  # keep the best cell per (state, exact mass)
                order = np.lexsort((-sc, m_new, s_new))
                s_new, m_new, sc, parent = s_new[order], m_new[order], sc[order], parent[order]
                keep = np.ones(len(s_new), bool)
                keep[1:] = (s_new[1:] != s_new[:-1]) | (m_new[1:] != m_new[:-1])
            else:
                reach = sc + bound_fn(t, m_new)
                keep = np.isfinite(reach) & (reach >= lower_bound - slack)
            s_new, m_new, sc, parent = s_new[keep], m_new[keep], sc[keep], parent[keep]
        if beam is not None and len(s_new) > beam:  # heuristic mode: the most promising cells
            top = np.argpartition(-reach[keep], beam)[:beam]
            s_new, m_new, sc, parent = s_new[top], m_new[top], sc[top], parent[top]
        state, mass, score = s_new, m_new, sc
        history.append((state, parent))
        visited += len(state)
        if visited > max_nodes:
            return "budget"
        if len(state) == 0:
            return None
    fits = (mass >= w_lo) & (mass <= w_hi)
    if not fits.any():
        return None
    i = int(np.where(fits, score, -np.inf).argmax())
    S = int(mass[i])
    path = [0] * T
    for t in range(T - 1, -1, -1):
        s, parent = history[t]
        path[t] = 0 if s[i] == START else int(s[i])
        i = int(parent[i])
    return path, S


def _fallback(lp, mk, is_nterm, g: _Grid, window, best, max_exact_nodes):
    """The exact search where the grid's proof failed (module docstring, 3): (best, optimal),
    best = (path, S) or None."""

    def path_score(found):
        return -np.inf if found is None else float(sum(lp[t, c] for t, c in enumerate(found[0])))

    bound = _suffix_bound(lp, g, is_nterm)  # shared by both runs
    # A beam-limited run of the exact search: a good fitting path to prune with.
    found = _exact_search(
        lp, mk, is_nterm, g, window, -np.inf, max_exact_nodes, beam=256, bound=bound
    )
    if found not in (None, "budget") and path_score(found) > path_score(best):
        best = found
    exact = _exact_search(
        lp, mk, is_nterm, g, window, path_score(best), max_exact_nodes, bound=bound
    )
    if exact != "budget" and (exact is not None or best is None):
        return exact, True
    return best, False


# --- public API ------------------------------------------------------------------------------
def ctc_mass_control(
    log_probs_TxC: np.ndarray,
    residue_masses: Sequence[float],
    precursor_mass: float,
    tolerance: float = 0.1,
    *,
    nterm: Sequence[int] = (),
    grid: float | None = None,
    max_exact_nodes: int = 100_000,
) -> CTCDecoded | None:
    """The most probable CTC path whose peptide fits the precursor mass (PrimeNovo's PMC).

    log_probs_TxC: [T, C] log-probabilities; class 0 is the blank.
    residue_masses: [C] mass (Da) per class; the blank's is ignored (`ctc_mass_table` builds
        it from a `Residues`).
    precursor_mass: the precursor's neutral mass M (Da), `zoo.peptide.residues.neutral_mass`.
    tolerance: a peptide fits when |residue masses + H2O - M| <= tolerance (Da).
    nterm: classes that may only be the first residue (N-terminal modifications); classes
        with mass <= 0 must be among them.
    grid: mass-bin width (Da) of the dynamic program: smaller is slower but settles more
        spectra without the exact fallback. It never changes the answer's correctness.
    max_exact_nodes: work limit of the exact fallback (cells over all slots; about 2 us
        each).
    Returns the path as CTCDecoded (source "mass_control", fits=True, `optimal` as proven),
    or None when no path fits. None is proven except when the exact search ran out of
    budget and its beam-limited variant found no fitting path either (not seen in tests).
    """
    lp = _check_log_probs(log_probs_TxC, (2,), "ctc_mass_control")
    T, C = lp.shape
    mk, is_nterm = _micro_masses(residue_masses, C, nterm)
    window = _window(float(precursor_mass), tolerance)
    if window is None:
        return None
    step = int(round((grid or default_grid(residue_masses)) * MICRO))
    if step < 1:
        raise ValueError(f"ctc_mass_control: grid {grid} Da is below 1e-6 Da")
    g = _make_grid(mk, is_nterm, T, window, step)
    if g is None:  # the window lies below every reachable mass
        return None
    best, optimal = _grid_dp(lp, mk, g, window)
    if not optimal:
        best, optimal = _fallback(lp, mk, is_nterm, g, window, best, max_exact_nodes)
    if best is None:
        return None
    path, S = best
    return _decoded(
        lp, path, 0, mass=S / MICRO + H2O, fits=True, optimal=optimal, source="mass_control"
    )


def ctc_decode_with_mass(
    log_probs: np.ndarray,
    residue_masses: Sequence[float],
    precursor_mass: float | Sequence[float],
    *,
    beam: int = 5,
    tolerance: float = 0.1,
    nterm: Sequence[int] = (),
    grid: float | None = None,
) -> CTCDecoded | list[CTCDecoded]:
    """PrimeNovo's decoding: CTC beam search; its best peptide is kept when it fits the
    precursor (within `tolerance` Da), otherwise precise mass control replaces it. When
    nothing fits, the beam search's peptide is returned with fits=False.

    log_probs: [T, C] with a scalar precursor_mass, or [B, T, C] with [B] masses (neutral,
        Da). Returns one CTCDecoded, or a list of B (one spectrum at a time here;
        `zoo.peptide.mass_control_batch.ctc_decode_with_mass_batch` does all at once, equally).
    """
    lp = _check_log_probs(log_probs, (2, 3), "ctc_decode_with_mass")
    if lp.ndim == 3:
        masses = np.asarray(precursor_mass, dtype=np.float64).reshape(-1)
        if masses.shape != (lp.shape[0],):
            raise ValueError(
                f"ctc_decode_with_mass: {lp.shape[0]} spectra but precursor_mass has shape "
                f"{np.shape(precursor_mass)}; pass one neutral mass per spectrum"
            )
        return [
            ctc_decode_with_mass(
                lp[b], residue_masses, float(m), beam=beam, tolerance=tolerance, nterm=nterm,
                grid=grid,
            )
            for b, m in enumerate(masses)
        ]  # fmt: skip
    beams = ctc_beam_search(lp, beam)
    top = beams[0] if beams else ctc_greedy(lp[None])[0]
    S = _residue_sum(top.tokens, residue_masses)
    if _fits(S, float(precursor_mass), tolerance):
        return dataclasses.replace(top, mass=S / MICRO + H2O, fits=True)
    controlled = ctc_mass_control(
        lp, residue_masses, float(precursor_mass), tolerance, nterm=nterm, grid=grid
    )
    if controlled is not None:
        return controlled
    return dataclasses.replace(top, mass=S / MICRO + H2O, fits=False)
