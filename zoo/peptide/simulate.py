"""Simulated tandem mass spectra of tryptic peptides: the embedded default data set.

Peptides come from a tryptic digest of real protein sequences (by default the mouse
proteins embedded in `zoo/peptide/resources/proteins.fasta`). Each simulated spectrum is
the peptide's theoretical b and y fragment ladder made to look measured:

- modifications from Casanovo's vocabulary: fixed carbamidomethyl C (`C+57.021`);
  variable oxidation (`M+15.995`), deamidation (`N+0.984`, `Q+0.984`) and, rarely,
  an N-terminal modification (`+42.011`, `+43.006`, `-17.027`, `+43.006-17.027`);
- precursor charge 2 or 3, with 3 more likely for longer peptides;
- fragment charge 1, and also 2 when the precursor has charge >= 3;
- y ions stronger than b ions, stronger cleavage N-terminal to proline, log-normal
  intensity noise;
- water and ammonia losses from fragments that hold a residue able to lose them
  (S/T/E/D and R/K/N/Q);
- missing fragments, uniform noise peaks, and a few ppm of m/z error.

Masses follow Casanovo's conventions (`zoo.peptide.residues`). For a peptide of residue
masses m_1..m_L (an N-terminal modification's mass belongs to m_1) and fragment
charge z:

    b_i = (m_1 + ... + m_i + z * PROTON) / z
    y_i = (m_{L-i+1} + ... + m_L + H2O + z * PROTON) / z        (i = 1 .. L-1)

Everything is deterministic in the numpy Generator passed in. Casanovo's own test
simulator (tests/conftest.py::_peptide_to_peaks) is the noise-free special case: every
b and y ion of every charge below the precursor's, at intensity 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import math
import os
import re
import tempfile
from collections.abc import Sequence

import numpy as np

from zoo.peptide.residues import CASANOVO, H2O, PROTON, Residues, precursor_mz

AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")
N_TERMINAL_MODS = ("+42.011", "+43.006", "-17.027", "+43.006-17.027")
# Relative frequency of each N-terminal modification when one is drawn: acetylation
# dominates in real data; carbamylation and ammonia loss are sample-handling artefacts.
N_TERMINAL_MOD_WEIGHTS = (0.55, 0.25, 0.12, 0.08)
NH3 = 17.026549
# Residues whose side chains lose water / ammonia under collision-induced dissociation.
_LOSES_H2O = frozenset("STED")
_LOSES_NH3 = frozenset("RKNQ")


# --- proteins and peptides ---------------------------------------------------------------
def embedded_fasta() -> str:
    """Path of the embedded protein FASTA (mouse UniProt sequences; see resources/README.md)."""
    resource = importlib.resources.files("zoo.peptide") / "resources" / "proteins.fasta"
    if isinstance(resource, os.PathLike):  # an ordinary install or a source checkout
        return os.fspath(resource)
    # Installed in a zip: copy out once, next to other temporary files.
    path = os.path.join(tempfile.gettempdir(), f"zoo_proteins_{os.getuid()}.fasta")
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(resource.read_bytes())
    return path


def read_fasta(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(header, sequence) pairs of a FASTA file, header without '>', sequence upper-case.

    Raises ValueError naming the file and line for sequence text before the first
    header, and for a record with an empty sequence.
    """
    records: list[tuple[str, str]] = []
    header: str | None = None
    chunks: list[str] = []

    def close(line_no: int) -> None:
        if header is None:
            return
        sequence = "".join(chunks).upper()
        if not sequence:
            raise ValueError(
                f"{path}: record {header!r} ending before line {line_no} has no sequence; "
                f"remove the header or add its sequence"
            )
        records.append((header, sequence))

    with open(path, encoding="utf-8") as f:
        line_no = 0
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith(">"):
                close(line_no)
                header, chunks = line[1:].strip(), []
            elif header is None:
                raise ValueError(
                    f"{path}:{line_no}: sequence text before the first '>' header; "
                    f"is this a FASTA file?"
                )
            else:
                chunks.append(re.sub(r"[\s*]", "", line))
        close(line_no + 1)
    if not records:
        raise ValueError(f"{path}: no FASTA records found")
    return records


def tryptic_digest(
    protein: str, *, missed_cleavages: int = 0, min_length: int = 6, max_length: int = 30
) -> list[str]:
    """Tryptic peptides of `protein`: cleavage after K or R, not before P.

    Peptides span up to `missed_cleavages` internal cleavage sites and have between
    `min_length` and `max_length` residues (inclusive). Unique, in order of first
    occurrence.
    """
    if missed_cleavages < 0:
        raise ValueError(f"missed_cleavages={missed_cleavages} must be >= 0")
    # Cut positions: after every K/R whose next residue is not P, plus both ends.
    cuts = [0]
    cuts += [i + 1 for i in range(len(protein) - 1) if protein[i] in "KR" and protein[i + 1] != "P"]
    if cuts[-1] != len(protein):
        cuts.append(len(protein))
    seen: dict[str, None] = {}
    for start in range(len(cuts) - 1):
        for end in range(start + 1, min(start + missed_cleavages + 2, len(cuts))):
            peptide = protein[cuts[start] : cuts[end]]
            if min_length <= len(peptide) <= max_length:
                seen.setdefault(peptide, None)
    return list(seen)


