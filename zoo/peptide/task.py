"""De novo peptide sequencing for the loop: the hybrid AR/NAR model meets its losses here.

Batches (`zoo.peptide.features`):
  mz, intensity     [B, P] float32  preprocessed peaks, 0-padded (mz == 0 marks padding)
  precursor_mass    [B] float32     neutral precursor mass M = (m/z - proton) * z
  precursor_charge  [B] int32
  tokens            [B, T] int32    residue ids N->C (`TokenLayout`: 1..n), 0-padded
  weight            [B] float32     1 for a real spectrum, 0 for rows that only fill a batch

B is data.global_batch_size. With task.num_buckets = 0, P = task.max_peaks and T =
model.max_peptide_len (one compiled shape). With task.num_buckets = k, every batch holds
spectra of one (peaks, residues) bucket cell and (P, T) are that cell's boundaries: up to k
boundaries per column, from the training split's histogram (quantiles rounded up to 8 peaks
/ 4 residues; `task.peak_buckets` / `task.length_buckets` set them explicitly), the last being
the maximum. The model masks padding, so a spectrum's loss does not depend on its bucket;
the padding left is logged as `padding_fraction`.

Objective (CrossNovo): L = lam * CE_AR + (1 - lam) * CTC_NAR per spectrum, each term a
per-residue average (PyTorch CTCLoss 'mean' and Casanovo's token CE), summed over
spectra; the loop divides by the number of spectra. In hybrid mode lam = step /
task.anneal_steps (0 at the start, 1 at the end: importance annealing); "ar" mode is
lam = 1 (Casanovo-like), "nar" lam = 0 (PrimeNovo-like). Stage 2 (task.stage = "ar")
fixes lam = 1 and the recipe freezes the encoder and NAR decoder through
optim.frozen; the model's stop_gradient on the NAR states is the gradient block.

Inference is not here: `zoo.peptide.sequence` runs a trained model on spectra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoo.data import pipeline as zpipeline
from zoo.data import plans as zplans
from zoo.data.sources import load_source, scan_shared
from zoo.peptide import features, simulated_tfds, spectra_tfds
from zoo.peptide import residues as zres
from zoo.peptide.model import PeptideConfig, PeptideModel, TokenLayout, count_flops
from zoo.train.task import Task

log = logging.getLogger(__name__)

PAD_ID = TokenLayout.PAD


def model_config(config) -> PeptideConfig:
    c = PeptideConfig(**config.model.to_dict())
    c.validate()  # a clear error now rather than inside the first jitted step
    return c


def residues_from_config(config) -> zres.Residues:
    masses = config.task.get("residues", None)
    return zres.Residues(masses=dict(masses)) if masses else zres.CASANOVO


def reverse_padded(ids_BxT: jax.Array) -> jax.Array:
    """Reverses each row's non-pad prefix in place: [a b c 0 0] -> [c b a 0 0]."""
    length = (ids_BxT != PAD_ID).sum(-1, keepdims=True)
    t = jnp.arange(ids_BxT.shape[1])[None, :]
    src = jnp.where(t < length, length - 1 - t, t)
    return jnp.take_along_axis(ids_BxT, src, axis=1)


def ar_targets(tokens_BxT: jax.Array, stop_id: int, reverse: bool) -> tuple[jax.Array, jax.Array]:
    """(decoder inputs [B, T], targets [B, T+1]): residues in decoding order, then stop."""
    inputs = reverse_padded(tokens_BxT) if reverse else tokens_BxT
    length = (inputs != PAD_ID).sum(-1)
    padded = jnp.pad(inputs, ((0, 0), (0, 1)))
    t = jnp.arange(padded.shape[1])[None, :]
    targets = jnp.where(t == length[:, None], stop_id, padded)
    return inputs, targets


def anneal_weight(step, anneal_steps: int) -> jax.Array:
    """lam(step) = step / anneal_steps, clipped to [0, 1]: 0 at step 0, 1 from anneal_steps."""
    return jnp.clip(jnp.asarray(step, jnp.float32) / max(int(anneal_steps), 1), 0.0, 1.0)


