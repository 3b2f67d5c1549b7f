"""De novo peptide sequencing: the hybrid AR/NAR model meets its losses here.

Batches (fixed shapes, so one compiled step serves the whole run):
  mz, intensity     [B, P] float32  preprocessed peaks, 0-padded (mz == 0 marks padding)
  precursor_mass    [B] float32     neutral precursor mass M = (m/z - proton) * z
  precursor_charge  [B] int32
  tokens            [B, T] int32    residue ids N->C (1..n, `Residues.tokens` order), 0-padded
  weight            [B] float32     1 for a real spectrum, 0 for rows that only fill a batch

Objective (CrossNovo): L = lam * CE_AR + (1 - lam) * CTC_NAR per spectrum, each term a
per-residue average (PyTorch CTCLoss 'mean' and Casanovo's token CE), summed over
spectra; the loop divides by the number of spectra. In hybrid mode lam = step /
task.anneal_steps (0 at the start, 1 at the end: importance annealing); "ar" mode is
lam = 1 (Casanovo-like), "nar" lam = 0 (PrimeNovo-like). Stage 2 (task.stage = "ar")
fixes lam = 1 and the recipe freezes the encoder and NAR decoder through
optim.frozen; the model's stop_gradient on the NAR states is the gradient block.
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
from zoo.data import residues as zres
from zoo.decode import peptide as pdecode
from zoo.models import peptide
from zoo.tasks import base

log = logging.getLogger(__name__)

PAD_ID = 0


def model_config(config) -> peptide.PeptideConfig:
    return peptide.PeptideConfig(**config.model.to_dict())


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


CASANOVO_PROTON = np.float32(1.007276)  # the proton mass Casanovo's models were trained with


def precursor_mass_f32(mz, charge) -> np.ndarray:
    """Neutral precursor mass as Casanovo feeds its model: float32 (m/z - 1.007276) * z
    (bit-identical inputs are what make converted Casanovo weights predict identically)."""
    return (np.asarray(mz, np.float32) - CASANOVO_PROTON) * np.asarray(charge, np.float32)


def top_peaks(mz, intensity, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n most intense peaks, in ascending m/z (what fits the encoder's max_peaks)."""
    mz, intensity = np.asarray(mz, np.float32), np.asarray(intensity, np.float32)
    if len(mz) > n:
        keep = np.sort(np.argsort(-intensity, kind="stable")[:n])
        mz, intensity = mz[keep], intensity[keep]
    return mz, intensity


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
        blank_id=0,
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


@base.register
class DenovoTask(base.Task):
    name = "denovo"

    def __init__(self, config):
        super().__init__(config)
        self.model = peptide.PeptideModel(model_config(config))
        self.residues = residues_from_config(config)
        n = len(self.residues.tokens)
        if self.model.config.n_residues != n:
            raise ValueError(
                f"model.n_residues={self.model.config.n_residues} but the residue table has "
                f"{n} tokens; set --config.model.n_residues={n}"
            )
        self.stop_id = n + 1
        self._token_ids = {tok: i + 1 for i, tok in enumerate(self.residues.tokens)}
        self._sources: dict = {}
        self._kept: dict = {}

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
        return peptide.count_flops(self.model.config, b, p, t + 1)

    def tokens_in_batch(self, batch) -> int:
        return int(np.count_nonzero(np.asarray(batch["weight"])))  # spectra, not tokens

    # --- data ------------------------------------------------------------------
    def builder(self):
        t = self.config.task
        data_dir = os.path.expanduser(t.data_dir)
        if t.dataset == "simulated":
            from zoo.data import simulated_tfds

            return simulated_tfds.simulated_builder(data_dir, **t.simulated.to_dict())
        if t.dataset == "mgf":
            from zoo.data import spectra_tfds

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
            from zoo.data.synthetic import load_source

            self._sources[split] = load_source(self.builder(), split)
        return self._sources[split]

    def featurize(self, example) -> dict[str, np.ndarray]:
        """One stored spectrum -> fixed-shape model inputs (see the module docstring)."""
        t = self.config.task
        p, n = t.max_peaks, self.model.config.max_peptide_len
        mz, inten = top_peaks(example["mz"], example["intensity"], p)
        charge = int(example["precursor_charge"])
        pep = example["peptide"]
        pep = pep.decode() if isinstance(pep, bytes) else str(pep)
        ids = [self._token_ids[tok] for tok in self.residues.parse(pep)] if pep else []
        out = {
            "mz": np.zeros(p, np.float32),
            "intensity": np.zeros(p, np.float32),
            "precursor_mass": precursor_mass_f32(float(example["precursor_mz"]), charge),
            "precursor_charge": np.int32(charge),
            "tokens": np.zeros(n, np.int32),
            "weight": np.float32(1.0),
        }
        out["mz"][: len(mz)] = mz
        out["intensity"][: len(inten)] = inten
        out["tokens"][: len(ids)] = ids[:n]
        return out

    def kept_indices(self, split, process_index: int = 0, process_count: int = 1) -> np.ndarray:
        """Spectra whose peptide fits max_peptide_len; the rest are counted and logged (once
        per split: every eval reuses it). Several processes share the scan (base.scan_shared)."""
        if split in self._kept:
            return self._kept[split]
        src = self.source(split)
        n = self.model.config.max_peptide_len

        def scan(rows):
            return np.array(
                [[len(self.residues.parse(_text(src[i]["peptide"])))] for i in rows], np.int64
            ).reshape(len(rows), 1)

        lengths = base.scan_shared(len(src), scan, process_index, process_count)[:, 0]
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
        )


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# --- inference -------------------------------------------------------------------------------
DECODERS = ("ar", "nar", "nar_pmc", "hybrid")


