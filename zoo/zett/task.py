"""Zero-shot tokenizer transfer (ZeTT): trains a hypernetwork for a frozen mBART.

Every step (reference: /work/shared/reference/zett.md section 2):

1. A UnigramLM tokenizer is sampled from the substring counts of the last
   `task.sample_window` batches, with noise (`zoo.zett.vocab`, `zoo.zett.batches`), so that the
   hypernetwork sees a different tokenizer at each step. With `task.target_tokenizer` set,
   one fixed tokenizer is used instead (fixed-target mode).
2. The batch is tokenized with it, and every token of its vocabulary is decomposed into the
   base model's original tokens (`surface` [V, 7]).
3. The hypernetwork predicts the embedding and output bias of every token; special tokens
   take the source rows; the frozen base model runs with them and its own loss
   (translation cross-entropy) is the main loss, plus `task.aux_weight` x the auxiliary
   loss that pulls the predictions of one-piece tokens toward their source rows.
   For the first `task.identity_steps` steps the loss is instead the MSE between the
   predictions for random source tokens and their own rows (identity warm-up).

Parameters: {'hypernet': ..., 'base': the mBART tree}. `finish_init` loads the base from
`task.base` and fits the hypernetwork's frozen scalers to it; the recipe freezes `^base/`
and the scalers (optim.frozen), and the task refuses to run otherwise.

Batch features: inputs/targets [B, L] (token ids in the step's tokenizer); surface
[V, 7], special_source [V], vocab_valid [V] (the step's vocabulary, padded to a fixed V and
shared by every example, so not split over devices); identity_surface [N, 7],
identity_ids [N] (warm-up tokens).

Inference is not here: `zoo.zett.transfer` moves a model to a new tokenizer.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zoo.io import modeldir
from zoo.mbart.corpus import DATA_KEYS
from zoo.mbart.tasks import TranslationTask, translation_config
from zoo.mbart.tokenizer import MBartTokenizer, shift_tokens_right
from zoo.nn import encoder_decoder
from zoo.train.losses import token_loss
from zoo.train.task import Task
from zoo.zett import hypernet, vocab
from zoo.zett.batches import transfer_batches

NEG_INF_BIAS = -1e5  # output bias of vocabulary padding rows


def base_translation_config(task_config) -> Any:
    """Config of the base model as a translation task (its model fields, tokenizer, data)."""
    t = task_config
    c = translation_config(os.path.expanduser(t.base), t.src_lang, t.tgt_lang)
    for key in DATA_KEYS:
        c.task[key] = t[key]
    c.task.label_smoothing = 0.0
    return c


class TokenizerTransferTask(Task):
    name = "tokenizer_transfer"

    def __init__(self, config):
        super().__init__(config)
        self._check_frozen(config)
        t = config.task
        self.base_config = base_translation_config(t)
        self.base_task = TranslationTask(self.base_config)
        self.base_model = self.base_task.model
        bc = self.base_task.model_config
        self.pad_id = bc.pad_token_id
        self.source_tokenizer = self.base_task.tokenizer()
        fields = {k: v for k, v in config.model.to_dict().items()}
        fields.update(source_vocab_size=bc.vocab_size, embed_dim=bc.d_model, pad_id=self.pad_id)
        fields.setdefault("separate_out", False)
        fields.setdefault("predict_bias", bool(bc.final_logits_bias))
        self.hypernet_config = hypernet.HypernetConfig.from_dict(fields)
        self.hypernet = hypernet.Hypernet(self.hypernet_config)
        self._vocab_rows = None

    def _check_frozen(self, config) -> None:
        frozen = tuple(config.optim.get("frozen", ()) or ())
        if "^base/" not in frozen or "scaler" not in frozen:
            raise ValueError(
                f"optim.frozen={list(frozen)}: the {self.name} task trains only the "
                'hypernetwork; set --config.optim.frozen=\'("^base/", "scaler")\' (the base '
                "model and the fitted scalers stay frozen)"
            )

    # --- shapes ------------------------------------------------------------------
    @property
    def vocab_rows(self) -> int:
        """Fixed number of vocabulary rows per batch (the step's tokenizer, padded)."""
        if self._vocab_rows is None:
            t = self.config.task
            if t.target_tokenizer:
                self._vocab_rows = self.target_tokenizer().vocab_size
            else:  # spm pieces + mBART's <pad> + language codes + <mask>
                langs = len(self.source_tokenizer.languages)
                self._vocab_rows = int(t.sample_vocab_size) + 2 + langs
        return self._vocab_rows

    @property
    def identity_rows(self) -> int:
        return min(int(self.config.task.identity_tokens), self.hypernet_config.source_vocab_size)

    # Features of the step's vocabulary, the same for every family's text features.
    VOCAB_AXES = {
        "surface": (None, None),
        "special_source": (None,),
        "vocab_valid": (None,),
        "identity_surface": (None, None),
        "identity_ids": (None,),
    }

    def text_axes(self) -> dict[str, tuple[str | None, ...]]:
        """Logical axes of the text features (what `encode_rows` returns)."""
        return {"inputs": ("batch", "length"), "targets": ("batch", "length")}

    def batch_axes(self):
        return {**self.text_axes(), **self.VOCAB_AXES}

    def example_text(self, batch_size) -> dict[str, np.ndarray]:
        L = self.config.data.max_length
        return {k: np.full((batch_size, L), self.pad_id, np.int32) for k in self.text_axes()}

    def example_batch(self, batch_size):
        V, n, k = self.vocab_rows, self.identity_rows, self.hypernet_config.max_len
        return {
            **self.example_text(batch_size),
            "surface": np.full((V, k), self.pad_id, np.int32),
            "special_source": np.full((V,), -1, np.int32),
            "vocab_valid": np.ones((V,), bool),
            "identity_surface": np.full((n, k), self.pad_id, np.int32),
            "identity_ids": np.zeros((n,), np.int32),
        }

    def tokens_in_batch(self, batch) -> int:
        return int(
            sum(
                np.count_nonzero(np.asarray(batch[k]) != self.pad_id) for k in ("inputs", "targets")
            )
        )

    def flops_per_batch(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
        b, s = batch_shapes["inputs"]
        v, k = batch_shapes["surface"]
        bc = self.base_task.model_config
        base_flops = encoder_decoder.count_flops(
            dataclasses.replace(bc, vocab_size=v), b, s, batch_shapes["targets"][1]
        )
        return base_flops + 6.0 * self._hypernet_param_count(k) * v * k

    def _hypernet_param_count(self, k: int) -> int:
        """Parameters of the hypernetwork (counted once; the loop asks at every log step)."""
        if getattr(self, "_hn_param_count", None) is None:
            tables = [jnp.zeros(shape) for shape in self.table_shapes()]
            shapes = jax.eval_shape(
                lambda: self.hypernet.init(
                    jax.random.PRNGKey(0), jnp.zeros((1, k), jnp.int32), *tables
                )
            )
            self._hn_param_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
        return self._hn_param_count

    def table_shapes(self) -> list[tuple[int, int]]:
        """Shapes of the source matrices the hypernetwork reads (input embedding, and the
        output rows of an untied model)."""
        bc = self.base_task.model_config
        return [(bc.vocab_size, bc.d_model)]

    # --- model ---------------------------------------------------------------------
    def base_init(self, rng, batch):
        """The base model's init on the batch's text features (its shapes; finish_init loads
        the real weights)."""
        inputs, targets = batch["inputs"], batch["targets"]
        return self.base_model.init(
            {"params": rng}, inputs, inputs != self.pad_id, shift_tokens_right(targets, self.pad_id)
        )

    def init_variables(self, rng, batch):
        r1, r2 = jax.random.split(rng)
        tables = [jnp.zeros(shape, jnp.float32) for shape in self.table_shapes()]
        hn_vars = self.hypernet.init(r1, batch["surface"], *tables)
        base_vars = self.base_init(r2, batch)
        return {"params": {"hypernet": hn_vars["params"], "base": base_vars["params"]}}

    def finish_init(self, params):
        """Loads the base model from task.base and fits the scalers on anchor tokens."""
        base_params = modeldir.load_params(os.path.expanduser(self.config.task.base))
        modeldir.check_compatible(
            base_params, jax.eval_shape(lambda: params["base"]), self.config.task.base
        )
        source = self.source_surface()
        anchors = self.anchor_ids(source)
        hn = hypernet.fit_scalers(
            self.hypernet,
            jax.device_get(params["hypernet"]),
            jnp.asarray(base_params["shared"]["embedding"]),
            source.ids[anchors],
            anchors,
            source_bias=base_params.get("final_logits_bias"),
        )
        return {"hypernet": hn, "base": base_params}

    def anchor_ids(self, source) -> np.ndarray:
        """The first task.anchor_tokens non-special source ids (ZeTT: the first 2048)."""
        ids = np.flatnonzero(source.special_source < 0)
        return ids[: int(self.config.task.anchor_tokens)].astype(np.int32)

    def predict(self, hn_params, base_params, surface, special_source, vocab_valid=None):
        """(embedding [V, D], output bias [V] or None) for a vocabulary, specials copied."""
        E = base_params["shared"]["embedding"]
        pred = self.hypernet.apply({"params": hn_params}, surface, E)
        emb = hypernet.copy_special_rows(pred["in"], E, special_source)
        bias = None
        if pred["bias"] is not None:
            bias = hypernet.copy_special_rows(
                pred["bias"], base_params["final_logits_bias"], special_source
            )
            if vocab_valid is not None:
                bias = jnp.where(vocab_valid, bias, NEG_INF_BIAS)
        return emb, bias, pred

    def _main_loss(self, params, batch, rng, train: bool):
        hp, bp = params["hypernet"], params["base"]
        emb, bias, pred = self.predict(
            hp, bp, batch["surface"], batch["special_source"], batch["vocab_valid"]
        )
        swapped = {**bp, "shared": {**bp["shared"], "embedding": emb}}
        if bias is not None:
            swapped["final_logits_bias"] = bias
        inputs, targets = batch["inputs"], batch["targets"]
        logits = self.base_model_for(emb.shape[0]).apply(
            {"params": swapped},
            inputs,
            inputs != self.pad_id,
            shift_tokens_right(targets, self.pad_id),
            decoder_attention_mask=targets != self.pad_id,
            deterministic=True,  # the base model is frozen: no dropout (ZeTT runs it in eval)
        )
        loss, aux = token_loss(logits, targets, self.pad_id, 0.0)
        aux["aux_loss"] = auxiliary_loss(
            pred["in"],
            bp["shared"]["embedding"],
            batch["surface"],
            batch["special_source"],
            batch["vocab_valid"],
            self.pad_id,
        )
        return loss, aux

    def base_model_for(self, vocab_size: int):
        """The base model with another vocabulary size (same weights otherwise)."""
        bc = self.base_task.model_config
        return type(self.base_model)(dataclasses.replace(bc, vocab_size=int(vocab_size)))

    def _identity_loss(self, params, batch):
        hp, bp = params["hypernet"], params["base"]
        E = bp["shared"]["embedding"]
        pred = self.hypernet.apply({"params": hp}, batch["identity_surface"], E)
        ids = batch["identity_ids"]
        mse = jnp.mean(jnp.square(pred["in"] - E[ids]))
        if pred["bias"] is not None:
            mse = mse + jnp.mean(jnp.square(pred["bias"] - bp["final_logits_bias"][ids]))
        return mse

    def loss(self, params, batch, rng, *, train, step=None):
        t = self.config.task
        params = {**params, "base": jax.lax.stop_gradient(params["base"])}

        def main(_):
            loss, aux = self._main_loss(params, batch, rng, train)
            total = loss + t.aux_weight * aux["aux_loss"] * aux["weight"]
            weight = aux["weight"].astype(jnp.float32)
            return total, {
                "weight": weight,
                "nll": aux["nll"],
                "accuracy": aux["accuracy"].astype(jnp.float32),
                "aux_loss": aux["aux_loss"] * weight,
                "identity_loss": jnp.zeros((), jnp.float32),
            }

        if step is None or not t.identity_steps:
            return main(None)

        def identity(_):
            mse = self._identity_loss(params, batch)
            zero = jnp.zeros((), jnp.float32)
            return mse, {
                "weight": jnp.ones((), jnp.float32),
                "nll": zero,
                "accuracy": zero,
                "aux_loss": zero,
                "identity_loss": mse,
            }

        return jax.lax.cond(step < t.identity_steps, identity, main, None)

    # --- tokenizers ----------------------------------------------------------------
    def decomposer(self) -> vocab.Decomposer:
        if not hasattr(self, "_decomposer"):
            self._decomposer = vocab.Decomposer(
                self.source_tokenizer, max_len=self.hypernet_config.max_len
            )
        return self._decomposer

    def make_tokenizer(self, model_proto: bytes) -> MBartTokenizer:
        src = self.source_tokenizer
        return MBartTokenizer(
            None, model_proto=model_proto, languages=src.languages, style=src.style
        )

    def source_surface(self) -> vocab.SurfaceForms:
        """Decompositions of the source's own vocabulary (the identity warm-up's rows)."""
        return self.decomposer().source_surface()

    def sampler_template(self) -> MBartTokenizer:
        """The tokenizer whose normalizer the sampled tokenizers keep (the source's)."""
        return self.source_tokenizer

    def encode_rows(self, tok: MBartTokenizer, pairs, rows: int, max_length: int):
        """inputs / targets [rows, max_length] of (source, target) pairs in tokenizer tok."""
        t = self.config.task
        inputs = np.full((rows, max_length), self.pad_id, np.int32)
        targets = np.full((rows, max_length), self.pad_id, np.int32)
        for r, (src, tgt) in enumerate(pairs):
            a = tok.encode(src, t.src_lang, max_length=max_length, truncate=True)
            b = tok.encode(tgt, t.tgt_lang, max_length=max_length, truncate=True)
            inputs[r, : len(a)], targets[r, : len(b)] = a, b
        return {"inputs": inputs, "targets": targets}

    def target_tokenizer(self) -> MBartTokenizer:
        path = os.path.expanduser(self.config.task.target_tokenizer)
        return self.make_tokenizer(vocab.load_target_model_proto(path))

    # --- data ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.base_task.text_pairs("train")

    def dataset(self, split, *, seed, process_index, process_count, batch_multiple, train):
        d = self.config.data
        if d.global_batch_size % process_count:
            raise ValueError(
                f"data.global_batch_size={d.global_batch_size} is not divisible by the "
                f"{process_count} processes"
            )
        pairs = self.base_task.text_pairs(split)
        if not pairs:
            raise ValueError(f"split {split!r} of task.corpus={self.config.task.corpus!r} is empty")
        return transfer_batches(
            self,
            pairs,
            seed=seed,
            train=train,
            process_index=process_index,
            process_count=process_count,
        )


def auxiliary_loss(pred_VxD, source_SxD, surface_VxK, special_source_V, valid_V, pad_id):
    """ZeTT's auxiliary loss: for tokens that are one source piece (not special, not fallback),
    sum_d (pred - source row)^2, averaged over them, divided by the mean L2 norm of their
    source rows. 0 when there are none."""
    first = surface_VxK[:, 0]
    single = (
        (surface_VxK[:, 1:] == pad_id).all(-1)
        & (special_source_V < 0)
        & (first < source_SxD.shape[0])
        & valid_V
    )
    target = jnp.take(source_SxD, jnp.clip(first, 0, source_SxD.shape[0] - 1), axis=0)
    sq = jnp.square(pred_VxD - target).sum(-1)
    n = jnp.maximum(single.sum(), 1)
    mean_sq = jnp.where(single, sq, 0.0).sum() / n
    mean_norm = jnp.where(single, jnp.linalg.norm(target, axis=-1), 0.0).sum() / n
    return jnp.where(single.any(), mean_sq / jnp.maximum(mean_norm, 1e-12), 0.0)
