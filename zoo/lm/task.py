"""Causal language modelling for the loop: next-token loss on packed text (`task.name=causal_lm`).

Text comes from `task.corpus`:
- "gettext": the interface strings of the gettext catalogs under task.locale_dir, the sides
  named in task.text_langs ("en" = the msgids, "de" = German msgstrs; split by catalog, so
  validation text is from programs never trained on; `zoo.data.gettext`).
- "files": plain UTF-8 text files, one document per line: task.train_files and
  task.validation_files (comma-separated globs).

Every document becomes `[bos] tokens [eos]` (each when the tokenizer has it), cut into pieces
of at most data.max_length tokens. The tokenizer is task.tokenizer (a `tokenizer.json`, read
through the `tokenizers` library: byte-level BPE, Unigram, WordPiece...), or "" to train a
byte-level BPE of task.vocab_size ids on the train split (cached in task.data_dir, keyed by
the text's hash). From a converted checkpoint, `train.init_from=DIR` (a `zoo convert lm`
dir) is enough: the model is DIR's (the recipe's model block gives only dtype and remat) and
so is the tokenizer (DIR/tokenizer.json) unless task.tokenizer names another.

Batches (`data.mode`):
- "pack" (the usual): several pieces per row: `tokens`, `tokens_segment_ids` (0 = padding)
  and `tokens_positions` [B, L]; attention stays inside a segment, positions restart at 0.
- "pad": one piece per row, `tokens` plus `real` (1 on tokens, 0 on padding), since any id,
  0 included, can be a real token of a byte-level vocabulary.
Targets are the next token of the same segment; a segment's last token has none.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from zoo.data import gettext
from zoo.io import modeldir
from zoo.lm.model import LM, LMConfig, count_flops
from zoo.train.losses import label_smoothed_cross_entropy
from zoo.train.task import Task

# Names under which tokenizers commonly keep their sequence markers, in order of preference.
BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>", "[CLS]")
EOS_NAMES = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "[SEP]")
TRAINED_SPECIALS = ("<s>", "</s>", "<pad>")  # ids 0, 1, 2 of a tokenizer trained here


def load_tokenizer(path: str) -> tokenizers.Tokenizer:
    """A tokenizer.json through the `tokenizers` library, with a one-line error naming the file."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no tokenizer file {path}; pass --config.task.tokenizer=PATH/tokenizer.json "
            "(or '' to train a byte-level BPE on the corpus)"
        )
    try:
        return tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the library raises a bare Exception on malformed JSON
        raise ValueError(
            f"{path} is not a tokenizer.json the tokenizers library reads ({e})"
        ) from None


def special_id(tok: tokenizers.Tokenizer, names: Sequence[str]) -> int | None:
    """The id of the first of `names` that is in the vocabulary, else None."""
    for name in names:
        i = tok.token_to_id(name)
        if i is not None:
            return int(i)
    return None


