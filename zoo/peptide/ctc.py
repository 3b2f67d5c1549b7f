"""CTC decoding for the NAR peptide decoder: greedy, prefix beam search, precise mass control.

The NAR decoder emits one distribution over C classes per slot (T = 40 slots; class 0 is the
CTC blank, 1..n the residues). A *path* is one class per slot; it *collapses* to a peptide
by merging repeated classes and then dropping blanks (`A A _ A G` -> `A A G`). Everything
here is NumPy on the host: decoding is a small search over [T, C] log-probabilities, run
after one model call, and needs no accelerator.

* `ctc_greedy`: the most probable path (argmax per slot), collapsed.
* `ctc_beam_search`: CTC prefix beam search. It ranks collapsed peptides by their total
  probability, summed over all paths that collapse to them, tracking for every prefix the
  probability of paths ending in a blank and in its last residue (Graves 2012, ch. 7; the
  algorithm behind ctcdecode, which PrimeNovo uses). It searches a whole batch with array
  operations; `ctc_beam_search_reference` is the same search one spectrum at a time.
* `zoo.peptide.mass_control.ctc_mass_control`: the most probable path whose peptide mass fits the
  precursor, PrimeNovo's precise mass control (PMC).
* `zoo.peptide.mass_control.ctc_decode_with_mass`: PrimeNovo's policy combining the two: keep the
  beam search's best peptide when its mass is within tolerance of the precursor, otherwise
  run PMC.

Per-residue scores (for mzTab): each residue's score is the largest probability among the
slots that emit it in the path (the most probable alignment, for beam search), so a residue
the model commits to in one slot scores high even when neighbouring slots hesitate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from zoo.peptide.model import TokenLayout
from zoo.peptide.residues import CASANOVO, Residues

BLANK = TokenLayout.BLANK  # the CTC blank class of the NAR outputs


@dataclasses.dataclass(frozen=True)
class CTCDecoded:
    """One decoded peptide.

    tokens: collapsed class ids (no blanks), N- to C-terminal as the model emits them.
    log_prob: greedy and mass control: the log-probability of `path`; beam search: of the
        peptide (summed over all paths that collapse to it).
    token_scores: per token, the largest probability among the slots of `path` emitting it.
    path: [T] class per slot: the decoded path (beam search: the most probable alignment).
    mass: neutral peptide mass (residues + H2O, Da) when residue masses were given.
    fits: whether `mass` is within tolerance of the precursor (when one was given).
    optimal: mass control only: True when proven the most probable fitting path.
    source: "greedy", "beam" or "mass_control": which search produced it.
    """

    tokens: tuple[int, ...]
    log_prob: float
    token_scores: tuple[float, ...]
    path: tuple[int, ...]
    mass: float | None = None
    fits: bool | None = None
    optimal: bool | None = None
    source: str = ""


def collapse(path: Sequence[int], blank: int = BLANK) -> list[int]:
    """The peptide a CTC path spells: repeats merged, then blanks dropped."""
    out, prev = [], None
    for c in path:
        c = int(c)
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def token_scores(log_probs_TxC: np.ndarray, path: Sequence[int], blank: int = BLANK) -> list[float]:
    """Per emitted token of `path`, the largest probability among the slots emitting it."""
    scores: list[float] = []
    prev = None
    for t, c in enumerate(path):
        c = int(c)
        p = math.exp(float(log_probs_TxC[t, c]))
        if c != blank and c == prev:
            scores[-1] = max(scores[-1], p)
        elif c != blank:
            scores.append(p)
        prev = c
    return scores


def _decoded(log_probs_TxC, path, blank, log_prob=None, **fields) -> CTCDecoded:
    path = [int(c) for c in path]
    if log_prob is None:
        log_prob = float(sum(log_probs_TxC[t, c] for t, c in enumerate(path)))
    return CTCDecoded(
        tokens=tuple(collapse(path, blank)),
        log_prob=float(log_prob),
        token_scores=tuple(token_scores(log_probs_TxC, path, blank)),
        path=tuple(path),
        **fields,
    )


def _check_log_probs(log_probs: np.ndarray, ndim: tuple[int, ...], name: str) -> np.ndarray:
    log_probs = np.asarray(log_probs, dtype=np.float64)
    if log_probs.ndim not in ndim:
        shapes = " or ".join({2: "[T, C]", 3: "[B, T, C]"}[n] for n in ndim)
        raise ValueError(f"{name}: log_probs has shape {log_probs.shape}, expected {shapes}")
    if np.isnan(log_probs).any():
        raise ValueError(f"{name}: log_probs contains NaN")
    return log_probs


# --- greedy ----------------------------------------------------------------------------------
def ctc_greedy(log_probs_BxTxC: np.ndarray, blank: int = BLANK) -> list[CTCDecoded]:
    """Best path decoding: per slot the most probable class, collapsed.

    log_probs_BxTxC: [B, T, C] log-probabilities (log_softmax of the NAR logits).
    Returns one CTCDecoded per spectrum; `log_prob` is the path's log-probability.
    """
    lp = _check_log_probs(log_probs_BxTxC, (3,), "ctc_greedy")
    paths_BxT = lp.argmax(-1)
    return [_decoded(lp[b], paths_BxT[b], blank, source="greedy") for b in range(lp.shape[0])]


# --- alignment -------------------------------------------------------------------------------
def ctc_align(
    log_probs_TxC: np.ndarray, tokens: Sequence[int], blank: int = BLANK
) -> tuple[list[int] | None, float]:
    """The most probable path that collapses to `tokens` (CTC forced alignment, Viterbi over
    the blank-interleaved label `_ t1 _ t2 _ ... _`). Returns (path [T], log_prob), or
    (None, -inf) when no path of length T spells `tokens`."""
    return _align(_check_log_probs(log_probs_TxC, (2,), "ctc_align"), tokens, blank)


def _align(lp: np.ndarray, tokens: Sequence[int], blank: int) -> tuple[list[int] | None, float]:
    T = lp.shape[0]
    ext = np.full(2 * len(tokens) + 1, blank)
    ext[1::2] = tokens
    S = len(ext)
    emit_TxS = lp[:, ext]
    # A state may come from itself, the previous state, or skip the blank between two
    # different tokens.
    no_skip = np.ones(S, bool)
    no_skip[2:] = (ext[2:] == blank) | (ext[2:] == ext[:-2])
    score = np.full(S, -np.inf)
    score[: min(S, 2)] = emit_TxS[0, : min(S, 2)]
    back_TxS = np.zeros((T, S), np.int8)  # 0 stay, 1 from previous state, 2 skip
    step, skip = np.full(S, -np.inf), np.full(S, -np.inf)
    for t in range(1, T):
        step[1:] = score[:-1]
        skip[2:] = score[:-2]
        skip[no_skip] = -np.inf
        best = score.copy()
        for choice, cand in ((1, step), (2, skip)):
            better = cand > best
            best[better] = cand[better]
            back_TxS[t, better] = choice
        score = best + emit_TxS[t]
    end = S - 1 if S == 1 or score[S - 1] >= score[S - 2] else S - 2
    if not np.isfinite(score[end]):
        return None, -np.inf
    states = [end]
    for t in range(T - 1, 0, -1):
        states.append(states[-1] - int(back_TxS[t, states[-1]]))
    return [int(ext[s]) for s in reversed(states)], float(score[end])


# --- prefix beam search ----------------------------------------------------------------------
def _prefix_beam_search(
    lp: np.ndarray, beam: int, blank: int, top_k: int, top_n_classes: int | None
) -> list[tuple[tuple[int, ...], float]]:
    T, C = lp.shape
    residues = np.array([c for c in range(C) if c != blank])
    column = {int(c): k for k, c in enumerate(residues)}
    # Per prefix: log P(paths so far that spell it and end in a blank / in its last residue).
    prefixes: list[tuple[int, ...]] = [()]
    p_blank, p_res = np.array([0.0]), np.array([-np.inf])
    for t in range(T):
        row = lp[t]
        n = len(prefixes)
        p_total = np.logaddexp(p_blank, p_res)
        last = np.array([p[-1] if p else blank for p in prefixes])
        # Staying on the prefix: a blank, or its last residue again (merges into it).
        stay_blank = p_total + row[blank]
        stay_res = np.where(last != blank, p_res + row[last], -np.inf)
        # Extending it by c: after a path ending in c itself, only via a blank.
        repeat = residues[None, :] == last[:, None]
        extend = np.where(repeat, p_blank[:, None], p_total[:, None]) + row[residues][None, :]
        if top_n_classes is not None:  # ctcdecode's cutoff_top_n
            top = set(np.argsort(-row)[:top_n_classes].tolist())
            extend[:, [k for k, c in enumerate(residues) if int(c) not in top]] = -np.inf
        # An extension that is itself one of the prefixes adds to that prefix.
        index = {p: i for i, p in enumerate(prefixes)}
        for j, p in enumerate(prefixes):
            if p and p[:-1] in index:
                i, k = index[p[:-1]], column[p[-1]]
                stay_res[j] = np.logaddexp(stay_res[j], extend[i, k])
                extend[i, k] = -np.inf
        totals = np.concatenate([np.logaddexp(stay_blank, stay_res), extend.ravel()])
        keep = [i for i in np.argsort(-totals, kind="stable")[:beam] if totals[i] > -np.inf]
        new_prefixes, new_blank, new_res = [], [], []
        for i in keep:
            if i < n:
                new_prefixes.append(prefixes[i])
                new_blank.append(stay_blank[i])
                new_res.append(stay_res[i])
            else:
                j, k = divmod(int(i) - n, len(residues))
                new_prefixes.append(prefixes[j] + (int(residues[k]),))
                new_blank.append(-np.inf)
                new_res.append(extend[j, k])
        prefixes, p_blank, p_res = new_prefixes, np.array(new_blank), np.array(new_res)
    totals = np.logaddexp(p_blank, p_res)
    order = np.argsort(-totals, kind="stable")[:top_k]
    return [(prefixes[i], float(totals[i])) for i in order if totals[i] > -np.inf]


def _prefix_beam_search_batch(
    lp_BxTxC: np.ndarray, beam: int, blank: int, top_k: int, top_n_classes: int | None
) -> list[list[tuple[tuple[int, ...], float]]]:
    """Prefix beam search on every spectrum at once: per slot a few array operations on the
    [B, W] beam, W = `beam` (capped at the number of distinct prefixes T slots can spell).

    The beam keeps its prefixes in the order the per-spectrum search (`_prefix_beam_search`)
    does: candidates are laid out as [W stays, W x R extensions] and sorted stably, so ties
    break alike and the results are the same floats. A prefix is found among the beam's by
    a rolling hash of its tokens, confirmed token by token.
    """
    B, T, C = lp_BxTxC.shape
    residues = np.array([c for c in range(C) if c != blank])
    R = len(residues)
    column = np.full(C, -1)
    column[residues] = np.arange(R)
    W, reach, level = 1, 1, 1
    for _ in range(T):  # distinct prefixes of <= T residues: 1 + R + R^2 + ...
        level *= R
        reach += level
        if reach >= beam or level == 0:
            break
    W = max(1, min(beam, reach))
    rows, beams = np.arange(B)[:, None], np.arange(W)[None, :]
    tokens_BxWxT = np.full((B, W, T), -1, np.int64)
    length_BxW = np.zeros((B, W), np.int64)
    hash_BxW = np.zeros((B, W), np.uint64)
    parent_BxW = np.zeros((B, W), np.uint64)  # hash of the prefix without its last token
    p_blank = np.full((B, W), -np.inf)
    p_blank[:, 0] = 0.0
    p_res = np.full((B, W), -np.inf)
    alive = np.zeros((B, W), bool)
    alive[:, 0] = True
    positions = np.arange(T)
    for t in range(T):
        row_BxC = lp_BxTxC[:, t]
        p_total = np.logaddexp(p_blank, p_res)
        last = np.where(
            length_BxW > 0, tokens_BxWxT[rows, beams, np.maximum(length_BxW - 1, 0)], blank
        )
        stay_blank = p_total + row_BxC[:, blank, None]
        stay_res = np.where(last != blank, p_res + np.take_along_axis(row_BxC, last, 1), -np.inf)
        repeat = residues[None, None, :] == last[:, :, None]
        extend = np.where(repeat, p_blank[..., None], p_total[..., None])
        extend = extend + row_BxC[:, None, residues]
        if top_n_classes is not None:
            top = np.argsort(-row_BxC, axis=1)[:, :top_n_classes]
            allowed = np.zeros((B, C), bool)
            allowed[rows, top] = True
            extend = np.where(allowed[:, None, residues], extend, -np.inf)
        # Prefix j = prefix i + its last token: the extension (i, last) merges into j.
        match = (
            alive[:, :, None]
            & alive[:, None, :]
            & (length_BxW[:, :, None] == length_BxW[:, None, :] + 1)
            & (parent_BxW[:, :, None] == hash_BxW[:, None, :])
        )
        b, j, i = np.nonzero(match)
        if len(b):
            same = (tokens_BxWxT[b, j] == tokens_BxWxT[b, i]) | (
                positions[None, :] >= length_BxW[b, i][:, None]
            )
            keep = same.all(1)
            b, j, i = b[keep], j[keep], i[keep]
            k = column[last[b, j]]
            stay_res[b, j] = np.logaddexp(stay_res[b, j], extend[b, i, k])
            extend[b, i, k] = -np.inf
        totals = np.concatenate([np.logaddexp(stay_blank, stay_res), extend.reshape(B, W * R)], 1)
        order = np.argsort(-totals, axis=1, kind="stable")[:, :W]
        keep_BxW = np.take_along_axis(totals, order, 1) > -np.inf
        is_stay = order < W
        src = np.where(is_stay, order, (order - W) // R)
        k = np.where(is_stay, 0, (order - W) % R)
        new_tokens = tokens_BxWxT[rows, src]
        src_len = length_BxW[rows, src]
        grow = ~is_stay
        bb, ww = np.nonzero(grow)
        new_tokens[bb, ww, src_len[bb, ww]] = residues[k[bb, ww]]
        src_hash = hash_BxW[rows, src]
        hash_BxW = np.where(
            grow, src_hash * np.uint64(1_000_003) + (residues[k] + 1).astype(np.uint64), src_hash
        )
        parent_BxW = np.where(grow, src_hash, parent_BxW[rows, src])
        length_BxW = src_len + grow
        p_blank = np.where(keep_BxW & is_stay, stay_blank[rows, src], -np.inf)
        p_res = np.where(
            keep_BxW, np.where(is_stay, stay_res[rows, src], extend[rows, src, k]), -np.inf
        )
        tokens_BxWxT, alive = new_tokens, keep_BxW
    totals = np.where(alive, np.logaddexp(p_blank, p_res), -np.inf)
    order = np.argsort(-totals, axis=1, kind="stable")[:, :top_k]
    out = []
    for b in range(B):
        found = []
        for w in order[b]:
            if totals[b, w] > -np.inf:
                found.append(
                    (tuple(tokens_BxWxT[b, w, : length_BxW[b, w]].tolist()), float(totals[b, w]))
                )
        out.append(found)
    return out


def _align_batch(
    lp_NxTxC: np.ndarray, tokens: Sequence[Sequence[int]], blank: int
) -> tuple[np.ndarray, np.ndarray]:
    """`_align` for N (log-probs, tokens) pairs at once, with the same tie-breaking. Returns
    (paths [N, T] int64, log-probs [N]); a pair no path spells gets score -inf."""
    N, T, _ = lp_NxTxC.shape
    lengths = np.array([len(x) for x in tokens], np.int64)
    S = 2 * int(lengths.max(initial=0)) + 1
    n_states = 2 * lengths + 1
    ext = np.full((N, S), blank, np.int64)
    for n, x in enumerate(tokens):
        ext[n, 1 : 2 * len(x) : 2] = x
    valid = np.arange(S)[None, :] < n_states[:, None]
    emit_NxTxS = np.take_along_axis(lp_NxTxC, np.broadcast_to(ext[:, None, :], (N, T, S)), 2)
    emit_NxTxS = np.where(valid[:, None, :], emit_NxTxS, -np.inf)
    no_skip = np.ones((N, S), bool)
    no_skip[:, 2:] = (ext[:, 2:] == blank) | (ext[:, 2:] == ext[:, :-2])
    score = np.full((N, S), -np.inf)
    score[:, :2] = emit_NxTxS[:, 0, :2]
    back_NxTxS = np.zeros((N, T, S), np.int8)
    step, skip = np.full((N, S), -np.inf), np.full((N, S), -np.inf)
    for t in range(1, T):
        step[:, 1:] = score[:, :-1]
        skip[:, 2:] = score[:, :-2]
        skip[no_skip] = -np.inf
        best = score.copy()
        for choice, cand in ((1, step), (2, skip)):
            better = cand > best
            best[better] = cand[better]
            back_NxTxS[:, t][better] = choice
        score = best + emit_NxTxS[:, t]
    rows = np.arange(N)
    top, below = score[rows, n_states - 1], score[rows, np.maximum(n_states - 2, 0)]
    end = np.where((n_states == 1) | (top >= below), n_states - 1, n_states - 2)
    final = score[rows, end]
    state = end.copy()
    states_NxT = np.zeros((N, T), np.int64)
    states_NxT[:, T - 1] = state
    for t in range(T - 1, 0, -1):
        state = state - back_NxTxS[rows, t, state]
        states_NxT[:, t - 1] = state
    return np.take_along_axis(ext, states_NxT, 1), final


def _decoded_batch(lp_NxTxC, paths_NxT, blank, log_probs_N, **fields) -> list[CTCDecoded]:
    """`_decoded` for N paths: tokens and per-token scores found with array operations."""
    N, T, _ = lp_NxTxC.shape
    prev = np.concatenate([np.full((N, 1), -1), paths_NxT[:, :-1]], 1)
    residue = paths_NxT != blank
    starts = residue & (paths_NxT != prev)  # a slot that emits a new token
    token_index = np.cumsum(starts, 1) - 1  # which token a residue slot belongs to
    slot_lp = np.take_along_axis(lp_NxTxC, paths_NxT[..., None], 2)[..., 0]
    n_tokens = starts.sum(1)
    best = np.full((N, max(int(n_tokens.max(initial=0)), 1)), -np.inf)
    n, t = np.nonzero(residue)
    np.maximum.at(best, (n, token_index[n, t]), slot_lp[n, t])
    out = []
    for i in range(N):
        path = paths_NxT[i]
        out.append(
            CTCDecoded(
                tokens=tuple(path[starts[i]].tolist()),
                log_prob=float(log_probs_N[i]),
                token_scores=tuple(math.exp(x) for x in best[i, : n_tokens[i]].tolist()),
                path=tuple(path.tolist()),
                **fields,
            )
        )
    return out


def ctc_beam_search(
    log_probs: np.ndarray,
    beam: int = 5,
    blank: int = BLANK,
    *,
    top_k: int | None = None,
    top_n_classes: int | None = None,
) -> list[CTCDecoded] | list[list[CTCDecoded]]:
    """CTC prefix beam search: the `top_k` (default `beam`) most probable peptides, best first.

    log_probs: [T, C] or [B, T, C] log-probabilities.
    beam: prefixes kept after each slot. With beam >= the number of distinct prefixes the
        search is exhaustive and the ranking exact.
    top_n_classes: extend prefixes only with the n most probable classes of each slot
        (ctcdecode's `cutoff_top_n`); None considers all.
    Returns a list of CTCDecoded for [T, C] input, one such list per spectrum for [B, T, C].
    `log_prob` is the peptide's probability summed over its paths; `path` and
    `token_scores` come from its most probable path (`ctc_align`).
    All spectra are searched together (`_prefix_beam_search_batch`); the results equal
    `ctc_beam_search_reference`'s, ties included.
    """
    lp = _check_log_probs(log_probs, (2, 3), "ctc_beam_search")
    if beam < 1:
        raise ValueError(f"ctc_beam_search: beam must be >= 1, got {beam}")
    lp_BxTxC = lp[None] if lp.ndim == 2 else lp
    found = _prefix_beam_search_batch(lp_BxTxC, beam, blank, top_k or beam, top_n_classes)
    owner = [b for b, hits in enumerate(found) for _ in hits]
    out: list[list[CTCDecoded]] = [[] for _ in found]
    if owner:
        hits = [h for f in found for h in f]
        lp_NxTxC = lp_BxTxC[owner]
        paths_NxT, _ = _align_batch(lp_NxTxC, [tokens for tokens, _ in hits], blank)
        scores = np.array([score for _, score in hits])
        for b, d in zip(owner, _decoded_batch(lp_NxTxC, paths_NxT, blank, scores, source="beam")):
            out[b].append(d)
    return out[0] if lp.ndim == 2 else out


def ctc_beam_search_reference(
    log_probs: np.ndarray,
    beam: int = 5,
    blank: int = BLANK,
    *,
    top_k: int | None = None,
    top_n_classes: int | None = None,
) -> list[CTCDecoded] | list[list[CTCDecoded]]:
    """`ctc_beam_search` one spectrum at a time in Python: the reference the vectorized search
    is tested against. Same arguments and results."""
    lp = _check_log_probs(log_probs, (2, 3), "ctc_beam_search_reference")
    if beam < 1:
        raise ValueError(f"ctc_beam_search_reference: beam must be >= 1, got {beam}")
    if lp.ndim == 3:
        return [
            ctc_beam_search_reference(x, beam, blank, top_k=top_k, top_n_classes=top_n_classes)
            for x in lp
        ]
    out = []
    for tokens, log_prob in _prefix_beam_search(lp, beam, blank, top_k or beam, top_n_classes):
        path, _ = _align(lp, tokens, blank)
        out.append(_decoded(lp, path, blank, log_prob=log_prob, source="beam"))
    return out


# --- masses ----------------------------------------------------------------------------------
def ctc_mass_table(residues: Residues = CASANOVO) -> tuple[np.ndarray, tuple[int, ...]]:
    """Per-class masses for the NAR decoder's classes (0 = blank, mass 0; 1..n =
    `residues.tokens`) and the class ids of N-terminal modifications (which mass control
    only places first)."""
    layout = TokenLayout(residues.tokens)
    masses = np.array(layout.per_class(residues.mass, ar=False))
    nterm = tuple(layout.ids(sorted(residues.nterm, key=layout.tokens.index)))
    return masses, nterm
