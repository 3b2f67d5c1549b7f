"""Zero-shot tokenizer transfer (ZeTT): trains a hypernetwork for a frozen mBART.

Every step (reference: /work/shared/reference/zett.md section 2):

1. A UnigramLM tokenizer is sampled from the substring counts of the last
   `task.sample_window` batches, with noise (zoo.data.vocab_transfer), so that the
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
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zoo.data.tokenizer import shift_tokens_right
from zoo.tasks import base
from zoo.tasks.losses import token_loss

NEG_INF_BIAS = -1e5  # output bias of vocabulary padding rows
# Text-data fields of the task config that the base translation task reads.
DATA_KEYS = ("corpus", "locale_dir", "data_dir", "src_text_lang", "tgt_text_lang")


def base_translation_config(task_config) -> Any:
    """Config of the base model as a translation task (its model fields, tokenizer, data)."""
    from zoo.commands import translation_config

    t = task_config
    c = translation_config(os.path.expanduser(t.base), t.src_lang, t.tgt_lang)
    for key in DATA_KEYS:
        c.task[key] = t[key]
    c.task.label_smoothing = 0.0
    return c


@base.register
class TokenizerTransferTask(base.Task):
    name = "tokenizer_transfer"

    def __init__(self, config):
        super().__init__(config)
        from zoo import tasks
        from zoo.models import zett

        frozen = tuple(config.optim.get("frozen", ()) or ())
        if "^base/" not in frozen or "scaler" not in frozen:
            raise ValueError(
                f"optim.frozen={list(frozen)}: the tokenizer_transfer task trains only the "
                'hypernetwork; set --config.optim.frozen=\'("^base/", "scaler")\' (the base '
                "model and the fitted scalers stay frozen)"
            )
        t = config.task
        self.base_config = base_translation_config(t)
        self.base_task = tasks.get_task(self.base_config)
        self.base_model = self.base_task.model
        bc = self.base_task.model_config
        self.pad_id = bc.pad_token_id
        self.source_tokenizer = self.base_task.tokenizer()
        fields = {k: v for k, v in config.model.to_dict().items()}
        fields.update(source_vocab_size=bc.vocab_size, embed_dim=bc.d_model, pad_id=self.pad_id)
        fields.setdefault("separate_out", False)
        fields.setdefault("predict_bias", bool(bc.final_logits_bias))
        self.hypernet_config = zett.HypernetConfig.from_dict(fields)
        self.hypernet = zett.Hypernet(self.hypernet_config)
        self._vocab_rows = None

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

    def batch_axes(self):
        return {
            "inputs": ("batch", "length"),
            "targets": ("batch", "length"),
            "surface": (None, None),
            "special_source": (None,),
            "vocab_valid": (None,),
            "identity_surface": (None, None),
            "identity_ids": (None,),
        }

    def example_batch(self, batch_size):
        L, V = self.config.data.max_length, self.vocab_rows
        n, k = self.identity_rows, self.hypernet_config.max_len
        return {
            "inputs": np.full((batch_size, L), self.pad_id, np.int32),
            "targets": np.full((batch_size, L), self.pad_id, np.int32),
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
        from zoo.models import transformer

        b, s = batch_shapes["inputs"]
        v, k = batch_shapes["surface"]
        bc = self.base_task.model_config
        base_flops = transformer.count_flops(
            dataclasses.replace(bc, vocab_size=v), b, s, batch_shapes["targets"][1]
        )
        return base_flops + 6.0 * self._hypernet_param_count(k) * v * k

    def _hypernet_param_count(self, k: int) -> int:
        """Parameters of the hypernetwork (counted once; the loop asks at every log step)."""
        if getattr(self, "_hn_param_count", None) is None:
            bc = self.base_task.model_config
            self._hn_param_count = sum(
                int(np.prod(x.shape))
                for x in jax.tree.leaves(
                    jax.eval_shape(
                        lambda: self.hypernet.init(
                            jax.random.PRNGKey(0),
                            jnp.zeros((1, k), jnp.int32),
                            jnp.zeros((bc.vocab_size, bc.d_model)),
                        )
                    )
                )
            )
        return self._hn_param_count

    # --- model ---------------------------------------------------------------------
    def init_variables(self, rng, batch):
        r1, r2 = jax.random.split(rng)
        inputs, targets = batch["inputs"], batch["targets"]
        base_vars = self.base_model.init(
            {"params": r2}, inputs, inputs != self.pad_id, shift_tokens_right(targets, self.pad_id)
        )
        bc = self.base_task.model_config
        hn_vars = self.hypernet.init(
            r1, batch["surface"], jnp.zeros((bc.vocab_size, bc.d_model), jnp.float32)
        )
        return {"params": {"hypernet": hn_vars["params"], "base": base_vars["params"]}}

    def finish_init(self, params):
        """Loads the base model from task.base and fits the scalers on anchor tokens."""
        from zoo.models import zett
        from zoo.pretrained import modeldir

        base_params = modeldir.load_params(os.path.expanduser(self.config.task.base))
        modeldir.check_compatible(
            base_params, jax.eval_shape(lambda: params["base"]), self.config.task.base
        )
        decomposer = self.decomposer()
        source = decomposer.source_surface()
        anchors = self.anchor_ids(source)
        hn = zett.fit_scalers(
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
        from zoo.models import zett

        E = base_params["shared"]["embedding"]
        pred = self.hypernet.apply({"params": hn_params}, surface, E)
        emb = zett.copy_special_rows(pred["in"], E, special_source)
        bias = None
        if pred["bias"] is not None:
            bias = zett.copy_special_rows(
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
    def decomposer(self):
        from zoo.data import vocab_transfer

        if not hasattr(self, "_decomposer"):
            self._decomposer = vocab_transfer.Decomposer(
                self.source_tokenizer, max_len=self.hypernet_config.max_len
            )
        return self._decomposer

    def make_tokenizer(self, model_proto: bytes):
        from zoo.data import tokenizer as ztok

        src = self.source_tokenizer
        return ztok.MBartTokenizer(
            None, model_proto=model_proto, languages=src.languages, style=src.style
        )

    def target_tokenizer(self):
        from zoo.data import vocab_transfer

        path = os.path.expanduser(self.config.task.target_tokenizer)
        return self.make_tokenizer(vocab_transfer.load_target_model_proto(path))

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
        return TransferBatches(
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


class TransferBatches:
    """Batches of text tokenized by a tokenizer sampled per step (or a fixed one).

    Every batch is a pure function of (seed, step): the sentences, the substring counts of the
    last sample_window batches and the sampled tokenizer, so the iterator state is just the
    step and a resumed run sees exactly the batches it would have seen.
    Train: sentences drawn at random for ever; eval: one ordered pass.
    """

    def __init__(self, task, pairs, *, seed, train, process_index, process_count):
        self.task, self.pairs, self.seed, self.train = task, pairs, seed, train
        self.process_index, self.process_count = process_index, process_count

    def __iter__(self):
        return _TransferIterator(self)


class _TransferIterator:
    def __init__(self, spec: TransferBatches):
        from zoo.data import vocab_transfer

        self.spec = spec
        task = spec.task
        t = task.config.task
        self.vt = vocab_transfer
        self.global_batch = int(task.config.data.global_batch_size)
        self.max_length = int(task.config.data.max_length)
        self.window = int(t.sample_window)
        self.fixed = None
        if t.target_tokenizer:
            tok = task.target_tokenizer()
            self.fixed = (tok, task.decomposer().surface_matrix(tok))
        elif not spec.train:  # eval: one tokenizer, sampled without noise from the split
            counter = vocab_transfer.SubstringCounts(max_substring_len=int(t.max_substring_len))
            counts = counter.add(s for p in spec.pairs[: 16 * self.global_batch] for s in p)
            proto = vocab_transfer.sample_unigram_model(
                counts,
                int(t.sample_vocab_size),
                np.random.default_rng(spec.seed),
                noise_std=0.0,
                template=task.source_tokenizer,
            )
            tok = task.make_tokenizer(proto)
            self.fixed = (tok, task.decomposer().surface_matrix(tok))
        self.source = task.decomposer().source_surface()
        self.identity_pool = np.flatnonzero(self.source.special_source < 0)
        self.step = 0
        self._window: collections.deque = collections.deque()
        self._counts = collections.Counter()
        self._prefetch = None

    # --- state ---------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {"step": self.step}

    def set_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"step"}:
            raise ValueError(f"iterator state {state} is not a tokenizer_transfer iterator's")
        self._join()
        self.step = int(state["step"])
        self._window.clear()  # rebuilt from the batches before the step on the next batch

    def close(self) -> None:
        self._join()

    def _join(self):
        if self._prefetch is not None:
            self._prefetch[0].join()
            self._prefetch = None

    # --- batches -------------------------------------------------------------------
    def _indices(self, step: int) -> np.ndarray:
        n = len(self.spec.pairs)
        if self.spec.train:
            rng = np.random.default_rng([self.spec.seed, step, 1])
            return rng.choice(n, self.global_batch, replace=n < self.global_batch)
        lo = step * self.global_batch
        return np.arange(lo, min(lo + self.global_batch, n))

    def _batch_counts(self, step: int):
        t = self.spec.task.config.task
        counter = self.vt.SubstringCounts(max_substring_len=int(t.max_substring_len))
        return counter.add(s for i in self._indices(step) for s in self.spec.pairs[i])

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
        task, t = self.spec.task, self.spec.task.config.task
        idx = self._indices(step)
        if len(idx) == 0:
            return None
        if self.fixed is not None:
            tok, forms = self.fixed
        else:
            self._advance_window(step)
            rng = np.random.default_rng([self.spec.seed, step, 2])
            noise = None if t.noise_std < 0 else float(t.noise_std)
            proto = self.vt.sample_unigram_model(
                self._counts,
                int(t.sample_vocab_size),
                rng,
                noise_std=noise,
                template=task.source_tokenizer,
            )
            tok = task.make_tokenizer(proto)
            forms = task.decomposer().surface_matrix(tok)
        V, K = task.vocab_rows, task.hypernet_config.max_len
        if forms.ids.shape[0] > V:
            raise ValueError(
                f"the step's tokenizer has {forms.ids.shape[0]} ids > the {V} rows reserved"
            )
        surface = np.full((V, K), self.spec.task.pad_id, np.int32)
        surface[:, 0] = 3  # vocabulary padding rows: any real piece (their logits are masked)
        surface[: forms.ids.shape[0]] = forms.ids
        special = np.full((V,), -1, np.int32)
        special[: forms.ids.shape[0]] = forms.special_source
        valid = np.zeros((V,), bool)
        valid[: forms.ids.shape[0]] = True
        # This process's rows of the global batch (eval's last batch is padded with empty rows).
        local = self.global_batch // self.spec.process_count
        rows = idx[self.spec.process_index * local : (self.spec.process_index + 1) * local]
        inputs = np.full((local, self.max_length), task.pad_id, np.int32)
        targets = np.full((local, self.max_length), task.pad_id, np.int32)
        for r, i in enumerate(rows):
            src, tgt = self.spec.pairs[i]
            a = tok.encode(src, t.src_lang, max_length=self.max_length, truncate=True)
            b = tok.encode(tgt, t.tgt_lang, max_length=self.max_length, truncate=True)
            inputs[r, : len(a)], targets[r, : len(b)] = a, b
        rng = np.random.default_rng([self.spec.seed, step, 3])
        n = task.identity_rows
        ids = rng.choice(self.identity_pool, n, replace=n > len(self.identity_pool)).astype(
            np.int32
        )
        return {
            "inputs": inputs,
            "targets": targets,
            "surface": surface,
            "special_source": special,
            "vocab_valid": valid,
            "identity_surface": self.source.ids[ids],
            "identity_ids": ids,
        }

    def _start(self, step: int) -> None:
        box: dict[str, Any] = {}

        def work():
            try:
                box["batch"] = self.make_batch(step)
            except BaseException as e:  # re-raised in __next__
                box["error"] = e

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self._prefetch = (thread, step, box)

    def __next__(self) -> dict[str, np.ndarray]:
        if self._prefetch is None or self._prefetch[1] != self.step:
            self._join()
            self._start(self.step)
        thread, _, box = self._prefetch
        thread.join()
        self._prefetch = None
        if "error" in box:
            raise box["error"]
        batch = box["batch"]
        if batch is None:
            raise StopIteration
        self.step += 1
        self._start(self.step)  # the next batch is built while the model runs
        return batch

    def __iter__(self):
        return self


# --------------------------------------------------------------------------- transfer

METHODS = ("hypernet", "fvt", "lexical")


def load_hypernet(hn_dir: str, source_embedding: np.ndarray, predict_bias: bool):
    """(Hypernet module, its params) from a `zoo train` workdir of this task."""
    import json

    import ml_collections

    from zoo.models import zett
    from zoo.pretrained import modeldir

    path = os.path.join(hn_dir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"--hypernet {hn_dir} has no config.json; pass the workdir of a `zoo train` run of "
            "the tokenizer_transfer task (e.g. recipes/zett_demo.py)"
        )
    with open(path) as f:
        c = ml_collections.ConfigDict(json.load(f))
    if c.task.name != TokenizerTransferTask.name:
        raise ValueError(f"{hn_dir} was trained on task {c.task.name!r}, not tokenizer_transfer")
    fields = dict(c.model.to_dict())
    fields.update(
        source_vocab_size=source_embedding.shape[0],
        embed_dim=source_embedding.shape[1],
        predict_bias=fields.get("predict_bias", predict_bias),
    )
    config = zett.HypernetConfig.from_dict(fields)
    params = modeldir.load_params(hn_dir)["hypernet"]
    return zett.Hypernet(config), params


def transfer_embeddings(
    method: str,
    source_tok,
    target_tok,
    embedding: np.ndarray,
    bias: np.ndarray | None,
    *,
    hypernet=None,
    chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(embedding [V_target, D], output bias [V_target] or None) for target_tok.

    method: "hypernet" (hypernet=(module, params)), "fvt" or "lexical". Special tokens
    (<s>, <pad>, </s>, <unk>, language codes, <mask>) always take the source rows exactly.
    """
    import jax

    from zoo.data import vocab_transfer
    from zoo.models import zett

    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {METHODS}")
    embedding = np.asarray(embedding, np.float32)
    bias = None if bias is None else np.asarray(bias, np.float32)
    decomposer = vocab_transfer.Decomposer(source_tok)
    forms = decomposer.surface_matrix(target_tok)
    special = forms.special_source
    pieces = target_tok.pieces()
    unk = source_tok.unk_id

    def with_specials(new, src):
        return np.where(
            (special >= 0).reshape((-1,) + (1,) * (new.ndim - 1)), src[np.maximum(special, 0)], new
        )

    if method == "lexical":
        index = {p: i for i, p in enumerate(source_tok.pieces())}
        exact = np.asarray([index.get(p, -1) for p in pieces], np.int64)
        new_e = zett.lexical_embeddings(embedding, exact, unk_id=unk)
        new_b = None if bias is None else zett.lexical_embeddings(bias, exact, unk_id=unk)
    elif method == "fvt":
        decs = [[0] if special[v] >= 0 else decomposer.decompose(p) for v, p in enumerate(pieces)]
        new_e = zett.fvt_embeddings(embedding, decs, unk_id=unk)
        new_b = None if bias is None else zett.fvt_embeddings(bias, decs, unk_id=unk)
    else:
        if hypernet is None:
            raise ValueError("method='hypernet' needs the hypernetwork (--hypernet HN_DIR)")
        model, params = hypernet
        if model.config.max_len != forms.ids.shape[1]:
            forms = vocab_transfer.Decomposer(
                source_tok, max_len=model.config.max_len
            ).surface_matrix(target_tok)
        fn = jax.jit(lambda p, s, e: model.apply({"params": p}, s, e))
        outs_e, outs_b = [], []
        n = forms.ids.shape[0]
        for lo in range(0, n, chunk):
            block = forms.ids[lo : lo + chunk]
            rows = block.shape[0]
            if rows < chunk and n > chunk:  # one compiled shape for every chunk
                block = np.concatenate([block, np.repeat(block[-1:], chunk - rows, 0)])
            out = jax.device_get(fn(params, block, embedding))
            outs_e.append(np.asarray(out["in"])[:rows])
            if out["bias"] is not None:
                outs_b.append(np.asarray(out["bias"])[:rows])
        new_e = np.concatenate(outs_e)
        new_b = np.concatenate(outs_b) if outs_b and bias is not None else None
        if bias is not None and new_b is None:
            new_b = zett.fvt_embeddings(
                bias,
                [[0] if special[v] >= 0 else decomposer.decompose(p) for v, p in enumerate(pieces)],
                unk_id=unk,
            )
    new_e = with_specials(new_e.astype(np.float32), embedding)
    if new_b is not None:
        new_b = with_specials(new_b.astype(np.float32), bias)
    return new_e, new_b