def train_bytelevel_bpe(texts: Sequence[str], vocab_size: int) -> tokenizers.Tokenizer:
    """A GPT-2 style byte-level BPE on `texts` with <s>, </s>, <pad> at ids 0, 1, 2; its
    post-processor puts <s> first (as the causal_lm task's documents start)."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TRAINED_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # encode(text) gives `<s> text` as the model saw it in training (prompts of `zoo generate`)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def with_markers(ids: Sequence[int], bos: int | None, eos: int | None) -> list[int]:
    """`[bos] ids [eos]`, each marker when there is one: a document as the LM sees it."""
    return ([bos] if bos is not None else []) + list(ids) + ([eos] if eos is not None else [])


def _text_files(spec: str, key: str) -> list[str]:
    files = sorted({f for pattern in spec.split(",") if pattern for f in glob.glob(
        os.path.expanduser(pattern.strip()))})  # fmt: skip
    if not files:
        raise FileNotFoundError(
            f"task.{key}={spec!r} matches no file; pass --config.task.{key}=GLOB[,GLOB...]"
        )
    return files


def corpus_texts(task_config, split: str) -> list[str]:
    """Documents of `split` ("train" | "validation" | "test") from task_config.corpus."""
    t = task_config
    if t.corpus == "gettext":
        langs = [s.strip() for s in t.text_langs.split(",") if s.strip()]
        others = [lang for lang in langs if lang != "en"] or ["de"]
        builder = gettext.gettext_builder(
            os.path.expanduser(t.data_dir), src_lang="en", tgt_lang=others[0],
            locale_dir=t.locale_dir,
        )  # fmt: skip
        texts = []
        for ex in builder.as_data_source()[split]:
            texts.extend(ex[lang].decode("utf-8") for lang in langs)
        return texts
    if t.corpus == "files":
        key = "train_files" if split == "train" else "validation_files"
        texts = []
        for path in _text_files(t[key], key):
            with open(path, encoding="utf-8", errors="strict") as f:
                try:
                    texts.extend(line.rstrip("\n") for line in f if line.strip())
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"{path}: not UTF-8 text ({e}); task.{key} takes text files"
                    ) from None
        return texts
    raise ValueError(f"task.corpus={t.corpus!r}; use 'gettext' or 'files'")


def checkpoint_model(config) -> tuple[dict, str] | None:
    """(model fields, tokenizer.json path) of config.train.init_from when it is a zoo lm model
    dir (what `zoo convert lm` writes), else None."""
    source = os.path.expanduser(config.train.get("init_from", "") or "")
    if not source or not modeldir.is_model_dir(source):
        return None
    meta = modeldir.read_meta(source)
    if meta["family"] != "lm":
        raise ValueError(
            f"--config.train.init_from={source} holds a {meta['family']} model, not an lm "
            "(convert a transformers Llama / Mistral / Qwen2 dir with `zoo convert lm`)"
        )
    return dict(meta["config"]), os.path.join(source, "tokenizer.json")


class CausalLMTask(Task):
    name = "causal_lm"

    def __init__(self, config):
        super().__init__(config)
        self._tokenizer: tokenizers.Tokenizer | None = None
        self._sources: dict[str, list[dict[str, np.ndarray]]] = {}
        self._texts: dict[str, list[str]] = {}
        fields = config.model.to_dict()
        self._checkpoint_tokenizer = ""
        pretrained = checkpoint_model(config)
        if pretrained is not None:  # the converted model's shapes, the recipe's dtype and remat
            fields = {**pretrained[0], "dtype": fields["dtype"], "remat": fields["remat"]}
            self._checkpoint_tokenizer = pretrained[1]
        if fields.get("vocab_size", 0) == 0:  # 0 = the tokenizer's vocabulary
            fields["vocab_size"] = self.tokenizer().get_vocab_size()
        for key in ("head_dim", "sliding_window", "num_kv_heads"):  # the recipe's 0 = off
            if fields.get(key) == 0:
                fields[key] = None
        self.model_config = LMConfig.from_dict(fields)  # validated
        self.model = LM(self.model_config)
        self.packed = config.data.mode == "pack"
        if config.data.mode not in ("pack", "pad"):
            raise ValueError(
                f"data.mode={config.data.mode!r}: the causal LM batches text as 'pack' or 'pad'; "
                "pass --config.data.mode=pack"
            )

    # --- model -----------------------------------------------------------------
    def _inputs(self, batch):
        tokens = batch["tokens"]
        if self.packed:
            return tokens, batch["tokens_segment_ids"], batch["tokens_positions"]
        real = batch["real"].astype(jnp.int32)
        positions = jnp.maximum(jnp.cumsum(real, axis=1) - 1, 0)
        return tokens, real, positions

    def init_variables(self, rng, batch):
        tokens, segments, positions = self._inputs(batch)
        return self.model.init({"params": rng}, tokens, positions=positions, segment_ids=segments)

    def loss(self, params, batch, rng, *, train, step=None):
        tokens, segments, positions = self._inputs(batch)
        logits = self.model.apply(
            {"params": params},
            tokens,
            positions=positions,
            segment_ids=segments,
            deterministic=not train,
            rngs={"dropout": rng} if train else {},
        )
        # position t predicts token t+1 of the same segment
        targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
        next_seg = jnp.pad(segments[:, 1:], ((0, 0), (0, 1)))
        weights = (segments != 0) & (next_seg == segments)
        loss, nll = label_smoothed_cross_entropy(
            logits, targets, weights, self.config.task.label_smoothing
        )
        correct = ((logits.argmax(-1) == targets) & weights).sum()
        return loss, {"weight": weights.sum(), "nll": nll, "accuracy": correct}

    # --- batch layout ------------------------------------------------------------
    def batch_axes(self):
        if self.packed:
            return {k: ("batch", "length") for k in
                    ("tokens", "tokens_segment_ids", "tokens_positions")}  # fmt: skip
        return {"tokens": ("batch", "length"), "real": ("batch", "length")}

    def example_batch(self, batch_size):
        return {
            k: np.zeros((batch_size, self.config.data.max_length), np.int32)
            for k in self.batch_axes()
        }

    def flops_per_batch(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
        b, length = batch_shapes["tokens"]
        return count_flops(self.model_config, b, length)

    def _real(self, batch) -> np.ndarray:
        return np.asarray(batch["tokens_segment_ids" if self.packed else "real"]) != 0

    def tokens_in_batch(self, batch) -> int:
        return int(self._real(batch).sum())

    def positions_in_batch(self, batch) -> tuple[int, int]:
        real = self._real(batch)
        return int(real.sum()), int(real.size)

    # --- data --------------------------------------------------------------------
    def tokenizer(self) -> tokenizers.Tokenizer:
        """task.tokenizer, or a byte-level BPE trained on the train split (cached)."""
        if self._tokenizer is None:
            t = self.config.task
            if t.tokenizer or self._checkpoint_tokenizer:
                path = os.path.expanduser(t.tokenizer or self._checkpoint_tokenizer)
                if os.path.isdir(path):
                    path = os.path.join(path, "tokenizer.json")
            else:
                texts = self.texts("train")
                digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
                path = os.path.join(
                    os.path.expanduser(t.data_dir), "lm_tokenizers",
                    f"bytelevel_bpe{t.vocab_size}_bos_{digest}.json",
                )  # fmt: skip
                if not os.path.exists(path):
                    logging.info("training a byte-level BPE of %d ids -> %s", t.vocab_size, path)
                    tok = train_bytelevel_bpe(texts, t.vocab_size)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    tmp = f"{path}.tmp{os.getpid()}"
                    tok.save(tmp)
                    os.replace(tmp, path)
            self._tokenizer = load_tokenizer(path)
            self._tokenizer_path = path
        return self._tokenizer

    @property
    def tokenizer_path(self) -> str:
        """The tokenizer.json in use (to ship beside a trained model)."""
        self.tokenizer()
        return self._tokenizer_path

    def texts(self, split: str) -> list[str]:
        """The split's documents (read once: the trained tokenizer and examples share them)."""
        if split not in self._texts:
            self._texts[split] = corpus_texts(self.config.task, split)
        return self._texts[split]

    def prepare_data(self) -> None:
        self.tokenizer()
        self.examples("train")

    def examples(self, split: str) -> list[dict[str, np.ndarray]]:
        """Tokenised pieces of at most data.max_length tokens: [{'tokens': ids, ...}]."""
        if split not in self._sources:
            tok = self.tokenizer()
            bos = special_id(tok, BOS_NAMES) if self.config.task.add_bos else None
            eos = special_id(tok, EOS_NAMES) if self.config.task.add_eos else None
            limit = self.config.data.max_length
            pieces = []
            texts = self.texts(split)
            for enc in tok.encode_batch(texts, add_special_tokens=False):
                ids = with_markers(enc.ids, bos, eos)
                for start in range(0, len(ids), limit):
                    chunk = np.asarray(ids[start : start + limit], np.int32)
                    if len(chunk) >= 2:  # a piece needs one next-token target
                        ex = {"tokens": chunk}
                        if not self.packed:
                            ex["real"] = np.ones_like(chunk)
                        pieces.append(ex)
            if not pieces:
                raise ValueError(f"task.corpus={self.config.task.corpus!r} has no {split} text")
            self._sources[split] = pieces
        return self._sources[split]

    def dataset(self, split, *, seed, process_index, process_count, batch_multiple, train):
        return self.batched(
            self.examples(split),
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            batch_multiple=batch_multiple,
            train=train,
            features=("tokens",) if self.packed else ("tokens", "real"),
        )

    def describe(self) -> str:
        c = self.model_config
        return (
            f"causal_lm: {c.num_layers} layers, hidden {c.hidden_size}, heads "
            f"{c.num_heads}/{c.num_kv_heads} kv, vocab {c.vocab_size}"
        )
