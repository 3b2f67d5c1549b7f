"""ZeTT for decoder-only LMs: a hypernetwork for a frozen `zoo.lm` model (`lm_tokenizer_transfer`).

ZeTT's main setting (Minixhofer et al. 2024; /work/shared/reference/zett.md): the causal-LM
objective on text tokenized by a tokenizer sampled every step. Everything but the model is
`zoo.zett.task`'s: the sampler and its window (`zoo.zett.batches`), the identity warm-up, the
auxiliary loss, the frozen scalers fitted on anchor tokens. What differs:

- tokenizers are seen at byte level (`zoo.zett.bytelevel`): the base's `tokenizer.json`
  (byte-level BPE, Metaspace, ...) is the source; sampled UnigramLM tokenizers, or
  task.target_tokenizer (a tokenizer.json or sentencepiece .model), the target;
- an untied base gets its output (LM-head) rows predicted by the hypernetwork's second head
  (`separate_out`), a tied one only its embedding; the model has no output bias;
- the loss is next-token cross-entropy of the frozen LM with the predicted matrices on
  `[bos] text [eos]` rows (`tokens`, `real`); logits of vocabulary padding rows are masked.

Parameters: {'hypernet': ..., 'base': the LM tree}; the recipe freezes `^base/` and the
scalers. Base: task.base, a `zoo convert lm` dir or a `causal_lm` workdir.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from zoo.io import modeldir
from zoo.lm.model import LM, LMConfig, count_flops
from zoo.lm.task import CausalLMTask, corpus_texts, with_markers
from zoo.train.losses import label_smoothed_cross_entropy
from zoo.zett import hypernet, vocab
from zoo.zett.batches import transfer_batches
from zoo.zett.bytelevel import ByteDecomposer, TokenVocab
from zoo.zett.task import NEG_INF_BIAS, TokenizerTransferTask, auxiliary_loss

LM_TEXT_KEYS = ("corpus", "text_langs", "locale_dir", "data_dir", "train_files", "validation_files")


def base_lm(base: str) -> tuple[LMConfig, str]:
    """(config, tokenizer.json path) of a `zoo convert lm` dir or a `causal_lm` workdir."""
    base = os.path.expanduser(base)
    if modeldir.is_model_dir(base):
        meta = modeldir.read_meta(base)
        if meta["family"] != "lm":
            raise ValueError(
                f"--config.task.base={base} holds a {meta['family']} model; the LM transfer "
                "task needs an lm model dir (`zoo convert lm`) or a causal_lm workdir"
            )
        path = os.path.join(base, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{base} has no tokenizer.json; convert the model again from a directory that "
                "holds its tokenizer.json"
            )
        return LMConfig.from_dict(meta["config"]), path
    c = modeldir.read_run_config(base, [CausalLMTask.name], "--config.task.base")
    task = CausalLMTask(c)
    task.tokenizer()
    return task.model_config, task.tokenizer_path


def lm_hypernet_config(model_fields: dict, base: LMConfig, pad_id: int) -> hypernet.HypernetConfig:
    """The hypernetwork of a recipe's model block for base LM `base`: its sizes, the
    decompositions' pad, an output head when untied, no bias head (Llamas have no output bias)."""
    return hypernet.HypernetConfig.from_dict(
        {
            **model_fields,
            "source_vocab_size": base.vocab_size,
            "embed_dim": base.hidden_size,
            "pad_id": pad_id,
            "separate_out": not base.tie_word_embeddings,
            "predict_bias": False,
        }
    )


class _SamplerTemplate:
    """What `vocab.sample_unigram_model` reads from its template: a processor whose normalizer
    the sampled tokenizers keep. Here: no normalization but sentencepiece's whitespace handling
    (a dummy "▁" prefix, runs of spaces merged, " " -> "▁"), so text stays as written."""

    def __init__(self) -> None:
        proto = model_pb2.ModelProto()
        spec = proto.normalizer_spec
        spec.name = "identity"
        spec.add_dummy_prefix = True
        spec.remove_extra_whitespaces = True
        spec.escape_whitespaces = True
        proto.trainer_spec.model_type = model_pb2.TrainerSpec.UNIGRAM
        for piece, kind in (("<unk>", 2), ("<s>", 3), ("</s>", 3), (vocab.META, 1)):
            proto.pieces.add(piece=piece, score=0.0, type=kind)
        self.processor = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


