"""Code-switching restore (CSR, Zan et al. 2022) and mBART denoising, as tasks for the loop.

Both reuse the translation task's model, loss and batching; only the examples differ.

- csr: each parallel pair gives one monolingual example (even index: the source side,
  odd index: the target side): input = the sentence with ~35% of its words switched to
  dictionary translations, target = the original sentence, decoder started with the same
  language code. The dictionary is a MUSE-style file (task.lexicon) or, by default, induced
  from the training pairs (Dice co-occurrence, zoo.data.lexicon.induce_from_parallel).
- denoising: mBART pretraining noise (35% whole-word spans -> <mask>, sentence permutation)
  on both sides of the corpus as monolingual text.

Noise is fresh each epoch yet resumable: the example source has task.noise_epochs x N
entries, and entry e*N + i is pair i noised with a generator seeded by (seed, e, i).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo.tasks import base
from zoo.tasks.translation import TranslationTask


class _NoisedSource(Sequence):
    """Random-access examples: entry k is pair k % N noised for epoch k // N."""

    def __init__(self, make, num_pairs: int, epochs: int):
        self._make, self._n, self._epochs = make, num_pairs, epochs

    def __len__(self) -> int:
        return self._n * self._epochs

    def __getitem__(self, k: int) -> dict[str, np.ndarray]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        epoch, i = divmod(int(k), self._n)
        inputs, targets = self._make(epoch, i)
        return {"inputs": np.asarray(inputs, np.int32), "targets": np.asarray(targets, np.int32)}


@base.register
class CsrTask(TranslationTask):
    name = "csr"

    def lexicons(self, pairs):
        from zoo.data import lexicon as zlex

        t = self.config.task
        tok = self.tokenizer()
        first_lang = tok.lang_id(tok.languages[0])
        if t.lexicon:
            to_ids = lambda word: tok.encode(word, t.src_lang)[:-2]  # noqa: E731  (drop </s> [lang])
            forward = zlex.from_muse_file(
                t.lexicon, to_ids, to_ids, k=t.lexicon_k, vocab_limit=first_lang
            )
            backward = zlex.from_muse_file(
                t.lexicon_reverse or t.lexicon,
                to_ids,
                to_ids,
                k=t.lexicon_k,
                vocab_limit=first_lang,
            )
            return forward, backward
        src = [p["inputs"] for p in pairs]
        tgt = [p["targets"] for p in pairs]
        forward = zlex.induce_from_parallel(src, tgt, k=t.lexicon_k, vocab_limit=first_lang)
        backward = zlex.induce_from_parallel(tgt, src, k=t.lexicon_k, vocab_limit=first_lang)
        return forward, backward

    def examples(self, split, train):
        key = f"csr:{split}"
        if key not in self._sources:
            from zoo.data import noising

            t = self.config.task
            tok = self.tokenizer()
            pairs = TranslationTask.examples(self, split, train)
            forward, backward = self.lexicons(TranslationTask.examples(self, "train", True))
            word_start = noising.word_start_table(tok.pieces())
            src_lang, tgt_lang = tok.lang_id(t.src_lang), tok.lang_id(t.tgt_lang)

            def make(epoch: int, i: int):
                source, target, _ = noising.csr_example(
                    pairs[i]["inputs"],
                    pairs[i]["targets"],
                    index=i,
                    src_lang_id=src_lang,
                    tgt_lang_id=tgt_lang,
                    src_to_tgt=forward,
                    tgt_to_src=backward,
                    word_start=word_start,
                    mask_id=tok.mask_id,
                    rng=noising.example_rng(self.config.seed, epoch, i),
                    ratio=t.noise_ratio,
                )
                return source, target

            self._sources[key] = _NoisedSource(make, len(pairs), t.noise_epochs if train else 1)
        return self._sources[key]


@base.register
class DenoisingTask(TranslationTask):
    name = "denoising"

    def examples(self, split, train):
        key = f"denoise:{split}"
        if key not in self._sources:
            from zoo.data import noising

            t = self.config.task
            tok = self.tokenizer()
            pairs = TranslationTask.examples(self, split, train)
            # Both sides as monolingual text (each ends with its own language code).
            sentences = [s for p in pairs for s in (p["inputs"], p["targets"])]
            word_start = noising.word_start_table(tok.pieces())

            def make(epoch: int, i: int):
                original = sentences[i]
                noised = noising.denoise(
                    original,
                    word_start,
                    mask_id=tok.mask_id,
                    rng=noising.example_rng(self.config.seed, epoch, i),
                    mask_ratio=t.noise_ratio,
                )
                return noised, original

            self._sources[key] = _NoisedSource(make, len(sentences), t.noise_epochs if train else 1)
        return self._sources[key]
