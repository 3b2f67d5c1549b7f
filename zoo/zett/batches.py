"""ZeTT's training batches: text tokenized by a tokenizer sampled for every step.

Every batch is a pure function of (seed, step): the sentences, the substring counts of the
last task.sample_window batches and the tokenizer sampled from them, so the iterator state
is just the step (`zoo.data.stepwise`) and a resumed run sees exactly the batches it would
have seen. Train: sentences drawn at random for ever; eval: one ordered pass with one
tokenizer sampled without noise. With task.target_tokenizer, that one tokenizer is used for
every batch (fixed-target mode). Features: see `zoo.zett.task`.
"""

from __future__ import annotations

import collections

import numpy as np

from zoo.data.stepwise import StepBatches
from zoo.zett import vocab


def transfer_batches(task, pairs, *, seed, train, process_index, process_count) -> StepBatches:
    """The batches of `pairs` for `task`: tuples of texts (mBART: (source, target) sentences;
    LM: (document,)), all counted by the sampler; the task encodes a batch's rows
    (`task.encode_rows(tokenizer, pairs, rows, max_length)` -> its text features) and gives the
    sampler's template (`task.sampler_template()`), tokenizers (`task.make_tokenizer(proto)`)
    and decompositions (`task.decomposer()`)."""
    return StepBatches(
        _BatchMaker(
            task,
            pairs,
            seed=seed,
            train=train,
            process_index=process_index,
            process_count=process_count,
        ).make_batch
    )


class _BatchMaker:
    """make_batch(step): one process's share of global batch `step`, or None after the end.

    Keeps the substring counts of the last sample_window batches between calls; a call that
    does not follow its predecessor (the first, or after a resume) recounts the window.
    """

    def __init__(self, task, pairs, *, seed, train, process_index, process_count):
        self.task, self.pairs, self.seed, self.train = task, pairs, seed, train
        self.process_index, self.process_count = process_index, process_count
        t = task.config.task
        self.global_batch = int(task.config.data.global_batch_size)
        self.max_length = int(task.config.data.max_length)
        self.window = int(t.sample_window)
        self.fixed = None
        if t.target_tokenizer:
            tok = task.target_tokenizer()
            self.fixed = (tok, task.decomposer().surface_matrix(tok))
        elif not train:  # eval: one tokenizer, sampled without noise from the split
            counter = vocab.SubstringCounts(max_substring_len=int(t.max_substring_len))
            counts = counter.add(s for p in pairs[: 16 * self.global_batch] for s in p)
            proto = vocab.sample_unigram_model(
                counts,
                int(t.sample_vocab_size),
                np.random.default_rng(seed),
                noise_std=0.0,
                template=task.sampler_template(),
            )
            tok = task.make_tokenizer(proto)
            self.fixed = (tok, task.decomposer().surface_matrix(tok))
        self.source = task.source_surface()
        self.identity_pool = np.flatnonzero(self.source.special_source < 0)
        self._window: collections.deque = collections.deque()
        self._counts = collections.Counter()

    def _indices(self, step: int) -> np.ndarray:
        n = len(self.pairs)
        if self.train:
            rng = np.random.default_rng([self.seed, step, 1])
            return rng.choice(n, self.global_batch, replace=n < self.global_batch)
        lo = step * self.global_batch
        return np.arange(lo, min(lo + self.global_batch, n))

    def _batch_counts(self, step: int):
        t = self.task.config.task
        counter = vocab.SubstringCounts(max_substring_len=int(t.max_substring_len))
        return counter.add(s for i in self._indices(step) for s in self.pairs[i])

    def _advance_window(self, step: int) -> None:
        """Makes self._counts the counts of batches max(0, step - window + 1) .. step."""
        lo = max(0, step - self.window + 1)
        if not self._window or self._window[-1][0] != step - 1:  # first batch, or resumed
            self._window.clear()
            self._counts = collections.Counter()
            first = lo
        else:
            first = step
        for s in range(first, step + 1):
            c = self._batch_counts(s)
            self._window.append((s, c))
            self._counts.update(c)
        while self._window[0][0] < lo:
            self._counts.subtract(self._window.popleft()[1])
        self._counts = +self._counts  # drops zero counts

    def make_batch(self, step: int) -> dict[str, np.ndarray] | None:
        task, t = self.task, self.task.config.task
        idx = self._indices(step)
        if len(idx) == 0:
            return None
        if self.fixed is not None:
            tok, forms = self.fixed
        else:
            self._advance_window(step)
            rng = np.random.default_rng([self.seed, step, 2])
            noise = None if t.noise_std < 0 else float(t.noise_std)
            proto = vocab.sample_unigram_model(
                self._counts,
                int(t.sample_vocab_size),
                rng,
                noise_std=noise,
                template=task.sampler_template(),
            )
            tok = task.make_tokenizer(proto)
            forms = task.decomposer().surface_matrix(tok)
        V, K = task.vocab_rows, task.hypernet_config.max_len
        if forms.ids.shape[0] > V:
            raise ValueError(
                f"the step's tokenizer has {forms.ids.shape[0]} ids > the {V} rows reserved"
            )
        surface = np.full((V, K), self.task.pad_id, np.int32)
        surface[:, 0] = 3  # vocabulary padding rows: any real source piece (logits are masked)
        surface[: forms.ids.shape[0]] = forms.ids
        special = np.full((V,), -1, np.int32)
        special[: forms.ids.shape[0]] = forms.special_source
        valid = np.zeros((V,), bool)
        valid[: forms.ids.shape[0]] = True
        # This process's rows of the global batch (eval's last batch is padded with empty rows).
        local = self.global_batch // self.process_count
        rows = idx[self.process_index * local : (self.process_index + 1) * local]
        text = task.encode_rows(tok, [self.pairs[i] for i in rows], local, self.max_length)
        rng = np.random.default_rng([self.seed, step, 3])
        n = task.identity_rows
        ids = rng.choice(self.identity_pool, n, replace=n > len(self.identity_pool)).astype(
            np.int32
        )
        return {
            **text,
            "surface": surface,
            "special_source": special,
            "vocab_valid": valid,
            "identity_surface": self.source.ids[ids],
            "identity_ids": ids,
        }
