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
  algorithm behind ctcdecode, which PrimeNovo uses).
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
    """
    lp = _check_log_probs(log_probs, (2, 3), "ctc_beam_search")
    if beam < 1:
        raise ValueError(f"ctc_beam_search: beam must be >= 1, got {beam}")
    if lp.ndim == 3:
        return [
            ctc_beam_search(x, beam, blank, top_k=top_k, top_n_classes=top_n_classes) for x in lp
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
