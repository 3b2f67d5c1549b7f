"""Plain NumPy/Python references for the searches in zoo.decode, one row at a time.

Written for clarity, not speed: lists of (score, tokens) and sorting, following the rules in
the zoo.decode.search module docstring (transformers 4.57 `_beam_search`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NEG = -1.0e9

# logp_fn(row, prefix) -> [V] float64 log-probs of the next token after `prefix` (generated
# tokens only; the start token is implicit).
LogpFn = Callable[[int, list], np.ndarray]


def forced(logp_V, step, max_len, forced_bos, forced_eos):
    logp_V = logp_V.copy()
    for token, now in ((forced_bos, step == 0), (forced_eos, step == max_len - 1)):
        if token is not None and now:
            logp_V[:] = -np.inf
            logp_V[token] = 0.0
    return logp_V


def greedy(logp_fn: LogpFn, row, max_len, eos, forced_bos=None, forced_eos=None) -> list:
    seq = []
    for step in range(max_len):
        token = int(np.argmax(forced(logp_fn(row, seq), step, max_len, forced_bos, forced_eos)))
        seq.append(token)
        if token == eos:
            break
    return seq


class BeamRef:
    """One item's beam search of k beams, advanced one step at a time."""

    def __init__(self, k, max_len, eos, length_penalty=1.0, early_stopping=False):
        self.k, self.max_len, self.eos = k, max_len, eos
        self.length_penalty, self.early_stopping = length_penalty, early_stopping
        self.live = [(0.0, [])] + [(NEG, [])] * (k - 1)
        self.done: list = []
        self.improvable = True

    def finished(self, step) -> bool:
        full = self.early_stopping is True and len(self.done) == self.k
        return not self.improvable or step >= self.max_len or full

    def step(self, step, logp_of) -> list:
        """logp_of(seq) -> processed [V] log-probs; returns the tokens of the new live beams."""
        k, lp = self.k, self.length_penalty
        cands = []
        for score, seq in self.live:
            cands += [(score + x, seq + [t]) for t, x in enumerate(logp_of(seq))]
        cands = sorted(cands, key=lambda c: -c[0])[: 2 * k]
        stops = [seq[-1] == self.eos or step >= self.max_len - 1 for _, seq in cands]
        full = self.early_stopping is True and len(self.done) == k
        if self.improvable and not full and step < self.max_len:
            self.done += [
                (score / (step + 1) ** lp, seq)
                for (score, seq), stop in zip(cands[:k], stops)
                if stop
            ]
            self.done = sorted(self.done, key=lambda c: -c[0])[:k]
        # Stopped candidates only fill slots no running candidate can (then they are junk).
        ranked = sorted(
            ((score + NEG * stop, seq) for (score, seq), stop in zip(cands, stops)),
            key=lambda c: -c[0],
        )
        self.live = ranked[:k]
        if self.early_stopping == "never" and lp > 0:
            best_len = self.max_len
        else:
            best_len = step + 1
        best_possible = self.live[0][0] / best_len**lp
        self.improvable = self.improvable and (
            len(self.done) < k or best_possible > min(s for s, _ in self.done)
        )
        return [seq[-1] for _, seq in self.live]


def beam(
    logp_fn: LogpFn,
    row,
    k,
    max_len,
    eos,
    length_penalty=1.0,
    early_stopping=False,
    forced_bos=None,
    forced_eos=None,
) -> list:
    """Finished hypotheses [(score, tokens)], best first (at most k)."""
    search = BeamRef(k, max_len, eos, length_penalty, early_stopping)
    step = 0
    while not search.finished(step):
        search.step(
            step,
            lambda seq, t=step: forced(logp_fn(row, seq), t, max_len, forced_bos, forced_eos),
        )
        step += 1
    return search.done


def diverse(logp_fn: LogpFn, row, groups, kg, max_len, eos, strength) -> list:
    """Per group, its finished hypotheses [(score, tokens)], best first.

    Groups step in order; group g's log-probs lose strength * count(token) over the live
    tokens chosen at this step by groups < g that had not finished before the step.
    """
    searches = [BeamRef(kg, max_len, eos) for _ in range(groups)]
    step = 0
    while not all(s.finished(step) for s in searches):
        chosen: list = []
        for search in searches:
            penalty_V = strength * hamming_counts(chosen, len(logp_fn(row, [])))
            was_finished = search.finished(step)
            tokens = search.step(step, lambda seq, p=penalty_V: logp_fn(row, seq) - p)
            if not was_finished:
                chosen += tokens
        step += 1
    return [s.done for s in searches]


def hamming_counts(chosen, vocab) -> np.ndarray:
    return np.bincount(np.asarray(chosen, np.int64).ravel(), minlength=vocab).astype(np.float64)