def peptide_key(peptide: str) -> str:
    """Identity of a peptide for split disjointness: its residue letters, I written as L.

    Works on plain sequences and on Casanovo/ProForma strings (modifications, N-terminal
    prefixes and bracketed names are dropped), so `+42.011PEPM+15.995IK` and `PEPMLK`
    share a key.
    """
    letters = re.sub(r"\[[^\]]*\]|[^A-Z]", "", peptide)
    return letters.replace("I", "L")


def fasta_digest(
    path: str | os.PathLike, *, missed_cleavages: int, min_length: int, max_length: int
) -> list[str]:
    """Unique tryptic peptides of every protein in a FASTA file, standard residues only
    (peptides with B, J, O, U, X or Z are dropped), sorted for a stable order."""
    peptides: set[str] = set()
    for _, protein in read_fasta(path):
        for peptide in tryptic_digest(
            protein,
            missed_cleavages=missed_cleavages,
            min_length=min_length,
            max_length=max_length,
        ):
            if AMINO_ACIDS.issuperset(peptide):
                peptides.add(peptide)
    return sorted(peptides)


def residue_frequencies(path: str | os.PathLike, allowed: frozenset[str]) -> dict[str, float]:
    """Share of each residue letter in `allowed` over all proteins of a FASTA file (the
    proteome's composition), sorted by letter; letters outside `allowed` are not counted."""
    counts = dict.fromkeys(sorted(allowed), 0)
    for _, protein in read_fasta(path):
        for letter in protein:
            if letter in counts:
                counts[letter] += 1
    total = sum(counts.values())
    if total == 0:
        raise ValueError(f"{path}: no residues among {sorted(allowed)}")
    return {letter: n / total for letter, n in counts.items()}


def random_tryptic_peptide(
    rng: np.random.Generator, length: int, frequencies: dict[str, float]
) -> str:
    """A random tryptic-like peptide of `length` residues: K or R last (in their proteome
    ratio), the others drawn independently with the proteome's frequencies of every residue
    but K and R (a tryptic peptide without missed cleavages has none inside)."""
    if length < 2:
        raise ValueError(f"random tryptic peptides need >= 2 residues, got length={length}")
    inner = {a: f for a, f in frequencies.items() if a not in "KR"}
    ends = {a: f for a, f in frequencies.items() if a in "KR"}
    if not inner or not ends:
        raise ValueError("residue frequencies need K or R and at least one other residue")
    letters, weights = list(inner), np.array(list(inner.values()))
    body = rng.choice(len(letters), size=length - 1, p=weights / weights.sum())
    end_letters, end_weights = list(ends), np.array(list(ends.values()))
    end = end_letters[rng.choice(len(end_letters), p=end_weights / end_weights.sum())]
    return "".join(letters[i] for i in body) + end


def file_digest(path: str | os.PathLike) -> str:
    """Short content hash of a file, for data set names that change when the data do."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


# --- the simulator -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Knobs of the spectrum simulator. Rates are per residue (modifications) or per
    fragment peak (drops, losses) unless said otherwise.

    charge3_probability: P(precursor charge 3) for a peptide of `charge_reference_length`
        residues; otherwise charge 2.
    charge_length_slope: change of logit P(charge 3) per residue above the reference
        length, so longer peptides are more often triply charged.
    oxidation_rate: P(M carries +15.995).
    deamidation_rate: P(N or Q carries +0.984).
    nterm_mod_rate: P(the peptide carries an N-terminal modification), per peptide.
    fragment_drop_rate: P(a fragment peak is missing).
    neutral_loss_rate: P(a fragment that can lose H2O (or NH3) shows that loss peak).
    b_ion_intensity: median b-ion intensity relative to y ions (y ions dominate in CID/HCD).
    doubly_charged_intensity: intensity factor of charge-2 fragments.
    proline_boost: intensity factor of fragments from cleavage N-terminal to proline.
    intensity_sigma: sigma of the log-normal intensity noise.
    noise_peaks: mean number of random noise peaks per spectrum (Poisson).
    noise_intensity: median noise-peak intensity relative to the median y ion.
    mz_ppm: standard deviation of fragment m/z error, in ppm.
    precursor_ppm: standard deviation of precursor m/z error, in ppm (0: exact).
    """

    charge3_probability: float = 0.3
    charge_reference_length: int = 12
    charge_length_slope: float = 0.25
    oxidation_rate: float = 0.1
    deamidation_rate: float = 0.03
    nterm_mod_rate: float = 0.03
    fragment_drop_rate: float = 0.2
    neutral_loss_rate: float = 0.25
    b_ion_intensity: float = 0.5
    doubly_charged_intensity: float = 0.5
    proline_boost: float = 3.0
    intensity_sigma: float = 0.6
    noise_peaks: float = 20.0
    noise_intensity: float = 0.1
    mz_ppm: float = 5.0
    precursor_ppm: float = 0.0

    def __post_init__(self) -> None:
        for field in (
            "charge3_probability",
            "oxidation_rate",
            "deamidation_rate",
            "nterm_mod_rate",
            "fragment_drop_rate",
            "neutral_loss_rate",
        ):
            value = getattr(self, field)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"SimulationConfig.{field}={value} must be a probability")
        for field in (
            "b_ion_intensity",
            "doubly_charged_intensity",
            "proline_boost",
            "intensity_sigma",
            "noise_peaks",
            "noise_intensity",
            "mz_ppm",
            "precursor_ppm",
        ):
            value = getattr(self, field)
            if value < 0:
                raise ValueError(f"SimulationConfig.{field}={value} must be >= 0")