def transfer_checkpoint(
    checkpoint: str,
    tokenizer: str,
    out: str,
    *,
    method: str = "hypernet",
    hypernet_dir: str | None = None,
) -> str:
    """`zoo transfer`: a zoo mBART model dir that uses `tokenizer` (spm or tokenizer.json)."""
    from zoo import tasks
    from zoo.commands import translation_config
    from zoo.data import tokenizer as ztok
    from zoo.data import vocab_transfer
    from zoo.pretrained import modeldir

    c = translation_config(checkpoint, "en_XX", "en_XX")
    base_task = tasks.get_task(c)
    source_tok = base_task.tokenizer()
    params = jax.device_get(modeldir.load_params(checkpoint))
    proto = vocab_transfer.load_target_model_proto(tokenizer)

    target_tok = ztok.MBartTokenizer(
        None, model_proto=proto, languages=source_tok.languages, style=source_tok.style
    )
    embedding = np.asarray(params["shared"]["embedding"])
    bias = params.get("final_logits_bias")
    hn = None
    if method == "hypernet":
        if not hypernet_dir:
            raise ValueError(
                "--method hypernet needs --hypernet HN_DIR (a tokenizer_transfer workdir)"
            )
        hn = load_hypernet(hypernet_dir, embedding, bias is not None)
    new_e, new_b = transfer_embeddings(method, source_tok, target_tok, embedding, bias, hypernet=hn)
    params = dict(params)
    params["shared"] = {**params["shared"], "embedding": new_e}
    if new_b is not None:
        params["final_logits_bias"] = new_b
    config = dataclasses.replace(base_task.model_config, vocab_size=target_tok.vocab_size)
    if os.path.exists(os.path.join(out, "model.json")):
        raise FileExistsError(f"{out} already holds a model; choose another --out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sentencepiece.bpe.model"), "wb") as f:
        f.write(proto)
    modeldir.save(
        out,
        family="mbart",
        config=config.to_dict(),
        params=params,
        tokenizer={
            "style": source_tok.style,
            "spm": "sentencepiece.bpe.model",
            "transferred_from": os.path.abspath(checkpoint),
            "method": method,
        },
    )
    return out