def ctc_loss_per_residue(nar_logits_BxNxC, tokens_BxT) -> tuple[jax.Array, jax.Array]:
    """CTC loss of each spectrum divided by its peptide length (PyTorch's 'mean'), and a
    mask of the spectra whose peptide fits the slots (infinite losses are zeroed as
    PrimeNovo's zero_infinity=True does, and reported)."""
    b, n, _ = nar_logits_BxNxC.shape
    label_pad = (tokens_BxT == PAD_ID).astype(jnp.float32)
    loss = optax.ctc_loss(
        nar_logits_BxNxC.astype(jnp.float32),
        jnp.zeros((b, n), jnp.float32),
        tokens_BxT,
        label_pad,
        blank_id=TokenLayout.BLANK,
    )
    length = jnp.maximum((tokens_BxT != PAD_ID).sum(-1), 1)
    finite = jnp.isfinite(loss) & (loss < 1e5)  # optax marks infeasible alignments ~1e5+
    return jnp.where(finite, loss / length, 0.0), finite


def ce_loss_per_residue(logits_BxTxV, targets_BxT, label_smoothing: float):
    """Token CE (with Casanovo's label smoothing), averaged over each spectrum's tokens; and
    the per-spectrum count of correct argmax tokens / tokens."""
    v = logits_BxTxV.shape[-1]
    mask = (targets_BxT != PAD_ID).astype(jnp.float32)
    onehot = jax.nn.one_hot(targets_BxT, v)
    if label_smoothing:
        onehot = onehot * (1 - label_smoothing) + label_smoothing / v
    logp = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32))
    ce = -(onehot * logp).sum(-1) * mask
    n = jnp.maximum(mask.sum(-1), 1.0)
    correct = ((logits_BxTxV.argmax(-1) == targets_BxT) * mask).sum(-1)
    return ce.sum(-1) / n, correct / n