@dataclasses.dataclass(frozen=True)
class SimulatedSpectrum:
    """One simulated spectrum, before preprocessing.

    tokens: the peptide in the vocabulary's tokens, N- to C-terminal.
    mz: [num_peaks] f64, ascending; intensity: [num_peaks] f64, > 0.
    """

    tokens: tuple[str, ...]
    precursor_charge: int
    precursor_mz: float
    mz: np.ndarray
    intensity: np.ndarray


def modify(
    peptide: str,
    rng: np.random.Generator,
    config: SimulationConfig = SimulationConfig(),
    residues: Residues = CASANOVO,
) -> list[str]:
    """Tokens of `peptide` (plain letters) with the fixed and random variable modifications.

    A modification is applied only if the vocabulary has its token; cysteine is always
    carbamidomethylated when `C+57.021` exists (Casanovo's fixed modification).
    """
    tokens = list(peptide)
    has = residues.masses
    if "C+57.021" in has:
        tokens = ["C+57.021" if t == "C" else t for t in tokens]
    variable = {"M": ("M+15.995", config.oxidation_rate)}
    variable["N"] = ("N+0.984", config.deamidation_rate)
    variable["Q"] = ("Q+0.984", config.deamidation_rate)
    draws = rng.random(len(tokens))
    for i, t in enumerate(tokens):
        mod = variable.get(t)
        if mod and mod[0] in has and draws[i] < mod[1]:
            tokens[i] = mod[0]
    available = [(m, w) for m, w in zip(N_TERMINAL_MODS, N_TERMINAL_MOD_WEIGHTS) if m in has]
    if available and rng.random() < config.nterm_mod_rate:
        weights = np.array([w for _, w in available])
        choice = rng.choice(len(available), p=weights / weights.sum())
        tokens.insert(0, available[choice][0])
    unknown = [t for t in tokens if t not in has]
    if unknown:
        raise ValueError(
            f"peptide {peptide!r}: residues {sorted(set(unknown))} are not in the vocabulary; "
            f"filter peptides to the vocabulary's residues before simulating"
        )
    return tokens


def residue_masses(tokens: Sequence[str], residues: Residues = CASANOVO) -> np.ndarray:
    """[num_residues] f64 masses, an N-terminal modification folded into the first residue."""
    masses = [residues.masses[t] for t in tokens]
    if tokens and tokens[0] in residues.nterm:
        if len(tokens) < 2:
            raise ValueError(f"peptide {tokens!r} is only an N-terminal modification")
        masses = [masses[0] + masses[1], *masses[2:]]
    return np.asarray(masses, dtype=np.float64)


