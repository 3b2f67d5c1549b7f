"""The de novo peptide family: spectra in, peptides out (CrossNovo's hybrid AR/NAR model).

Python face:

    config, params, meta = zoo.peptide.load_casanovo("casanovo_v5.ckpt")   # no torch needed
    seq = zoo.peptide.Sequencer(config, params, meta.residues, beam=5)
    zoo.peptide.evaluate(true_peptides, predicted_peptides)   # Casanovo's AA / peptide metrics

Files (data flows spectra -> features -> task -> loop; checkpoint -> model -> sequence):
- `residues`: residue masses and notation (Casanovo, ProForma), precursor arithmetic.
- `model`: `PeptideModel` (encoder, AR and NAR decoders) and THE token layout (`TokenLayout`).
- `spectra`: MGF reading / writing and Casanovo's peak preprocessing.
- `features`: the one featurization shared by training, evaluation and `zoo denovo`.
- `simulate`, `simulated_tfds`, `spectra_tfds`: simulated spectra and TFDS builders.
- `task`: `denovo`, the loop's task (annealed AR + CTC losses).
- `search`: the AR beam search with Casanovo's rules; `ctc`, `mass_control`: NAR decoding.
- `sequence`: `Sequencer` and `zoo denovo`; `mztab`: Casanovo-compatible output.
- `metrics`: amino-acid and peptide precision / recall; `casanovo`: checkpoint import.
"""

from zoo.peptide.casanovo import load_casanovo
from zoo.peptide.metrics import evaluate
from zoo.peptide.model import PeptideConfig, PeptideModel, TokenLayout
from zoo.peptide.residues import CASANOVO, Residues
from zoo.peptide.sequence import Sequencer

__all__ = [
    "CASANOVO",
    "PeptideConfig",
    "PeptideModel",
    "Residues",
    "Sequencer",
    "TokenLayout",
    "evaluate",
    "load_casanovo",
]
