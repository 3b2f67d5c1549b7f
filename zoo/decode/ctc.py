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
* `ctc_mass_control` (in `zoo.decode.ctc_mass`): the most probable path whose peptide mass
  fits the precursor, PrimeNovo's precise mass control (PMC).
* `ctc_decode_with_mass`: PrimeNovo's policy combining the two: keep the beam search's best
  peptide when its mass is within tolerance of the precursor, otherwise run PMC.

Per-residue scores (for mzTab): each residue's score is the largest probability among the
slots that emit it in the path (the most probable alignment, for beam search), so a residue
the model commits to in one slot scores high even when neighbouring slots hesitate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from zoo.data.residues import CASANOVO, Residues


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


def collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """The peptide a CTC path spells: repeats merged, then blanks dropped."""
    out, prev = [], None
    for c in path:
        c = int(c)
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def token_scores(log_probs_TxC: np.ndarray, path: Sequence[int], blank: int = 0) -> list[float]:
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
def ctc_greedy(log_probs_BxTxC: np.ndarray, blank: int = 0) -> list[CTCDecoded]:
    """Best path decoding: per slot the most probable class, collapsed.

    log_probs_BxTxC: [B, T, C] log-probabilities (log_softmax of the NAR logits).
    Returns one CTCDecoded per spectrum; `log_prob` is the path's log-probability.
    """
    lp = _check_log_probs(log_probs_BxTxC, (3,), "ctc_greedy")
    paths_BxT = lp.argmax(-1)
    return [_decoded(lp[b], paths_BxT[b], blank, source="greedy") for b in range(lp.shape[0])]


# --- alignment -------------------------------------------------------------------------------
def ctc_align(log_probs_TxC: np.ndarray, tokens: Sequence[int], blank: int = 0):
    """The most probable path that collapses to `tokens` (CTC forced alignment, Viterbi over
    the blank-interleaved label `_ t1 _ t2 _ ... _`). Returns (path [T], log_prob), or
    (None, -inf) when no path of length T spells `tokens`."""
    lp = _check_log_probs(log_probs_TxC, (2,), "ctc_align")
    T = lp.shape[0]
    ext = [blank]
    for tok in tokens:
        ext += [int(tok), blank]
    S = len(ext)
    score = np.full(S, -np.inf)
    score[0] = lp[0, ext[0]]
    if S > 1:
        score[1] = lp[0, ext[1]]
    back = np.zeros((T, S), dtype=np.int64)
    idx = np.arange(S)
    # A state may come from itself, the previous state, or skip a blank between two
    # different tokens.
    skip_ok = np.array([s >= 2 and ext[s] != blank and ext[s] != ext[s - 2] for s in range(S)])
    for t in range(1, T):
        stay = score
        step = np.concatenate([[-np.inf], score[:-1]])
        skip = np.where(skip_ok, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        cands = np.stack([stay, step, skip])
        choice = cands.argmax(0)
        back[t] = idx - choice
        score = cands[choice, idx] + lp[t, ext]
    ends = [S - 1, S - 2] if S > 1 else [S - 1]
    end = max(ends, key=lambda s: score[s])
    if not np.isfinite(score[end]):
        return None, -np.inf
    states = [end]
    for t in range(T - 1, 0, -1):
        states.append(int(back[t, states[-1]]))
    path = [ext[s] for s in reversed(states)]
    return path, float(score[end])


# --- prefix beam search ----------------------------------------------------------------------
def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = (a, b) if a > b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def _prefix_beam_search(
    lp: np.ndarray, beam: int, blank: int, top_k: int, top_n_classes: int | None
) -> list[tuple[tuple[int, ...], float]]:
    T, C = lp.shape
    # prefix -> [log P(paths so far spelling prefix, ending in blank), ... ending in a residue]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, -math.inf]}
    for t in range(T):
        row = lp[t]
        classes = range(C) if top_n_classes is None else np.argsort(-row)[:top_n_classes]
        classes = [int(c) for c in classes if c != blank]
        nxt: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_res) in beams.items():
            p_total = _logaddexp(p_blank, p_res)
            same = nxt.setdefault(prefix, [-math.inf, -math.inf])
            same[0] = _logaddexp(same[0], p_total + row[blank])
            last = prefix[-1] if prefix else None
            for c in classes:
                longer = nxt.setdefault(prefix + (c,), [-math.inf, -math.inf])
                if c == last:
                    # c right after c merges into the same residue; only a blank between
                    # them spells a second c.
                    same[1] = _logaddexp(same[1], p_res + row[c])
                    longer[1] = _logaddexp(longer[1], p_blank + row[c])
                else:
                    longer[1] = _logaddexp(longer[1], p_total + row[c])
        ranked = sorted(nxt.items(), key=lambda kv: (-_logaddexp(*kv[1]), kv[0]))
        beams = dict(ranked[:beam])
    ranked = sorted(beams.items(), key=lambda kv: (-_logaddexp(*kv[1]), kv[0]))
    return [(prefix, _logaddexp(*p)) for prefix, p in ranked[:top_k]]


def ctc_beam_search(
    log_probs: np.ndarray,
    beam: int = 5,
    blank: int = 0,
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
        path, _ = ctc_align(lp, tokens, blank)
        out.append(_decoded(lp, path, blank, log_prob=log_prob, source="beam"))
    return out


# --- masses ----------------------------------------------------------------------------------
def ctc_mass_table(residues: Residues = CASANOVO) -> tuple[np.ndarray, tuple[int, ...]]:
    """Per-class masses for the NAR decoder's classes (0 = blank, mass 0; 1..n =
    `residues.tokens`) and the class ids of N-terminal modifications (which mass control
    only places first)."""
    tokens = residues.tokens
    masses = np.array([0.0] + [residues.mass(t) for t in tokens])
    nterm = tuple(i + 1 for i, t in enumerate(tokens) if t in residues.nterm)
    return masses, nterm
