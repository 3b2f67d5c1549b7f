"""mBART seq2seq tasks for the loop: translation, code-switching restore (CSR), denoising.

All three train `zoo.mbart.model.MBart` with label-smoothed cross-entropy on
`inputs` / `targets` [batch, length] int32 batches padded with mBART's pad id 1.
Sequences follow the tokenizer's style (cc25: `X </s> [lang]`); the decoder
input is transformers' shift_tokens_right of the target (`[lang] Y </s>`).

- translation: inputs = source sentence, targets = its translation.
- csr (Zan et al. 2022, stage 1): each parallel pair gives one monolingual example (even
  index: the source side, odd index: the target side): input = the sentence with ~35% of
  its words switched to dictionary translations, target = the original sentence, decoder
  started with the same language code. The dictionary is a MUSE-style file (task.lexicon)
  or, by default, induced from the training pairs (Dice co-occurrence,
  `zoo.mbart.lexicon.induce_from_parallel`). CSR's stage 2 is translation with
  `train.init_from` = the stage-1 workdir.
- denoising: mBART pretraining noise (35% whole-word spans -> <mask>, sentence permutation)
  on both sides of the corpus as monolingual text.

Noise is fresh each epoch yet resumable: the example source has task.noise_epochs x N
entries, and entry e*N + i is pair i noised with a generator seeded by (seed, e, i).

Inference is not here: `zoo.mbart.translate` generates with a trained model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import ml_collections
import numpy as np

from zoo.io import modeldir
from zoo.mbart import corpus, noising
from zoo.mbart import lexicon as zlex
from zoo.mbart.model import MBart, MBartConfig
from zoo.mbart.tokenizer import MBartTokenizer, shift_tokens_right
from zoo.nn import encoder_decoder
from zoo.train.losses import token_loss
from zoo.train.task import Task


class MBartTextTask(Task):
    """Shared by translation, CSR and denoising: model, loss, batch layout, tokenised text."""

    def __init__(self, config):
        super().__init__(config)
        self._tokenizer: MBartTokenizer | None = None
        fields = config.model.to_dict()
        if fields.get("vocab_size", 0) == 0:  # 0 = the tokenizer's vocabulary
            fields["vocab_size"] = self.tokenizer().vocab_size
        # Without the tokenizer file (e.g. `zoo compile` elsewhere) only the data would need it.
        elif os.path.exists(os.path.expanduser(config.task.spm_model)) and (
            fields["vocab_size"] != (tok := self.tokenizer()).vocab_size
        ):
            raise ValueError(
                f"model.vocab_size={fields['vocab_size']} but the tokenizer "
                f"{config.task.spm_model} has {tok.vocab_size} ids; set "
                "--config.model.vocab_size=0 to take the tokenizer's"
            )
        self.model_config = MBartConfig.from_dict(fields)
        self.model = MBart(self.model_config)
        self.pad_id = self.model_config.pad_token_id
        self._sources: dict[str, Sequence[dict[str, np.ndarray]]] = {}

    # --- model -----------------------------------------------------------------
    def _logits(self, params, batch, rng, train: bool):
        inputs, targets = batch["inputs"], batch["targets"]
        return self.model.apply(
            {"params": params},
            inputs,
            inputs != self.pad_id,
            shift_tokens_right(targets, self.pad_id),
            decoder_attention_mask=targets != self.pad_id,
            deterministic=not train,
            rngs={"dropout": rng} if train else {},
        )

    def init_variables(self, rng, batch):
        inputs, targets = batch["inputs"], batch["targets"]
        return self.model.init(
            {"params": rng}, inputs, inputs != self.pad_id, shift_tokens_right(targets, self.pad_id)
        )

    def loss(self, params, batch, rng, *, train, step=None):
        logits = self._logits(params, batch, rng, train)
        return token_loss(logits, batch["targets"], self.pad_id, self.config.task.label_smoothing)

    def batch_axes(self):
        return {"inputs": ("batch", "length"), "targets": ("batch", "length")}

    def example_batch(self, batch_size):
        d = self.config.data
        length = max(d.bucket_boundaries) if d.mode == "bucket" else d.max_length
        return {k: np.full((batch_size, length), self.pad_id, np.int32) for k in self.batch_axes()}

    def flops_per_batch(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
        b, s = batch_shapes["inputs"]
        t = batch_shapes["targets"][1]
        return encoder_decoder.count_flops(self.model_config, b, s, t)

    def tokens_in_batch(self, batch) -> int:
        return int(
            sum(np.count_nonzero(np.asarray(batch[k]) != self.pad_id) for k in self.batch_axes())
        )

    # --- data --------------------------------------------------------------------
    def tokenizer(self) -> MBartTokenizer:
        """task.spm_model in mBART's id layout and task.tokenizer_style's format."""
        if self._tokenizer is None:
            t = self.config.task
            if not t.spm_model:
                raise ValueError(
                    "task.spm_model is not set; pass --config.task.spm_model=PATH (a model "
                    "trained with `zoo spm`, or a checkpoint's sentencepiece.bpe.model)"
                )
            self._tokenizer = MBartTokenizer(
                os.path.expanduser(t.spm_model), style=t.tokenizer_style
            )
        return self._tokenizer

    def text_pairs(self, split: str) -> list[tuple[str, str]]:
        """(source, target) sentences of a split from task.corpus (`zoo.mbart.corpus`)."""
        return corpus.text_pairs(self.config.task, split)

    def prepare_data(self) -> None:
        self.text_pairs("train")

    def examples(self, split: str, train: bool) -> Sequence[dict[str, np.ndarray]]:
        raise NotImplementedError

    def dataset(self, split, *, seed, process_index, process_count, batch_multiple, train):
        return self.batched(
            self.examples(split, train),
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            batch_multiple=batch_multiple,
            train=train,
            pad_id=self.pad_id,
        )


class TranslationTask(MBartTextTask):
    name = "translation"

    def examples(self, split, train):
        if split not in self._sources:
            t = self.config.task
            tok = self.tokenizer()
            self._sources[split] = [
                {
                    "inputs": np.asarray(tok.encode(src, t.src_lang), np.int32),
                    "targets": np.asarray(tok.encode(tgt, t.tgt_lang, target=True), np.int32),
                }
                for src, tgt in self.text_pairs(split)
            ]
        return self._sources[split]


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


class CsrTask(TranslationTask):
    name = "csr"

    def lexicons(self, pairs):
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


class DenoisingTask(TranslationTask):
    name = "denoising"

    def examples(self, split, train):
        key = f"denoise:{split}"
        if key not in self._sources:
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


TASKS = (TranslationTask, CsrTask, DenoisingTask)


def translation_config(checkpoint: str, src_lang: str, tgt_lang: str) -> ml_collections.ConfigDict:
    """The task config to translate with a model dir (`zoo convert`) or a training workdir."""
    if modeldir.is_model_dir(checkpoint):
        meta = modeldir.read_meta(checkpoint)
        if meta["family"] != "mbart":
            raise ValueError(f"{checkpoint} holds a {meta['family']} model, not mbart")
        tok = meta.get("tokenizer", {})
        if not tok.get("spm"):
            raise ValueError(f"{checkpoint} has no sentencepiece model; convert again with --spm")
        c = ml_collections.ConfigDict(
            {
                "seed": 0,
                "task": {
                    "name": "translation",
                    "spm_model": os.path.join(checkpoint, tok["spm"]),
                    "tokenizer_style": tok.get("style", "cc25"),
                    "label_smoothing": 0.0,
                },
                "model": meta["config"],
            }
        )
    else:
        c = modeldir.read_run_config(checkpoint, [task.name for task in TASKS])
        c.task.name = "translation"
    c.task.src_lang, c.task.tgt_lang = src_lang, tgt_lang
    return c
