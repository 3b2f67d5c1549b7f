"""mBART seq2seq tasks for the loop: translation and code-switching restore (CSR).

Both train `zoo.models.mbart` with label-smoothed cross-entropy on
`inputs` / `targets` [batch, length] int32 batches padded with mBART's pad id 1.
Sequences follow the tokenizer's style (cc25: `X </s> [lang]`); the decoder
input is transformers' shift_tokens_right of the target (`[lang] Y </s>`).

- translation: inputs = source sentence, targets = its translation.
- csr (Zan et al. 2022, stage 1): inputs = a sentence whose words were partly
  replaced by dictionary translations, targets = the original sentence, in the
  same language; even examples use the source side, odd ones the target side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from zoo.data.tokenizer import shift_tokens_right
from zoo.tasks import base
from zoo.tasks.losses import token_loss


class MBartTextTask(base.Task):
    """Shared by translation and CSR: model, loss, batch layout, tokenised sources."""

    def __init__(self, config):
        super().__init__(config)
        from zoo.models import mbart

        self.mbart = mbart
        fields = config.model.to_dict()
        if fields.get("vocab_size", 0) == 0:  # 0 = the tokenizer's vocabulary
            fields["vocab_size"] = self.tokenizer().vocab_size
        # Without the tokenizer file (e.g. `zoo compile` elsewhere) only the data would need it.
        elif os.path.exists(os.path.expanduser(config.task.spm_model)) and (
            fields["vocab_size"] != (tok := self.tokenizer()).vocab_size
        ):
            raise ValueError(
                f"model.vocab_size={fields['vocab_size']} but the tokenizer "
                f"{config.task.spm_model} has {tok.vocab_size} ids; set model.vocab_size=0 to "
                "take the tokenizer's"
            )
        self.model_config = mbart.MBartConfig.from_dict(fields)
        self.model = mbart.MBart(self.model_config)
        self.pad_id = self.model_config.pad_token_id
        self._sources: dict[str, list[dict[str, np.ndarray]]] = {}

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
        from zoo.models import transformer

        b, s = batch_shapes["inputs"]
        t = batch_shapes["targets"][1]
        return transformer.count_flops(self.model_config, b, s, t)

    def tokens_in_batch(self, batch) -> int:
        return int(
            sum(np.count_nonzero(np.asarray(batch[k]) != self.pad_id) for k in self.batch_axes())
        )

    # --- generation ----------------------------------------------------------------
    def translate(
        self,
        params,
        sentences: list[str],
        *,
        beam_size: int = 5,
        length_penalty: float = 1.0,
        max_len_a: float = 1.2,
        max_len_b: int = 10,
        num_groups: int = 1,
        diversity_strength: float = 0.0,
        batch_size: int = 32,
        on_batch=None,
    ) -> list[str]:
        """Beam (num_groups > 1: diverse beam) translations of `sentences`, in order.

        Sentences are sorted by length and padded to multiples of 16 tokens so that only a
        few shapes get compiled; max output length per sentence = max_len_a * src_len +
        max_len_b (fairseq's a/b, capped by the position table). `on_batch(n)` is called
        after each batch (progress bars).
        """
        import jax

        from zoo.decode import search

        t = self.config.task
        tok = self.tokenizer()
        limit = self.model_config.max_length
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        out: list[str] = [""] * len(sentences)
        start_id = tok.decoder_start_id(t.tgt_lang)
        forced_bos = tok.forced_bos_id(t.tgt_lang)
        model, mbart = self.model, self.mbart

        def generate(params, ids_BxS, mask_BxS, max_steps: int):
            encoded = mbart.encode(model, params, ids_BxS, mask_BxS)
            cache = mbart.init_cache(model, params, encoded, mask_BxS, max_steps)
            max_len_B = search.max_length_for(mask_BxS.sum(1), max_len_a, max_len_b, max_steps)
            start_B = jax.numpy.full((ids_BxS.shape[0],), start_id, jax.numpy.int32)
            seqs, _ = search.diverse_beam_search(
                lambda tokens, c: mbart.decode_step(model, params, c, tokens),
                cache,
                start_ids_B=start_B,
                beam_size=beam_size,
                num_groups=num_groups,
                diversity_strength=diversity_strength,
                max_len=max_len_B,
                eos_id=tok.eos_id,
                pad_id=tok.pad_id,
                length_penalty=length_penalty,
                forced_bos_id=forced_bos,
                forced_eos_id=tok.eos_id,  # as mBART's generation config: </s> at the budget
                max_steps=max_steps,
            )
            return seqs[:, 0]

        generate_jit = jax.jit(
            generate, static_argnums=(3,), compiler_options=search.compiler_options()
        )
        for lo in range(0, len(order), batch_size):
            chunk = order[lo : lo + batch_size]
            ids, mask = tok.encode_batch(
                [sentences[i] for i in chunk], t.src_lang, max_length=limit, truncate=True
            )
            length = min(_round_up(ids.shape[1], 16), limit)
            rows = _round_up(len(chunk), 8)
            ids_p = np.full((rows, length), tok.pad_id, np.int32)
            mask_p = np.zeros((rows, length), bool)
            ids_p[: ids.shape[0], : ids.shape[1]] = ids
            mask_p[: mask.shape[0], : mask.shape[1]] = mask
            mask_p[len(chunk) :, 0] = True  # filler rows: one token, discarded below
            max_steps = min(int(max_len_a * length + max_len_b), limit)
            tokens = np.asarray(generate_jit(params, ids_p, mask_p, max_steps))
            for row, i in enumerate(chunk):
                seq = tokens[row].tolist()
                if tok.eos_id in seq:
                    seq = seq[: seq.index(tok.eos_id)]
                out[i] = tok.decode(seq)
            if on_batch is not None:
                on_batch(len(chunk))
        return out

    # --- data --------------------------------------------------------------------
    def tokenizer(self):
        from zoo.data import tokenizer as ztok

        t = self.config.task
        languages = ztok.CC25_LANGUAGES if t.tokenizer_style == "cc25" else ztok.MBART50_LANGUAGES
        return ztok.MBartTokenizer(
            os.path.expanduser(t.spm_model), languages=languages, style=t.tokenizer_style
        )

    def text_pairs(self, split: str) -> list[tuple[str, str]]:
        """(source, target) sentences of a split from task.corpus.

        "gettext": the catalogs under task.locale_dir (zoo.data.gettext, no TensorFlow).
        "tfds:NAME" (e.g. tfds:wmt16_translate/ro-en): a TFDS catalog dataset, whose builder
        needs TensorFlow (`pip install -e '.[tfds-catalog]'`) and downloads once, with network,
        into task.data_dir.
        """
        t = self.config.task
        corpus = t.get("corpus", "gettext")
        if corpus == "gettext":
            from zoo.data import gettext

            builder = gettext.gettext_builder(
                os.path.expanduser(t.data_dir),
                src_lang=t.src_text_lang,
                tgt_lang=t.tgt_text_lang,
                locale_dir=t.locale_dir,
            )
            ds = builder.as_data_source()[split]
        elif corpus.startswith("tfds:"):
            ds = _tfds_catalog_source(corpus[len("tfds:") :], split, t.data_dir)
        else:
            raise ValueError(f"task.corpus={corpus!r}; use 'gettext' or 'tfds:NAME'")
        return [(_text(ex[t.src_text_lang]), _text(ex[t.tgt_text_lang])) for ex in ds]

    def prepare_data(self) -> None:
        self.text_pairs("train")

    def examples(self, split: str, train: bool) -> list[dict[str, np.ndarray]]:
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


def _tfds_catalog_source(name: str, split: str, data_dir: str):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=os.path.expanduser(data_dir))
    except Exception as e:  # DatasetNotFoundError without TensorFlow's registered builders
        raise ValueError(
            f"TFDS catalog dataset {name!r} is not available ({type(e).__name__}); catalog "
            "builders such as wmt16_translate need TensorFlow: pip install -e '.[tfds-catalog]'"
        ) from e
    if not builder.is_prepared():
        builder.download_and_prepare(file_format="array_record")  # needs network, once
    return builder.as_data_source(split=split)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@base.register
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