def heldout_loss(mt_task, params, pairs, *, batch_size: int = 32) -> dict[str, float]:
    """Teacher-forced loss of a translation task's model on (source, target) pairs.

    Returns nats per target token and per target character (comparable across tokenizers:
    the characters do not change when the tokenizer does), and the token count.
    """
    tok, t = mt_task.tokenizer(), mt_task.config.task
    limit = mt_task.model_config.max_length
    fn = jax.jit(lambda p, b: mt_task.loss(p, b, jax.random.PRNGKey(0), train=False)[1])
    nll = tokens = chars = 0.0
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo : lo + batch_size]
        src, _ = tok.encode_batch(
            [s for s, _ in chunk], t.src_lang, max_length=limit, truncate=True
        )
        tgt, _ = tok.encode_batch(
            [y for _, y in chunk], t.tgt_lang, max_length=limit, truncate=True
        )
        length = min(-(-max(src.shape[1], tgt.shape[1]) // 16) * 16, limit)
        batch = {}
        for k, ids in (("inputs", src), ("targets", tgt)):
            padded = np.full((batch_size, length), tok.pad_id, np.int32)
            padded[: ids.shape[0], : ids.shape[1]] = ids
            batch[k] = padded
        aux = jax.device_get(fn(params, batch))
        nll += float(aux["nll"])
        tokens += float(aux["weight"])
        chars += sum(len(y) for _, y in chunk)
    return {"nats_per_token": nll / tokens, "nats_per_char": nll / chars, "tokens": tokens}