# One spectrum's answer, whatever decoder produced it (N->C, Casanovo notation).
Prediction = pdecode.PeptidePrediction


class Sequencer:
    """Sequences batches of spectra with a trained or converted peptide model.

    decoder: "ar" (AR beam search on the AR decoder; in a hybrid model its cross-attention
    reads the NAR states), "hybrid" (same as "ar" on a hybrid model), "nar" (CTC beam search
    on the NAR decoder; `ctc_beam=1`: greedy), "nar_pmc" (CTC beam search, then precise mass
    control when the peptide misses the precursor by more than 0.1 Da).
    """

    def __init__(
        self,
        config: peptide.PeptideConfig,
        params,
        residues: zres.Residues,
        *,
        max_peaks: int = 150,
        beam: int = 1,
        precursor_filter: bool = True,
        casanovo_compatible: bool = False,
        min_length: int = 6,
        ctc_beam: int = 5,
        pmc_tolerance: float = 0.1,
    ):
        from zoo.decode import ctc

        self.config, self.params, self.residues = config, params, residues
        self.model = peptide.PeptideModel(config)
        self.max_peaks, self.beam, self.ctc_beam = max_peaks, beam, ctc_beam
        self.pmc_tolerance = pmc_tolerance
        self.masses, self.nterm = ctc.ctc_mass_table(residues)
        model, c = self.model, config

        def encode(params, mz, inten, mass, charge):
            v = {"params": params}
            memory, mask = model.apply(v, mz, inten, method=peptide.PeptideModel.encode)
            nar_states = nar_logits = None
            if c.has_nar:
                nar_states, nar_logits = model.apply(
                    v, memory, mask, mass, charge, method=peptide.PeptideModel.nar
                )
            return memory, mask, nar_states, nar_logits

        def ar_search(params, mz, inten, mass, charge, prec_mz):
            v = {"params": params}
            memory, mask, nar_states, _ = encode(params, mz, inten, mass, charge)
            first, cache = model.apply(
                v,
                mass,
                charge,
                memory,
                mask,
                nar_states if c.mode == "hybrid" else None,
                c.max_peptide_len,
                method=peptide.PeptideModel.ar_init_cache,
            )

            def step_fn(tokens, cache):
                return model.apply(v, tokens, cache, method=peptide.PeptideModel.ar_step)

            return pdecode.ar_beam_search(
                step_fn,
                first,
                cache,
                precursor_mz_B=prec_mz,
                charge_B=charge,
                residues=residues,
                beam_size=beam,
                max_length=c.max_peptide_len,
                min_length=min_length,
                reverse=c.reverse,
                precursor_filter=precursor_filter,
                casanovo_compatible=casanovo_compatible,
            )

        def nar_log_probs(params, mz, inten, mass, charge):
            return jax.nn.log_softmax(
                encode(params, mz, inten, mass, charge)[3].astype(jnp.float32)
            )

        self._ar = jax.jit(ar_search)
        self._nar = jax.jit(nar_log_probs)

    def inputs(self, examples) -> dict[str, np.ndarray]:
        """Stored spectra (dicts with mz, intensity, precursor_mz, precursor_charge) -> arrays."""
        b, p = len(examples), self.max_peaks
        out = {
            "mz": np.zeros((b, p), np.float32),
            "intensity": np.zeros((b, p), np.float32),
            "precursor_mz": np.zeros(b, np.float64),
            "precursor_charge": np.zeros(b, np.int32),
        }
        for i, e in enumerate(examples):
            mz, inten = top_peaks(e["mz"], e["intensity"], p)
            out["mz"][i, : len(mz)] = mz
            out["intensity"][i, : len(mz)] = inten
            out["precursor_mz"][i] = float(e["precursor_mz"])
            out["precursor_charge"][i] = int(e["precursor_charge"])
        charge = out["precursor_charge"]
        out["precursor_mass"] = precursor_mass_f32(out["precursor_mz"], charge)
        return out

    def predict(self, examples, decoder: str = "ar") -> list[Prediction]:
        """Predictions for a batch of stored spectra (pad the batch to a fixed size outside
        to avoid recompiling for every size)."""
        from zoo.decode import ctc, ctc_mass

        if decoder not in DECODERS:
            raise ValueError(f"decoder {decoder!r}; use one of {DECODERS}")
        x = self.inputs(examples)
        args = (self.params, x["mz"], x["intensity"], x["precursor_mass"], x["precursor_charge"])
        if decoder in ("ar", "hybrid"):
            if not self.config.has_ar:
                raise ValueError(f"a {self.config.mode!r} model has no AR decoder; use nar")
            # Split the float64 m/z on the host: the ppm test keeps full precision in jit.
            result = jax.device_get(self._ar(*args, pdecode.mz_parts(x["precursor_mz"])))
            preds = pdecode.to_predictions(
                result,
                residues=self.residues,
                reverse=self.config.reverse,
                charge_B=x["precursor_charge"],
            )
            return [p if p is not None else _empty() for p in preds]
        if not self.config.has_nar:
            raise ValueError(f"a {self.config.mode!r} model has no NAR decoder; use ar")
        lp = np.asarray(jax.device_get(self._nar(*args)), np.float64)
        neutral = zres.neutral_mass(x["precursor_mz"], x["precursor_charge"])
        if decoder == "nar" and self.ctc_beam == 1:
            decoded = ctc.ctc_greedy(lp)
        elif decoder == "nar":
            decoded = [d[0] for d in ctc.ctc_beam_search(lp, self.ctc_beam)]
        else:
            decoded = ctc_mass.ctc_decode_with_mass(
                lp,
                self.masses,
                neutral,
                beam=self.ctc_beam,
                tolerance=self.pmc_tolerance,
                nterm=self.nterm,
            )
        out = []
        for d, z, mz in zip(decoded, x["precursor_charge"], x["precursor_mz"]):
            names = tuple(self.residues.tokens[i - 1] for i in d.tokens)
            if not names:
                out.append(_empty())
                continue
            calc = zres.precursor_mz(self.residues.peptide_mass(names), int(z))
            ok = any(abs(zres.ppm_error(calc, float(mz), int(z), iso)) <= 50.0 for iso in (0, 1))
            out.append(
                Prediction(
                    self.residues.to_string(names),
                    names,
                    float(np.exp(d.log_prob / max(len(names), 1))),
                    np.asarray(d.token_scores, np.float32),
                    ok,
                    calc,
                )
            )
        return out

    def predict_all(self, examples, decoder: str = "ar", batch_size: int = 64, on_batch=None):
        """Predictions for any number of spectra, in fixed-size batches (one compile)."""
        examples = list(examples)
        out: list[Prediction] = []
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
            out += self.predict(padded, decoder)[: len(chunk)]
            if on_batch:
                on_batch(len(chunk))
        return out


def _empty() -> Prediction:
    return Prediction("", (), float("-inf"), np.zeros(0, np.float32), False, float("nan"))


def to_psm(spectrum, prediction: Prediction):
    """A Prediction for a `zoo.data.spectra.Spectrum` as an mzTab PSM (Casanovo's columns)."""
    from zoo.data import mztab

    return mztab.Psm(
        peptide=list(prediction.tokens),
        score=float(prediction.score),
        aa_scores=[float(x) for x in prediction.aa_scores],
        precursor_charge=int(spectrum.precursor_charge),
        precursor_mz=float(spectrum.precursor_mz),
        spectrum_file=spectrum.source,
        spectrum_index=int(spectrum.index),
        calc_mz=float(prediction.calc_mz),
        scan=spectrum.scans,
    )