def ion_ladder(
    tokens: Sequence[str], residues: Residues = CASANOVO, charge: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Theoretical b and y ion m/z at one fragment charge.

    Returns (b, y), each [num_residues - 1] f64, where b[i-1] is b_i and y[i-1] is y_i.
    """
    masses = residue_masses(tokens, residues)
    prefix = np.cumsum(masses)[:-1]
    suffix = np.cumsum(masses[::-1])[:-1]
    return (prefix + charge * PROTON) / charge, (suffix + H2O + charge * PROTON) / charge


def _charge(length: int, rng: np.random.Generator, config: SimulationConfig) -> int:
    p = config.charge3_probability
    if 0.0 < p < 1.0:
        logit = math.log(p / (1 - p)) + config.charge_length_slope * (
            length - config.charge_reference_length
        )
        p = 1.0 / (1.0 + math.exp(-logit))
    return 3 if rng.random() < p else 2


def simulate_peaks(
    tokens: Sequence[str],
    precursor_charge: int,
    rng: np.random.Generator,
    config: SimulationConfig = SimulationConfig(),
    residues: Residues = CASANOVO,
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a simulated spectrum: (mz, intensity), each [num_peaks] f64, mz ascending."""
    masses = residue_masses(tokens, residues)
    # Only the first token can be an N-terminal modification (Residues.parse enforces it).
    letters = [t[0] for t in (tokens[1:] if tokens[0] in residues.nterm else tokens)]
    num_bonds = len(masses) - 1
    # Bond j (0-based) splits residues [0..j] | [j+1..]: b_{j+1} and y_{L-j-1}.
    prefix = np.cumsum(masses)[:-1]
    b_neutral = prefix
    y_neutral = masses.sum() - prefix + H2O
    # Cleavage N-terminal to proline (the "proline effect") gives strong fragments.
    boost = np.where(np.array([c == "P" for c in letters[1:]]), config.proline_boost, 1.0)
    h2o_site = np.array([c in _LOSES_H2O for c in letters])
    nh3_site = np.array([c in _LOSES_NH3 for c in letters])
    # Whether the b (prefix) / y (suffix) fragment at each bond contains such a residue.
    b_h2o = np.cumsum(h2o_site)[:-1] > 0
    b_nh3 = np.cumsum(nh3_site)[:-1] > 0
    y_h2o = np.cumsum(h2o_site[::-1])[::-1][1:] > 0
    y_nh3 = np.cumsum(nh3_site[::-1])[::-1][1:] > 0

    neutral = [b_neutral, y_neutral]
    base = [config.b_ion_intensity * boost, boost]
    can_h2o = [b_h2o, y_h2o]
    can_nh3 = [b_nh3, y_nh3]
    charges = [1, 2] if precursor_charge >= 3 else [1]
    mz_parts, int_parts, h2o_parts, nh3_parts = [], [], [], []
    for z in charges:
        factor = 1.0 if z == 1 else config.doubly_charged_intensity
        for ion in range(2):
            mz_parts.append((neutral[ion] + z * PROTON) / z)
            int_parts.append(base[ion] * factor)
            h2o_parts.append(can_h2o[ion])
            nh3_parts.append(can_nh3[ion])
    charge_of = np.repeat(np.array(charges, dtype=np.float64), 2 * num_bonds)
    mz = np.concatenate(mz_parts)
    intensity = np.concatenate(int_parts) * rng.lognormal(0.0, config.intensity_sigma, mz.size)

    # Neutral losses: a weaker satellite peak at (m - loss) / z.
    loss_mz, loss_int = [], []
    for sites, loss in ((np.concatenate(h2o_parts), H2O), (np.concatenate(nh3_parts), NH3)):
        shown = sites & (rng.random(mz.size) < config.neutral_loss_rate)
        loss_mz.append(mz[shown] - loss / charge_of[shown])
        loss_int.append(intensity[shown] * rng.uniform(0.1, 0.5, int(shown.sum())))
    mz = np.concatenate([mz, *loss_mz])
    intensity = np.concatenate([intensity, *loss_int])

    kept = rng.random(mz.size) >= config.fragment_drop_rate
    mz, intensity = mz[kept], intensity[kept]

    # Noise peaks anywhere between 50 m/z and the singly charged precursor.
    num_noise = int(rng.poisson(config.noise_peaks))
    top = max(masses.sum() + H2O + PROTON, 100.0)
    noise_mz = rng.uniform(50.0, top, num_noise)
    noise_int = config.noise_intensity * rng.lognormal(0.0, 1.0, num_noise)
    mz = np.concatenate([mz, noise_mz])
    intensity = np.concatenate([intensity, noise_int])

    mz = mz * (1.0 + rng.normal(0.0, config.mz_ppm * 1e-6, mz.size))
    order = np.argsort(mz, kind="stable")
    return mz[order], intensity[order]


def simulate(
    peptide: str,
    rng: np.random.Generator,
    config: SimulationConfig = SimulationConfig(),
    residues: Residues = CASANOVO,
) -> SimulatedSpectrum:
    """A simulated spectrum of `peptide` (plain residue letters, e.g. from `tryptic_digest`)."""
    tokens = modify(peptide, rng, config, residues)
    charge = _charge(len(peptide), rng, config)
    mz, intensity = simulate_peaks(tokens, charge, rng, config, residues)
    precursor = precursor_mz(residues.peptide_mass(tokens), charge)
    if config.precursor_ppm:
        precursor *= 1.0 + rng.normal(0.0, config.precursor_ppm * 1e-6)
    return SimulatedSpectrum(tuple(tokens), charge, float(precursor), mz, intensity)
