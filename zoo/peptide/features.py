"""THE featurization of spectra, shared by training, evaluation and `zoo denovo`.

Two steps, the same whoever calls them:

1. `spectrum_example(spectrum)`: a spectrum read from a file (`zoo.peptide.spectra`) or
   simulated -> one stored example: Casanovo 5.2.1's preprocessed peaks, the exact precursor,
   the peptide in canonical notation, the title. The TFDS builders store these rows;
   `zoo denovo` makes them on the fly.
2. `featurize(example, max_peaks)` -> the model's fixed-shape inputs: the `max_peaks` most
   intense peaks, 0-padded, and the neutral precursor mass exactly as Casanovo's models were
   fed it. `featurize_batch` stacks them for inference (`zoo.peptide.sequence`); the task
   adds the residue ids (`zoo.peptide.task`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.peptide.residues import CASANOVO, CASANOVO_PROTON, Residues
from zoo.peptide.spectra import PreprocessConfig, Spectrum, preprocess_spectrum


def spectrum_example(
    spectrum: Spectrum,
    residues: Residues | None = CASANOVO,
    preprocess_config: PreprocessConfig | None = None,
) -> dict[str, Any]:
    """One stored example: preprocessed peaks, precursor, canonical peptide, title.

    peptide: the SEQ parsed with `residues` and written in Casanovo notation (ProForma input
    becomes `C+57.021` etc.); '' if unlabeled, or when `residues` is None (inference: the
    label is not read). preprocess_config: default PreprocessConfig().
    Raises LowQualitySpectrum where Casanovo drops the spectrum and PeptideParseError for a
    residue `residues` does not know.
    """
    mz, intensity = preprocess_spectrum(spectrum, preprocess_config or PreprocessConfig())
    peptide = ""
    if spectrum.peptide and residues is not None:
        where = f"{spectrum.source or '<spectra>'}: spectrum {spectrum.index} SEQ"
        peptide = residues.to_string(residues.parse(spectrum.peptide, where=where))
    return {
        "mz": mz.astype(np.float32),
        "intensity": intensity.astype(np.float32),
        "precursor_mz": np.float64(spectrum.precursor_mz),
        "precursor_charge": np.int32(spectrum.precursor_charge),
        "peptide": peptide,
        "title": spectrum.title,
    }


def precursor_mass_f32(mz, charge) -> np.ndarray:
    """Neutral precursor mass as Casanovo feeds its model: float32 (m/z - 1.007276) * z
    (bit-identical inputs are what make converted Casanovo weights predict identically)."""
    proton = np.float32(CASANOVO_PROTON)
    return (np.asarray(mz, np.float32) - proton) * np.asarray(charge, np.float32)


def top_peaks(mz, intensity, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n most intense peaks, in ascending m/z (what fits the encoder's max_peaks)."""
    mz, intensity = np.asarray(mz, np.float32), np.asarray(intensity, np.float32)
    if len(mz) > n:
        keep = np.sort(np.argsort(-intensity, kind="stable")[:n])
        mz, intensity = mz[keep], intensity[keep]
    return mz, intensity


def featurize(example, max_peaks: int) -> dict[str, np.ndarray]:
    """A stored example -> model inputs of one spectrum:

    mz, intensity [max_peaks] f32 (the most intense peaks, 0-padded: mz == 0 marks padding),
    precursor_mz f64 (exact, for the mass rules of the searches), precursor_mass f32 (the
    model's input, `precursor_mass_f32`), precursor_charge int32.
    """
    mz, intensity = top_peaks(example["mz"], example["intensity"], max_peaks)
    precursor_mz = float(example["precursor_mz"])
    charge = int(example["precursor_charge"])
    out = {
        "mz": np.zeros(max_peaks, np.float32),
        "intensity": np.zeros(max_peaks, np.float32),
        "precursor_mz": np.float64(precursor_mz),
        "precursor_mass": precursor_mass_f32(precursor_mz, charge),
        "precursor_charge": np.int32(charge),
    }
    out["mz"][: len(mz)] = mz
    out["intensity"][: len(intensity)] = intensity
    return out


def featurize_batch(examples: Sequence[Any], max_peaks: int) -> dict[str, np.ndarray]:
    """`featurize` of each example, stacked: [B, max_peaks] peaks and [B] precursors."""
    rows = [featurize(e, max_peaks) for e in examples]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def text_field(value) -> str:
    """A TFDS text feature (UTF-8 bytes without TensorFlow) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)
