"""De novo sequencing with a trained or converted peptide model, and `zoo denovo`.

    config, params, residues, _ = load_model("runs/h2")     # or a `zoo convert casanovo` dir
    seq = Sequencer(config, params, residues, beam=5)
    predictions = seq.predict_all(examples, "hybrid")      # stored examples (features.py)

`zoo denovo` (zoo.peptide.denovo_cli) reads peak files, featurizes every spectrum the way
training does (`zoo.peptide.features`), predicts with a Sequencer and writes an mzTab.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from zoo.io import modeldir
from zoo.peptide import casanovo, ctc, features, mztab, spectra
from zoo.peptide import mass_control_batch as pmc_batch
from zoo.peptide import residues as zres
from zoo.peptide import search as ar_search_lib
from zoo.peptide.model import PeptideConfig, PeptideModel, TokenLayout
from zoo.peptide.task import DenovoTask, model_config, residues_from_config

DECODERS = ("ar", "nar", "nar_pmc", "hybrid")


@dataclasses.dataclass(frozen=True)
class DenovoDefaults:
    """The knobs of `Sequencer` and `zoo denovo`, with their defaults (the CLI flags and the
    Python keyword arguments both read them here)."""

    beam: int = 1  # AR beams per spectrum (Casanovo's n_beams; --beam)
    batch_size: int = 32  # spectra per model call (--batch-size)
    precursor_filter: bool = True  # AR: Casanovo 4's precursor filter (--no-precursor-filter)
    casanovo_compatible: bool = False  # AR: Casanovo 5.2.1's rules (--casanovo-compatible)
    min_length: int = 6  # shortest peptide the AR search returns (Casanovo's min_peptide_len)
    ctc_beam: int = 5  # NAR: CTC prefix beam width; 1 = greedy
    pmc_tolerance: float = 0.1  # NAR + mass control: Da a peptide may miss the precursor by
    tolerance_ppm: float = 50.0  # a peptide matches its precursor within this (Casanovo's)
    # Peaks fed to the encoder for a model without a training config (a `zoo convert
    # casanovo` dir: Casanovo's n_peaks); a `zoo train` workdir uses its task.max_peaks.
    max_peaks: int = 150
    # `predict_all` sorts spectra by peak count and pads each batch to its most peaks rounded
    # up to a multiple of this (at most max_peaks): at most max_peaks / peak_bucket + 1
    # compiled shapes, the same for every call; 0 = every batch at max_peaks (--peak-bucket).
    peak_bucket: int = 32


DEFAULTS = DenovoDefaults()

# One spectrum's answer, whatever decoder produced it (N->C, Casanovo notation).
Prediction = ar_search_lib.PeptidePrediction


class Sequencer:
    """Sequences batches of spectra with a trained or converted peptide model.

    decoder: "ar" (AR beam search on the AR decoder; in a hybrid model its cross-attention
    reads the NAR states), "hybrid" (same as "ar" on a hybrid model), "nar" (CTC beam search
    on the NAR decoder; `ctc_beam=1`: greedy), "nar_pmc" (CTC beam search, then precise mass
    control when the peptide misses the precursor by more than `pmc_tolerance` Da).
    Defaults: `DenovoDefaults`.
    """

    def __init__(
        self,
        config: PeptideConfig,
        params,
        residues: zres.Residues,
        *,
        max_peaks: int = DEFAULTS.max_peaks,
        beam: int = DEFAULTS.beam,
        precursor_filter: bool = DEFAULTS.precursor_filter,
        casanovo_compatible: bool = DEFAULTS.casanovo_compatible,
        min_length: int = DEFAULTS.min_length,
        ctc_beam: int = DEFAULTS.ctc_beam,
        pmc_tolerance: float = DEFAULTS.pmc_tolerance,
        tolerance_ppm: float = DEFAULTS.tolerance_ppm,
        peak_bucket: int = DEFAULTS.peak_bucket,
        top_match: int = 1,
    ):
        if top_match < 1:
            raise ValueError(f"--top-match {top_match} must be >= 1")
        self.top_match = top_match
        if peak_bucket < 0:
            raise ValueError(f"--peak-bucket {peak_bucket} must be >= 0 (0 = no buckets)")
        self.peak_bucket = peak_bucket
        self.config, self.params, self.residues = config, params, residues
        self.layout = TokenLayout(residues.tokens)
        self.model = PeptideModel(config)
        self.max_peaks, self.beam, self.ctc_beam = max_peaks, beam, ctc_beam
        self.pmc_tolerance, self.tolerance_ppm = pmc_tolerance, tolerance_ppm
        self.masses, self.nterm = ctc.ctc_mass_table(residues)
        model, c = self.model, config

        def encode(params, mz, inten, mass, charge):
            v = {"params": params}
            memory, mask = model.apply(v, mz, inten, method=PeptideModel.encode)
            nar_states = nar_logits = None
            if c.has_nar:
                nar_states, nar_logits = model.apply(
                    v, memory, mask, mass, charge, method=PeptideModel.nar
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
                method=PeptideModel.ar_init_cache,
            )

            def step_fn(tokens, cache):
                return model.apply(v, tokens, cache, method=PeptideModel.ar_step)

            return ar_search_lib.ar_beam_search(
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
                tolerance_ppm=tolerance_ppm,
                top_k=top_match,
            )

        def nar_log_probs(params, mz, inten, mass, charge):
            return jax.nn.log_softmax(
                encode(params, mz, inten, mass, charge)[3].astype(jnp.float32)
            )

        self._ar = jax.jit(ar_search)
        self._nar = jax.jit(nar_log_probs)

    def inputs(self, examples, peaks: int | None = None) -> dict[str, np.ndarray]:
        """Stored spectra (dicts with mz, intensity, precursor_mz, precursor_charge) -> the
        model's batch (`features.featurize_batch`), peaks padded to `peaks` (default
        max_peaks; every spectrum must have at most that many of its top max_peaks)."""
        x = features.featurize_batch(examples, self.max_peaks)
        if peaks is not None and peaks < self.max_peaks:
            if np.any(x["mz"][:, peaks:]) or np.any(x["intensity"][:, peaks:]):
                raise ValueError(f"a spectrum has more than peaks={peaks} peaks; pass more")
            x["mz"] = np.ascontiguousarray(x["mz"][:, :peaks])
            x["intensity"] = np.ascontiguousarray(x["intensity"][:, :peaks])
        return x

    def predict(self, examples, decoder: str = "ar", peaks: int | None = None) -> list[Prediction]:
        """Predictions for a batch of stored spectra, peaks padded to `peaks` (default
        max_peaks). Each new (batch size, peaks) compiles: `predict_all` keeps them few."""
        tops = self.predict_top(examples, decoder, peaks)
        return [top[0] if top else empty_prediction() for top in tops]

    def predict_top(
        self, examples, decoder: str = "ar", peaks: int | None = None
    ) -> list[list[Prediction]]:
        """Per spectrum, up to `top_match` predictions, best first (Casanovo's top_match;
        "nar" takes the CTC beam's best, "nar_pmc" gives one); [] where there is none."""
        if decoder not in DECODERS:
            raise ValueError(f"decoder {decoder!r}; use one of {DECODERS}")
        x = self.inputs(examples, peaks)
        args = (self.params, x["mz"], x["intensity"], x["precursor_mass"], x["precursor_charge"])
        if decoder in ("ar", "hybrid"):
            if not self.config.has_ar:
                raise ValueError(f"a {self.config.mode!r} model has no AR decoder; use nar")
            # Split the float64 m/z on the host: the ppm test keeps full precision in jit.
            result = jax.device_get(self._ar(*args, ar_search_lib.mz_parts(x["precursor_mz"])))
            return ar_search_lib.to_top_predictions(
                result,
                residues=self.residues,
                reverse=self.config.reverse,
                charge_B=x["precursor_charge"],
            )
        if not self.config.has_nar:
            raise ValueError(f"a {self.config.mode!r} model has no NAR decoder; use ar")
        lp = np.asarray(jax.device_get(self._nar(*args)), np.float64)
        neutral = zres.neutral_mass(x["precursor_mz"], x["precursor_charge"])
        if decoder == "nar" and self.ctc_beam == 1:
            decoded = [[d] for d in ctc.ctc_greedy(lp)]
        elif decoder == "nar":
            k = min(self.top_match, self.ctc_beam)
            decoded = [list(d) for d in ctc.ctc_beam_search(lp, self.ctc_beam, top_k=k)]
        else:
            decoded = [
                [d]
                for d in pmc_batch.ctc_decode_with_mass_batch(
                    lp,
                    self.masses,
                    neutral,
                    beam=self.ctc_beam,
                    tolerance=self.pmc_tolerance,
                    nterm=self.nterm,
                )
            ]
        out = []
        for ranked, z, mz in zip(decoded, x["precursor_charge"], x["precursor_mz"]):
            spectrum = []
            for d in ranked:
                names = tuple(self.layout.names(d.tokens))
                if not names:
                    continue
                calc = zres.precursor_mz(self.residues.peptide_mass(names), int(z))
                ok = any(
                    abs(zres.ppm_error(calc, float(mz), int(z), iso)) <= self.tolerance_ppm
                    for iso in (0, 1)
                )
                spectrum.append(
                    Prediction(
                        self.residues.to_string(names),
                        names,
                        float(np.exp(d.log_prob / max(len(names), 1))),
                        np.asarray(d.token_scores, np.float32),
                        ok,
                        calc,
                    )
                )
            out.append(spectrum)
        return out

    def predict_all(
        self,
        examples,
        decoder: str = "ar",
        batch_size: int = DEFAULTS.batch_size,
        on_batch=None,
        top: bool = False,
    ):
        """Predictions for any number of spectra, in the input order. Batches of `batch_size`
        (the last one padded with copies), spectra sorted by peak count so that a batch's
        spectra are alike, each batch padded to `peak_bucket` steps (see DenovoDefaults).
        With `top`, each spectrum's list of up to top_match predictions (`predict_top`)."""
        examples = list(examples)
        if not examples:
            return []
        counts = np.array([min(len(e["mz"]), self.max_peaks) for e in examples])
        step = self.peak_bucket
        order = np.argsort(counts, kind="stable") if step else np.arange(len(examples))
        out: list[Prediction | None] = [None] * len(examples)
        for start in range(0, len(examples), batch_size):
            rows = order[start : start + batch_size]
            chunk = [examples[i] for i in rows]
            padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
            most = int(counts[rows].max())
            peaks = min(self.max_peaks, max(step, -(-most // step) * step)) if step else None
            predict = self.predict_top if top else self.predict
            for i, p in zip(rows, predict(padded, decoder, peaks)):
                out[i] = p
            if on_batch:
                on_batch(len(chunk))
        return out


def empty_prediction() -> Prediction:
    return Prediction("", (), float("-inf"), np.zeros(0, np.float32), False, float("nan"))


def to_psm(spectrum: spectra.Spectrum, prediction: Prediction) -> mztab.Psm:
    """A Prediction for a `zoo.peptide.spectra.Spectrum` as an mzTab PSM (Casanovo's columns)."""
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


def load_model(checkpoint: str):
    """(PeptideConfig, params, Residues, task config or None) from a `zoo convert casanovo`
    directory or a `zoo train` workdir of the denovo task."""
    if modeldir.is_model_dir(checkpoint):
        config, params, residues = casanovo.load_model_dir(checkpoint)
        return config, params, residues, None
    c = modeldir.read_run_config(checkpoint, [DenovoTask.name])
    config = model_config(c)
    params = modeldir.load_params(checkpoint)
    fix = "its config.json no longer describes its checkpoints"
    modeldir.check_fits(params, casanovo.param_shapes(config), checkpoint, fix)
    return config, params, residues_from_config(c), c
