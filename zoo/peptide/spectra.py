"""Tandem mass spectra in and out: an MGF reader/writer and Casanovo's peak preprocessing.

MGF (Mascot Generic Format) is how annotated spectra are distributed (the nine-species
benchmark, MassIVE-KB, Casanovo's sample data). One record:

    BEGIN IONS
    TITLE=0
    PEPMASS=451.25348          precursor m/z (an optional second number is its intensity)
    CHARGE=2+                  also "2", "+2"; "3-" is negative; "2+ and 3+" is refused
    SCANS=F1:2478              optional
    RTINSECONDS=824.574        optional
    SEQ=IAHYNKR                optional label, Casanovo or ProForma notation
    63.994834899902344 0.0611930787563324      "mz intensity [fragment charge]" lines
    END IONS

KEY=VALUE lines before the first record are file-wide defaults (as pyteomics, which Casanovo
uses, reads them); lines starting with #, ;, ! or / are comments. Malformed records (missing
PEPMASS or CHARGE, a peak line that is not two numbers, no peaks, a SEQ with an unknown residue,
a file cut before END IONS, ...) raise `MgfError` naming the file, the record (index and
TITLE), the line, the field and the fix; with on_error="skip" they are skipped and counted per
reason in an `MgfReport` instead. A record is never silently altered. A record with more than
`max_peak_lines` peak lines is not read (bounded memory and time) and is always skipped and
counted as "too_many_peaks", whatever on_error says.

    spectra, report = read_mgf("run.mgf", on_error="skip")
    mz, intensity = preprocess(s.mz, s.intensity, s.precursor_mz, s.precursor_charge)

`preprocess` is Casanovo 5.2.1's pipeline (depthcharge 0.4.10 calling spectrum_utils 0.5),
re-implemented in NumPy: m/z range, precursor peak removal, square root scaled to a base peak
of 1, relative-intensity filter and top-n, minimum peak count, L2 normalisation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from zoo.peptide.residues import CASANOVO, PeptideParseError, Residues

ON_ERROR = ("raise", "skip")
_COMMENT = ("#", ";", "!", "/")
_CHARGE = re.compile(r"^([+-]?)(\d+)([+-]?)$")
_EXAMPLES_PER_REASON = 3
# Peak lines read per record at most. Centroided MS/MS spectra have hundreds to a few thousand
# peaks (Casanovo keeps 150); 100k lines is already a profile-mode scan or an attack, and reading
# that many (~40 MB of Python objects at peak) is the most one record may cost.
MAX_PEAK_LINES = 100_000


@dataclasses.dataclass(eq=False)
class Spectrum:
    """One MS/MS spectrum as read from a file.

    mz: [n] f64, in file order; intensity: [n] f64 (f32 accepted). peptide: the SEQ value as
    written ('' when unlabeled). scans: SCANS as written ('' when absent). rt: RTINSECONDS
    (nan when absent). index: 0-based position of the record among the file's records
    (skipped ones included, so it matches Casanovo's `index=N` spectrum reference).
    source: the file name. native_id: mzML `id` / mzXML `scan=NUM` (zoo.peptide.peakfiles).
    """

    mz: np.ndarray
    intensity: np.ndarray
    precursor_mz: float
    precursor_charge: int
    peptide: str = ""
    title: str = ""
    scans: str = ""
    rt: float = math.nan
    index: int = 0
    source: str = ""
    native_id: str = ""  # mzML / mzXML: the spectrum's native id ('' for MGF)


class MgfError(ValueError):
    """A malformed MGF record. `reason` is the key it is counted under when skipped."""

    def __init__(self, message: str, *, reason: str, source: str, index: int | None, title: str):
        super().__init__(message)
        self.reason = reason
        self.source = source
        self.index = index
        self.title = title


@dataclasses.dataclass
class MgfReport:
    """What a read kept and skipped.

    read: records returned. skipped: reason -> count (reasons: missing_pepmass, bad_pepmass,
    missing_charge, bad_charge, bad_peak, no_peaks, bad_peptide, bad_field, duplicate_field,
    truncated, stray_text, too_many_peaks; a TFDS build adds the preprocessing reasons of
    `LowQualitySpectrum`).
    examples: reason -> the first few error messages, so a report says where to look.
    """

    read: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def count(self, reason: str, message: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _EXAMPLES_PER_REASON:
            examples.append(message)

    def merge(self, other: MgfReport) -> None:
        self.read += other.read
        for reason, n in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + n
            room = _EXAMPLES_PER_REASON - len(self.examples.setdefault(reason, []))
            self.examples[reason].extend(other.examples.get(reason, [])[: max(room, 0)])

    def to_dict(self) -> dict:
        return {"read": self.read, "skipped": dict(self.skipped), "examples": dict(self.examples)}

    def __str__(self) -> str:
        parts = ", ".join(f"{r}: {n}" for r, n in sorted(self.skipped.items()))
        return f"{self.read} spectra read, {self.total_skipped} skipped" + (
            f" ({parts})" if parts else ""
        )


# --- reading ------------------------------------------------------------------------------------
_FIXES = {
    "missing_pepmass": "add PEPMASS=<precursor m/z> to the record",
    "bad_pepmass": "PEPMASS must be a positive m/z, optionally followed by an intensity",
    "missing_charge": "add CHARGE=<z>+ to the record (or a file-wide CHARGE before the first "
    "BEGIN IONS)",
    "bad_charge": "CHARGE must be one nonzero charge state such as 2+, 2 or 3-; split a record "
    "listing several charges into one record per charge",
    "bad_peak": "peak lines are 'mz intensity' (an optional third column, the fragment charge, "
    "is ignored) with finite m/z > 0 and intensity >= 0",
    "no_peaks": "drop the record; a spectrum needs at least one peak",
    "bad_peptide": "fix SEQ, or pass a Residues table that knows the residue",
    "bad_field": "fix or remove the field",
    "duplicate_field": "keep one line per field in each record",
    "truncated": "the record has no END IONS; re-export or re-download the file",
    "stray_text": "text outside BEGIN IONS ... END IONS after the first record; remove it",
    "too_many_peaks": "centroid the spectrum (MS/MS spectra have hundreds to a few thousand "
    "peaks), or read with a larger max_peak_lines",
}


class _Record:
    """Lines of one BEGIN IONS ... END IONS block, validated by `_finish`."""

    def __init__(self, index: int, line_no: int):
        self.index = index
        self.line_no = line_no
        self.params: dict[str, tuple[int, str]] = {}  # KEY -> (line number, value)
        self.peaks: list[str] = []
        self.peak_lines: list[int] = []
        self.n_peak_lines = 0  # all of them, also those past the cap that are not kept
        self.duplicate: tuple[int, str] | None = None

    def add_peak(self, line: str, line_no: int, cap: int) -> None:
        """Keeps a peak line while the record has at most `cap`; past that, only counts."""
        self.n_peak_lines += 1
        if self.n_peak_lines <= cap:
            self.peaks.append(line)
            self.peak_lines.append(line_no)
        elif self.peaks:  # over the cap: free what was held, the record will be skipped
            self.peaks, self.peak_lines = [], []


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value


def _parse_charge(text: str) -> int:
    """'2+', '2', '+2' -> 2; '3-' -> -3. Several charges or 0 -> ValueError."""
    m = _CHARGE.match(text.strip())
    if not m or (m.group(1) and m.group(3)):
        raise ValueError(f"cannot read {text!r} as one charge state")
    charge = int(m.group(2))
    if charge == 0:
        raise ValueError("charge 0 is not a charge state")
    return -charge if "-" in (m.group(1), m.group(3)) else charge


_TWO_COLUMNS = re.compile(r"\S+[ \t]+\S+(?:\n\S+[ \t]+\S+)*")


def _parse_peaks(lines: list[str], line_nos: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Peak lines -> (mz, intensity) f64; ValueError naming the first bad line."""
    text = "\n".join(lines)
    if _TWO_COLUMNS.fullmatch(text):  # fast path: two columns on every line, C parsing
        try:  # a non-number: ValueError (numpy 2) or a short result and a warning (numpy 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                values = np.fromstring(text, sep=" ")
        except ValueError:
            values = np.zeros(0)
        if len(values) == 2 * len(lines):
            values = values.reshape(-1, 2)
            mz, intensity = values[:, 0], values[:, 1]
            if np.isfinite(values).all() and (mz > 0).all() and (intensity >= 0).all():
                return mz.copy(), intensity.copy()
    mz, intensity = np.empty(len(lines)), np.empty(len(lines))
    for i, (line_no, text) in enumerate(zip(line_nos, lines)):
        p = text.split()
        problem = None
        if len(p) not in (2, 3):
            problem = f"{len(p)} columns"
        else:
            try:
                mz[i], intensity[i] = _parse_float(p[0]), _parse_float(p[1])
            except ValueError as e:
                problem = str(e)
            else:
                if mz[i] <= 0:
                    problem = "m/z <= 0"
                elif intensity[i] < 0:
                    problem = "negative intensity"
        if problem:
            raise ValueError(f"line {line_no}: peak {text!r}: {problem}")
    return mz, intensity


def iter_mgf(
    path: str | os.PathLike,
    *,
    residues: Residues | None = CASANOVO,
    on_error: str = "raise",
    report: MgfReport | None = None,
    max_peak_lines: int = MAX_PEAK_LINES,
) -> Iterator[Spectrum]:
    """Streams the spectra of an MGF file (constant memory, for large files).

    The file is read as UTF-8 (MGF is ASCII in practice; an undecodable byte becomes U+FFFD).
    SEQ is checked with `residues.parse` (None: not checked) but kept as written. on_error:
    "raise" -> MgfError at the first malformed record; "skip" -> the record is skipped and
    counted in `report` (pass one to see the counts). `report.read` counts yielded spectra.
    A record with more than max_peak_lines peak lines is skipped and counted as
    "too_many_peaks" in either mode: it is too large to take, not malformed, so it neither
    stops the run nor is kept; its lines past the cap are counted, not held.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; use one of {ON_ERROR}")
    if not isinstance(max_peak_lines, int) or max_peak_lines < 1:
        raise ValueError(
            f"max_peak_lines={max_peak_lines!r}; use a positive int (default {MAX_PEAK_LINES})"
        )
    report = report if report is not None else MgfReport()
    source = os.fspath(path)
    name = Path(source).name
    defaults: dict[str, tuple[int, str]] = {}
    record: _Record | None = None
    n_records = 0
    known_peptides: set[str] = set()

    def fail(reason: str, rec: _Record | None, where: str, problem: str) -> None:
        title = ""
        if rec is not None:
            title = rec.params.get("TITLE", defaults.get("TITLE", (0, "")))[1]
            what = f"spectrum {rec.index} (TITLE={title!r}, BEGIN IONS at line {rec.line_no})"
        else:
            what = "outside any spectrum"
        if reason == "too_many_peaks":  # skipped in every mode: never raised
            report.count(
                reason, f"{source}: {what}: {where}: {problem}; skipped. Fix: {_FIXES[reason]}"
            )
            return
        message = (
            f"{source}: {what}: {where}: {problem}. Fix: {_FIXES[reason]}; or skip and count "
            f"such records with --skip-bad (Python: on_error='skip')"
        )
        error = MgfError(
            message, reason=reason, source=source, index=rec and rec.index, title=title
        )
        if on_error == "raise":
            raise error
        report.count(reason, message)

    def finish(rec: _Record) -> Spectrum | None:
        if rec.n_peak_lines > max_peak_lines:  # first: its peaks were not kept
            fail(
                "too_many_peaks",
                rec,
                "peaks",
                f"{rec.n_peak_lines} peak lines, more than max_peak_lines={max_peak_lines}",
            )
            return None
        params = {**defaults, **rec.params}
        if rec.duplicate is not None:
            line_no, key = rec.duplicate
            fail("duplicate_field", rec, f"line {line_no}: {key}", f"{key} given twice")
            return None
        if "PEPMASS" not in params:
            fail("missing_pepmass", rec, "PEPMASS", "no PEPMASS line")
            return None
        line_no, value = params["PEPMASS"]
        try:
            fields = value.split()
            if not 1 <= len(fields) <= 3:
                raise ValueError(f"{len(fields)} values")
            precursor_mz = _parse_float(fields[0])
            if precursor_mz <= 0:
                raise ValueError("m/z <= 0")
        except ValueError as e:
            fail("bad_pepmass", rec, f"line {line_no}: PEPMASS={value!r}", str(e))
            return None
        if "CHARGE" not in params:
            fail("missing_charge", rec, "CHARGE", "no CHARGE line")
            return None
        line_no, value = params["CHARGE"]
        try:
            charge = _parse_charge(value)
        except ValueError as e:
            fail("bad_charge", rec, f"line {line_no}: CHARGE={value!r}", str(e))
            return None
        rt = math.nan
        if "RTINSECONDS" in params:
            line_no, value = params["RTINSECONDS"]
            try:
                rt = _parse_float(value)
            except ValueError as e:
                fail("bad_field", rec, f"line {line_no}: RTINSECONDS={value!r}", str(e))
                return None
        peptide = params.get("SEQ", (0, ""))[1]
        if peptide and residues is not None and peptide not in known_peptides:
            try:
                residues.parse(peptide, where=f"line {params['SEQ'][0]}: SEQ")
            except PeptideParseError as e:
                fail("bad_peptide", rec, "SEQ", str(e))
                return None
            if len(known_peptides) < 100_000:  # labels repeat (MassIVE-KB: many PSMs each)
                known_peptides.add(peptide)
        if not rec.peaks:
            fail("no_peaks", rec, "peaks", "the record has no peak lines")
            return None
        try:
            mz, intensity = _parse_peaks(rec.peaks, rec.peak_lines)
        except ValueError as e:
            fail("bad_peak", rec, "peaks", str(e))
            return None
        return Spectrum(
            mz=mz,
            intensity=intensity,
            precursor_mz=precursor_mz,
            precursor_charge=charge,
            peptide=peptide,
            title=params.get("TITLE", (0, ""))[1],
            scans=params.get("SCANS", (0, ""))[1],
            rt=rt,
            index=rec.index,
            source=name,
        )

    with open(source, encoding="utf-8", errors="replace") as f:
        for line_no, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            first = line[0]
            if record is not None and (first.isdigit() or first in "+-."):
                record.add_peak(line, line_no, max_peak_lines)  # the bulk of a file
                continue
            if first in _COMMENT:
                continue
            upper = line.upper()
            if upper == "BEGIN IONS":
                if record is not None:
                    fail("truncated", record, f"line {line_no}", "BEGIN IONS before END IONS")
                record = _Record(n_records, line_no)
                n_records += 1
            elif upper == "END IONS":
                if record is None:
                    fail("stray_text", None, f"line {line_no}", "END IONS without BEGIN IONS")
                    continue
                spectrum = finish(record)
                record = None
                if spectrum is not None:
                    report.read += 1
                    yield spectrum
            elif record is not None:
                if "=" in line:
                    key, value = line.split("=", 1)
                    key = key.strip().upper()
                    if key in record.params and record.duplicate is None:
                        record.duplicate = (line_no, key)
                    record.params[key] = (line_no, value.strip())
                else:  # reported as a bad peak line
                    record.add_peak(line, line_no, max_peak_lines)
            elif "=" in line and n_records == 0:
                key, value = line.split("=", 1)
                defaults[key.strip().upper()] = (line_no, value.strip())
            else:
                fail("stray_text", None, f"line {line_no}", f"{line[:40]!r}")
        if record is not None:
            fail("truncated", record, "end of file", "the file ends before END IONS")


def read_mgf(
    path: str | os.PathLike,
    *,
    residues: Residues | None = CASANOVO,
    on_error: str = "raise",
    max_peak_lines: int = MAX_PEAK_LINES,
) -> tuple[list[Spectrum], MgfReport]:
    """All spectra of an MGF file and the report of skipped records; see `iter_mgf`."""
    report = MgfReport()
    spectra = list(
        iter_mgf(
            path,
            residues=residues,
            on_error=on_error,
            report=report,
            max_peak_lines=max_peak_lines,
        )
    )
    return spectra, report


# --- writing ------------------------------------------------------------------------------------
def _text_field(spectrum: Spectrum, i: int, field: str) -> str:
    value = getattr(spectrum, field)
    if "\n" in value or "\r" in value or value != value.strip():
        raise ValueError(
            f"spectrum {i} ({field}={value!r}): a line break or leading/trailing whitespace "
            f"would not survive an MGF round trip; clean the {field}"
        )
    return value


def write_mgf(path: str | os.PathLike, spectra: Iterable[Spectrum]) -> int:
    """Writes spectra as MGF; `read_mgf` returns the same values (floats as repr, exact).

    Writes TITLE, PEPMASS, CHARGE, SCANS (if set), RTINSECONDS (if not nan), SEQ (if set) and
    one 'mz intensity' line per peak. Returns the number of records. Raises ValueError for a
    spectrum that would not read back the same (no peaks, line breaks in text fields, ...).
    """
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, s in enumerate(spectra):
            mz = np.asarray(s.mz, dtype=np.float64)
            intensity = np.asarray(s.intensity, dtype=np.float64)
            if mz.shape != intensity.shape or mz.ndim != 1 or len(mz) == 0:
                raise ValueError(
                    f"spectrum {i} (TITLE={s.title!r}): mz {mz.shape} and intensity "
                    f"{intensity.shape} must be equal-length, non-empty 1-D arrays"
                )
            charge = int(s.precursor_charge)
            if charge == 0:
                raise ValueError(f"spectrum {i} (TITLE={s.title!r}): precursor_charge is 0")
            lines = ["BEGIN IONS", f"TITLE={_text_field(s, i, 'title')}"]
            lines.append(f"PEPMASS={float(s.precursor_mz)!r}")
            lines.append(f"CHARGE={abs(charge)}{'+' if charge > 0 else '-'}")
            if s.scans:
                lines.append(f"SCANS={_text_field(s, i, 'scans')}")
            if not math.isnan(s.rt):
                lines.append(f"RTINSECONDS={float(s.rt)!r}")
            if s.peptide:
                lines.append(f"SEQ={_text_field(s, i, 'peptide')}")
            lines.extend(f"{a!r} {b!r}" for a, b in zip(mz.tolist(), intensity.tolist()))
            lines.append("END IONS")
            f.write("\n".join(lines) + "\n\n")
            n += 1
    return n


# --- preprocessing ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Casanovo 5.2.1's peak preprocessing (its config.yaml defaults).

    min_mz, max_mz: keep peaks with min_mz <= m/z <= max_mz.
    remove_precursor_tol: Da; drop peaks this close to the precursor m/z at any charge 1..z.
    min_intensity: after square-root scaling to a base peak of 1, drop peaks <= this.
    n_peaks: then keep the n_peaks most intense.
    min_peaks: a spectrum left with fewer peaks is dropped (LowQualitySpectrum).
    max_charge: spectra with a precursor charge outside 1..max_charge are dropped.
    """

    min_mz: float = 50.0
    max_mz: float = 2500.0
    remove_precursor_tol: float = 2.0
    min_intensity: float = 0.01
    n_peaks: int = 150
    min_peaks: int = 20
    max_charge: int = 4


class LowQualitySpectrum(ValueError):
    """A spectrum Casanovo drops before the model sees it. reason: "charge_out_of_range",
    "no_peaks_in_range" or "too_few_peaks"."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def preprocess(
    mz: np.ndarray,
    intensity: np.ndarray,
    precursor_mz: float,
    precursor_charge: int,
    config: PreprocessConfig = PreprocessConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Casanovo 5.2.1's spectrum preprocessing, in its order (DeNovoDataModule):

    1. sort peaks by m/z; intensities to f32 (spectrum_utils.MsmsSpectrum)
    2. keep min_mz <= m/z <= max_mz (set_mz_range)
    3. drop peaks within remove_precursor_tol Da of (M + z*1.007825)/c for c = z..1, with
       M = (precursor_mz - 1.007825) * z (remove_precursor_peak; spectrum_utils uses the
       hydrogen atom mass here, not the proton's)
    4. intensity = sqrt(intensity) / max (scale_intensity("root", 1))
    5. drop peaks with intensity <= min_intensity (relative to the base peak, on the square
       roots), then keep the n_peaks most intense (filter_intensity), m/z order preserved
    6. fewer than min_peaks left -> dropped (Casanovo's _discard_low_quality)
    7. intensity /= ||intensity||_2 (f32)

    mz: [n] f64, intensity: [n] -> (mz [k] f64 ascending, intensity [k] f32), k <= n_peaks.
    Raises LowQualitySpectrum where Casanovo drops the spectrum (charge outside
    1..max_charge, no peak left, fewer than min_peaks) and ValueError for bad input.

    Ties are broken by stable NumPy sorts, O(n log n) on any input (a file's peak order is
    chosen by whoever wrote it; spectrum_utils' numba quicksort is quadratic on crafted
    orders). This is where zoo can differ from spectrum_utils, only on tied keys:
      * peaks of equal m/z stay in file order (numba's quicksort is not stable). The same
        (m/z, intensity) pairs come out; only their order within an equal m/z differs, which
        changes no prediction: the encoders have no positional encoding over peaks, so they
        see a set (up to float summation order). Duplicate peaks are kept, as in Casanovo.
      * equal intensities straddling the n_peaks cut: the peaks later in m/z order (higher
        m/z; for equal m/z, later in the file) are kept, as taking the last n_peaks of a
        stable ascending argsort does. spectrum_utils keeps whichever its quicksort puts last.
    """
    mz = np.asarray(mz, dtype=np.float64).reshape(-1)
    intensity = np.asarray(intensity, dtype=np.float32).reshape(-1)
    if mz.shape != intensity.shape:
        raise ValueError(f"mz has {mz.shape[0]} peaks and intensity {intensity.shape[0]}")
    if not (np.isfinite(mz).all() and np.isfinite(intensity).all() and (intensity >= 0).all()):
        raise ValueError("peaks must have finite m/z and finite, non-negative intensity")
    if not 1 <= precursor_charge <= config.max_charge:
        raise LowQualitySpectrum(
            f"precursor charge {precursor_charge} outside 1..{config.max_charge}",
            "charge_out_of_range",
        )
    # 1. Sort by m/z, stable: equal m/z keep file order (an ascending file is left as is).
    if not (np.diff(mz) >= 0).all():
        order = np.argsort(mz, kind="stable")
        mz, intensity = mz[order], intensity[order]
    # 2. m/z range (inclusive; bounds swapped if reversed, as spectrum_utils does).
    lo, hi = sorted((config.min_mz, config.max_mz))
    keep = (mz >= lo) & (mz <= hi)
    # 3. Precursor peak at every charge z..1.
    hydrogen = 1.007825
    neutral = (precursor_mz - hydrogen) * precursor_charge
    if neutral >= 0:
        for charge in range(precursor_charge, 0, -1):
            target = neutral / charge + hydrogen
            keep &= ~(np.abs(mz - target) <= config.remove_precursor_tol)
    else:  # targets descend: spectrum_utils' two-pointer scan is not "any target"; mirror it
        keep = _remove_precursor_scan(mz, keep, neutral, precursor_charge, config)
    mz, intensity = mz[keep], intensity[keep]
    if len(mz) == 0:
        raise LowQualitySpectrum(
            "no peak left after the m/z and precursor filters", "no_peaks_in_range"
        )
    # 4. Square root, scaled to a base peak of 1 (f32 results, as spectrum_utils stores them).
    root = np.sqrt(intensity.astype(np.float64)).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = (root.astype(np.float64) / np.float64(root.max())).astype(np.float32)
    # 5. Relative-intensity floor, then top n_peaks: as spectrum_utils, keep an ascending
    # argsort from max(n_low, n - n_peaks) on; ours is stable, so among equal intensities at
    # the cut the peaks later in m/z order are kept. Comparisons in f64 as in spectrum_utils.
    n = len(scaled)
    threshold = config.min_intensity * np.float64(scaled.max())
    n_low = int(np.count_nonzero(~(scaled.astype(np.float64) > threshold)))
    start = max(n_low, n - config.n_peaks)
    kept = np.sort(np.argsort(scaled, kind="stable")[start:])
    mz, intensity = mz[kept], scaled[kept]
    # 6. Casanovo's minimum peak count.
    if len(mz) < config.min_peaks:
        raise LowQualitySpectrum(
            f"{len(mz)} peaks left after filtering, fewer than min_peaks={config.min_peaks}",
            "too_few_peaks",
        )
    # 7. Unit L2 norm in f32 (Casanovo's _scale_to_unit_norm).
    return mz, intensity / np.linalg.norm(intensity)


def _remove_precursor_scan(
    mz: np.ndarray, keep: np.ndarray, neutral: float, charge: int, config: PreprocessConfig
) -> np.ndarray:
    """spectrum_utils' two-pointer precursor removal over the peaks in `keep`; used only when
    the precursor m/z is below the hydrogen mass and its targets are not ascending."""
    hydrogen, tol = 1.007825, config.remove_precursor_tol
    targets = [neutral / c + hydrogen for c in range(charge, 0, -1)]
    keep = keep.copy()
    idx = np.flatnonzero(keep)
    i = t = 0
    while i < len(idx) and t < len(targets):
        diff = mz[idx[i]] - targets[t]
        if diff < -tol:
            i += 1
        elif diff > tol:
            t += 1
        else:
            keep[idx[i]] = False
            i += 1
    return keep


def preprocess_spectrum(
    spectrum: Spectrum, config: PreprocessConfig = PreprocessConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """`preprocess` on a Spectrum's peaks and precursor."""
    return preprocess(
        spectrum.mz, spectrum.intensity, spectrum.precursor_mz, spectrum.precursor_charge, config
    )