class LMTokenizerTransferTask(TokenizerTransferTask):
    name = "lm_tokenizer_transfer"

    def __init__(self, config):  # noqa: D107 (the mBART base's __init__ is not called)
        self.config = config
        self._check_frozen(config)
        t = config.task
        self.base_config, self.tokenizer_path = base_lm(t.base)
        self.base_model = LM(self.base_config)
        self.source_tokenizer = TokenVocab.from_file(self.tokenizer_path)
        fields = dict(config.model.to_dict())
        self._decomposer = ByteDecomposer(self.source_tokenizer, int(fields.get("max_len", 7)))
        self.pad_id = self._decomposer.pad_id
        self.tied = self.base_config.tie_word_embeddings
        self.hypernet_config = lm_hypernet_config(fields, self.base_config, self.pad_id)
        self.hypernet = hypernet.Hypernet(self.hypernet_config)
        self._vocab_rows = None
        self._template = _SamplerTemplate()
        self._texts: dict[str, list[tuple[str]]] = {}

    # --- shapes --------------------------------------------------------------------------
    @property
    def vocab_rows(self) -> int:
        if self._vocab_rows is None:
            t = self.config.task
            if t.target_tokenizer:
                self._vocab_rows = self.target_tokenizer().vocab_size
            else:
                self._vocab_rows = int(t.sample_vocab_size)
        return self._vocab_rows

    def text_axes(self):
        return {"tokens": ("batch", "length"), "real": ("batch", "length")}

    def example_text(self, batch_size):
        L = self.config.data.max_length
        return {k: np.zeros((batch_size, L), np.int32) for k in self.text_axes()}

    def tokens_in_batch(self, batch) -> int:
        return int(np.count_nonzero(np.asarray(batch["real"])))

    def positions_in_batch(self, batch) -> tuple[int, int]:
        real = np.asarray(batch["real"])
        return int(np.count_nonzero(real)), int(real.size)

    def flops_per_batch(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
        b, length = batch_shapes["tokens"]
        v, k = batch_shapes["surface"]
        base = count_flops(dataclasses.replace(self.base_config, vocab_size=v), b, length)
        return base + 6.0 * self._hypernet_param_count(k) * v * k

    def table_shapes(self) -> list[tuple[int, int]]:
        c = self.base_config
        return [(c.vocab_size, c.hidden_size)] * (1 if self.tied else 2)

    # --- the base's matrices ---------------------------------------------------------------
    def source_tables(self, base_params):
        """(input embedding [S, D], output rows [S, D] or None when tied, output bias None)."""
        e_in = base_params["embed_tokens"]["embedding"]
        e_out = None if self.tied else base_params["lm_head"]["kernel"].T
        return e_in, e_out, None

    def base_init(self, rng, batch):
        return self.base_model.init({"params": rng}, batch["tokens"], batch["real"])

    def finish_init(self, params):
        """Loads the base LM from task.base and fits the scalers on anchor tokens."""
        base_params = modeldir.load_params(os.path.expanduser(self.config.task.base))
        modeldir.check_compatible(
            base_params, jax.eval_shape(lambda: params["base"]), self.config.task.base
        )
        source = self.source_surface()
        anchors = self.anchor_ids(source)
        e_in, e_out, _ = self.source_tables(base_params)
        hn = hypernet.fit_scalers(
            self.hypernet,
            jax.device_get(params["hypernet"]),
            jnp.asarray(e_in),
            source.ids[anchors],
            anchors,
            source_out=None if e_out is None else jnp.asarray(e_out),
        )
        return {"hypernet": hn, "base": base_params}

    def predict(self, hn_params, base_params, surface, special_source, vocab_valid=None):
        """(input embedding [V, D], output rows [V, D] or None, raw predictions)."""
        e_in, e_out, _ = self.source_tables(base_params)
        pred = self.hypernet.apply({"params": hn_params}, surface, e_in, e_out)
        emb = hypernet.copy_special_rows(pred["in"], e_in, special_source)
        out = (
            None
            if e_out is None
            else hypernet.copy_special_rows(pred["out"], e_out, special_source)
        )
        return emb, out, pred

    def swapped_params(self, base_params, emb, out):
        """The base LM's parameters with a new vocabulary's matrices."""
        swapped = {**base_params, "embed_tokens": {"embedding": emb}}
        if out is not None:
            swapped["lm_head"] = {"kernel": out.T}
        return swapped

    def base_model_for(self, vocab_size: int):
        return LM(dataclasses.replace(self.base_config, vocab_size=int(vocab_size)))

    def _main_loss(self, params, batch, rng, train: bool):
        hp, bp = params["hypernet"], params["base"]
        emb, out, pred = self.predict(hp, bp, batch["surface"], batch["special_source"])
        tokens, real = batch["tokens"], batch["real"]
        logits = self.base_model_for(emb.shape[0]).apply(
            {"params": self.swapped_params(bp, emb, out)}, tokens, real
        )
        logits = jnp.where(batch["vocab_valid"], logits, NEG_INF_BIAS)
        targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
        weights = (real != 0) & (jnp.pad(real[:, 1:], ((0, 0), (0, 1))) != 0)
        loss, nll = label_smoothed_cross_entropy(logits, targets, weights, 0.0)
        correct = ((logits.argmax(-1) == targets) & weights).sum()
        e_in, e_out, _ = self.source_tables(bp)
        aux_args = (batch["surface"], batch["special_source"], batch["vocab_valid"], self.pad_id)
        aux_loss = auxiliary_loss(pred["in"], e_in, *aux_args)
        if e_out is not None:
            aux_loss = aux_loss + auxiliary_loss(pred["out"], e_out, *aux_args)
        aux = {"weight": weights.sum(), "nll": nll, "accuracy": correct, "aux_loss": aux_loss}
        return loss, aux

    def _identity_loss(self, params, batch):
        hp, bp = params["hypernet"], params["base"]
        e_in, e_out, _ = self.source_tables(bp)
        pred = self.hypernet.apply({"params": hp}, batch["identity_surface"], e_in, e_out)
        ids = batch["identity_ids"]
        mse = jnp.mean(jnp.square(pred["in"] - e_in[ids]))
        if e_out is not None:
            mse = mse + jnp.mean(jnp.square(pred["out"] - e_out[ids]))
        return mse

    # --- tokenizers ------------------------------------------------------------------------
    def decomposer(self) -> ByteDecomposer:
        return self._decomposer

    def source_surface(self) -> vocab.SurfaceForms:
        return self._decomposer.surface_matrix(self.source_tokenizer)

    def sampler_template(self):
        return self._template

    def make_tokenizer(self, model_proto: bytes) -> TokenVocab:
        return TokenVocab.from_model_proto(model_proto)

    def target_tokenizer(self) -> TokenVocab:
        return TokenVocab.from_file(os.path.expanduser(self.config.task.target_tokenizer))

    def encode_rows(self, tok: TokenVocab, pairs, rows: int, max_length: int):
        """tokens / real [rows, max_length]: `[bos] text [eos]` in tokenizer tok, truncated."""
        tokens = np.zeros((rows, max_length), np.int32)
        real = np.zeros((rows, max_length), np.int32)
        bos, eos = tok.roles.get("bos"), tok.roles.get("eos")
        for r, (text,) in enumerate(pairs):
            ids = with_markers(tok.encode(text), bos, eos)[:max_length]
            tokens[r, : len(ids)], real[r, : len(ids)] = ids, 1
        return {"tokens": tokens, "real": real}

    # --- data ------------------------------------------------------------------------------
    def texts(self, split: str) -> list[tuple[str]]:
        """The split's documents as 1-tuples (what the sampler counts and encode_rows reads)."""
        if split not in self._texts:
            self._texts[split] = [(s,) for s in corpus_texts(self.config.task, split) if s]
        return self._texts[split]

    def prepare_data(self) -> None:
        self.texts("train")

    def dataset(self, split, *, seed, process_index, process_count, batch_multiple, train):
        d = self.config.data
        if d.global_batch_size % process_count:
            raise ValueError(
                f"data.global_batch_size={d.global_batch_size} is not divisible by the "
                f"{process_count} processes"
            )
        texts = self.texts(split)
        if not texts:
            raise ValueError(f"split {split!r} of task.corpus={self.config.task.corpus!r} is empty")
        return transfer_batches(
            self, texts, seed=seed, train=train, process_index=process_index,
            process_count=process_count,
        )  # fmt: skip

    def describe(self) -> str:
        c = self.base_config
        return (
            f"lm_tokenizer_transfer: hypernetwork for a {c.num_layers}-layer LM (hidden "
            f"{c.hidden_size}, vocab {c.vocab_size}, {'tied' if self.tied else 'untied'})"
        )