class DenovoTask(Task):
    name = "denovo"

    def __init__(self, config):
        super().__init__(config)
        self.model = PeptideModel(model_config(config))
        self.residues = residues_from_config(config)
        self.layout = TokenLayout(self.residues.tokens)
        n = self.layout.n_residues
        if self.model.config.n_residues != n:
            raise ValueError(
                f"model.n_residues={self.model.config.n_residues} but the residue table has "
                f"{n} tokens; set --config.model.n_residues={n}"
            )
        self.stop_id = self.layout.stop
        self._sources: dict = {}
        self._kept: dict = {}
        self._lengths: dict = {}
        self._buckets = None

    # --- model ---------------------------------------------------------------
    def _apply(self, params, batch, rng, train):
        c = self.model.config
        inputs, targets = ar_targets(batch["tokens"], self.stop_id, c.reverse)
        out = self.model.apply(
            {"params": params},
            batch["mz"],
            batch["intensity"],
            batch["precursor_mass"],
            batch["precursor_charge"],
            inputs,
            deterministic=not train,
            rngs={"dropout": rng} if train else {},
        )
        return out, targets

    def init_variables(self, rng, batch):
        c = self.model.config
        inputs, _ = ar_targets(jnp.asarray(batch["tokens"]), self.stop_id, c.reverse)
        return self.model.init(
            {"params": rng},
            batch["mz"],
            batch["intensity"],
            batch["precursor_mass"],
            batch["precursor_charge"],
            inputs,
        )

    def mixing_weight(self, step) -> jax.Array:
        """lam, the weight of the AR loss (1 - lam goes to CTC)."""
        mode, t = self.model.config.mode, self.config.task
        if mode == "ar" or t.stage == "ar":
            return jnp.float32(1.0)
        if mode == "nar":
            return jnp.float32(0.0)
        if step is None:  # eval: report the end-of-training mixture
            return jnp.float32(1.0) if t.anneal else jnp.float32(t.ar_weight)
        return (
            anneal_weight(step, t.anneal_steps or self.config.train.num_steps)
            if t.anneal
            else jnp.float32(t.ar_weight)
        )

    def loss(self, params, batch, rng, *, train, step=None):
        mode = self.model.config.mode
        out, targets = self._apply(params, batch, rng, train)
        w = batch["weight"].astype(jnp.float32)
        lam = self.mixing_weight(step)
        aux = {"weight": w.sum(), "lambda": lam * w.sum()}
        total = jnp.zeros_like(w)
        if mode != "nar":
            ce, acc = ce_loss_per_residue(
                out["ar_logits"], targets, self.config.task.label_smoothing if train else 0.0
            )
            total = total + lam * ce
            aux["ar_loss"] = (ce * w).sum()
            aux["ar_token_accuracy"] = (acc * w).sum()
        if mode != "ar":
            ctc, fits = ctc_loss_per_residue(out["nar_logits"], batch["tokens"])
            total = total + (1.0 - lam) * ctc
            aux["ctc_loss"] = (ctc * w).sum()
            aux["ctc_infeasible"] = ((~fits) * w).sum()
        return (total * w).sum(), aux

    # --- batch layout ----------------------------------------------------------
    def batch_axes(self):
        return {
            "mz": ("batch", "length"),
            "intensity": ("batch", "length"),
            "precursor_mass": ("batch",),
            "precursor_charge": ("batch",),
            "tokens": ("batch", "length"),
            "weight": ("batch",),
        }

    def example_batch(self, batch_size):
        t = self.config.task
        p, n = t.max_peaks, self.model.config.max_peptide_len
        return {
            "mz": np.zeros((batch_size, p), np.float32),
            "intensity": np.zeros((batch_size, p), np.float32),
            "precursor_mass": np.zeros((batch_size,), np.float32),
            "precursor_charge": np.ones((batch_size,), np.int32),
            "tokens": np.zeros((batch_size, n), np.int32),
            "weight": np.zeros((batch_size,), np.float32),
        }

    def flops_per_batch(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
        b, p = batch_shapes["mz"]
        t = batch_shapes["tokens"][1]
        return count_flops(self.model.config, b, p, t + 1)

    def tokens_in_batch(self, batch) -> int:
        return int(np.count_nonzero(np.asarray(batch["weight"])))  # spectra, not tokens

    # --- data ------------------------------------------------------------------
    def builder(self):
        t = self.config.task
        data_dir = os.path.expanduser(t.data_dir)
        if t.dataset == "simulated":
            return simulated_tfds.simulated_builder(data_dir, **t.simulated.to_dict())
        if t.dataset == "mgf":
            return spectra_tfds.mgf_builder(
                data_dir,
                os.path.expanduser(t.manual_dir),
                splits={k: list(v) for k, v in t.splits.items()},
                name=t.get("dataset_name", "mgf"),
            )
        raise ValueError(f"task.dataset={t.dataset!r}: use 'simulated' or 'mgf'")

    def prepare_data(self):
        self.builder()

    def source(self, split):
        if split not in self._sources:
            self._sources[split] = load_source(self.builder(), split)
        return self._sources[split]

    def featurize(self, example) -> dict[str, np.ndarray]:
        """One stored spectrum -> fixed-shape model inputs (see the module docstring)."""
        out = features.featurize(example, self.config.task.max_peaks)
        del out["precursor_mz"]  # the searches' exact m/z; training does not use it
        n = self.model.config.max_peptide_len
        pep = features.text_field(example["peptide"])
        ids = self.layout.ids(self.residues.parse(pep)) if pep else []
        out["tokens"] = np.zeros(n, np.int32)
        out["tokens"][: len(ids)] = ids[:n]
        out["weight"] = np.float32(1.0)
        return out

    def lengths(self, split, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """[N, 2] int64 of every spectrum of the split: (peaks the encoder sees, i.e. at most
        task.max_peaks; residues of its peptide). One pass over the split, shared by several
        processes (scan_shared) and cached."""
        if split not in self._lengths:
            src, max_peaks = self.source(split), self.config.task.max_peaks

            def scan(rows):
                out = np.zeros((len(rows), 2), np.int64)
                for r, i in enumerate(rows):
                    example = src[i]
                    out[r, 0] = min(len(example["mz"]), max_peaks)
                    out[r, 1] = len(self.residues.parse(features.text_field(example["peptide"])))
                return out

            self._lengths[split] = scan_shared(len(src), scan, process_index, process_count)
        return self._lengths[split]

    def kept_indices(self, split, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """Spectra whose peptide fits max_peptide_len; the rest are counted and logged (once
        per split: every eval reuses it)."""
        if split in self._kept:
            return self._kept[split]
        src = self.source(split)
        n = self.model.config.max_peptide_len
        lengths = self.lengths(split, process_index, process_count)[:, 1]
        keep = np.flatnonzero((lengths <= n) & (lengths > 0))
        if len(keep) < len(src):
            log.warning(
                "%s: left out %d of %d spectra (peptide longer than model.max_peptide_len=%d "
                "or unlabeled)",
                split,
                len(src) - len(keep),
                len(src),
                n,
            )
        self._kept[split] = keep
        return keep

    def buckets(self, process_index: int = 0, process_count: int = 1):
        """((peak boundaries), (residue boundaries)) for every split, or None (num_buckets 0):
        from the training split's histogram unless the config names them."""
        t = self.config.task
        k = int(t.get("num_buckets", 0))
        if k < 0:
            raise ValueError(f"task.num_buckets={k} must be >= 0; pass --config.task.num_buckets=3")
        if not k:
            return None
        if self._buckets is None:
            limits = (int(t.max_peaks), int(self.model.config.max_peptide_len))
            explicit = (tuple(t.get("peak_buckets", ())), tuple(t.get("length_buckets", ())))
            keys = ("task.peak_buckets", "task.length_buckets")
            bounds = []
            for column, (given, limit, multiple, key) in enumerate(
                zip(explicit, limits, (8, 4), keys)
            ):
                if given:
                    given = tuple(int(b) for b in given)
                    if any(a >= b for a, b in zip(given, given[1:])) or given[-1] != limit:
                        raise ValueError(
                            f"{key}={given} must ascend strictly and end at {limit}; pass e.g. "
                            f"--config.{key}='({limit // 2}, {limit})'"
                        )
                    bounds.append(given)
                    continue
                split = "train"
                kept = self.kept_indices(split, process_index, process_count)
                lengths = self.lengths(split, process_index, process_count)[kept, column]
                bounds.append(zplans.histogram_boundaries(lengths, k, limit, multiple))
            self._buckets = tuple(bounds)
            log.info("bucket boundaries: peaks %s x residues %s", *self._buckets)
        return self._buckets

    def positions_in_batch(self, batch) -> tuple[int, int]:
        """Real peaks + residues vs padded positions (rows that fill a batch count as padding)."""
        mz, tokens = np.asarray(batch["mz"]), np.asarray(batch["tokens"])
        real = int(np.count_nonzero(mz)) + int(np.count_nonzero(tokens != PAD_ID))
        return real, mz.size + tokens.size

    def dataset(self, split, *, seed, process_index, process_count, batch_multiple, train):
        return zpipeline.make_fixed_dataset(
            self.source(split),
            self.featurize,
            global_batch_size=self.config.data.global_batch_size,
            keep=self.kept_indices(split, process_index, process_count),
            seed=seed,
            shuffle=train,
            num_epochs=None if train else 1,
            process_index=process_index,
            process_count=process_count,
            **self._bucketing(split, process_index, process_count),
        )

    def _bucketing(self, split, process_index, process_count) -> dict:
        buckets = self.buckets(process_index, process_count)
        if buckets is None:
            return {}
        return {
            "buckets": buckets,
            "lengths": self.lengths(split, process_index, process_count),
            "crop": {"mz": 0, "intensity": 0, "tokens": 1},
        }
