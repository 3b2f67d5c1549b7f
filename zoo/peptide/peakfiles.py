"""Peak files of any kind a lab has: MGF, mzML and mzXML, into the same `Spectrum` records.

    spectra, report = read_spectra("run.mzML", on_error="skip")

The format is chosen by the file's content (an mzML or mzXML root element, or MGF text),
not by its name; anything else is "FILE is not MGF, mzML or mzXML". MGF goes through
`zoo.peptide.spectra.iter_mgf`; mzML and mzXML through pyteomics (the library Casanovo's
depthcharge reads them with), MS2 spectra only: MS1 / MS3+ scans are skipped and counted
("ms_level"). From each MS2 spectrum: peaks, the first selected ion's m/z and charge (mzML
"charge state", else a single "possible charge state"; mzXML precursorCharge), the
charge-state list the instrument reported, the native id (mzML `id`, mzXML `scan=NUM`), scan
number, retention time in seconds and `index` = the spectrum's 0-based position in the file.

Files come from strangers, so the XML readers
  * refuse a DOCTYPE or ENTITY declaration (mzML / mzXML have none; entities are how XML
    bombs and local-file inclusion work),
  * decode each binary array themselves, with its declared length checked and zlib
    inflation bounded by it (a compressed bomb costs no more than its declared peaks), and
    refuse more than `max_peaks` peaks per spectrum ("too_many_peaks", always skipped).
A malformed spectrum is an `MgfError`-like `PeakFileError` naming the file, the spectrum
index, its native id and the field, with `--skip-bad` in the fix; with on_error="skip" it
is counted per reason in the `MgfReport` instead.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from zoo.peptide import spectra as zspectra
from zoo.peptide.residues import Residues
from zoo.peptide.spectra import MAX_PEAK_LINES, MgfError, MgfReport, Spectrum

FORMATS = ("mgf", "mzml", "mzxml")
_HEAD_BYTES = 64 * 1024  # the prolog and root element of any mzML / mzXML fit in this
_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(indexedmzML|mzML|mzXML)[\s>]")
_SCAN_NUMBER = re.compile(r"(?:^|\s)scan=(\d+)(?:\s|$)")

PeakFileError = MgfError  # one error type for every format: reason, source, index, title

_FIXES = {
    "missing_precursor": "the spectrum has no precursor m/z; re-export it with its precursor",
    "bad_precursor": "the precursor m/z must be a positive number",
    "missing_charge": "the spectrum has no precursor charge; re-export with charge "
    "determination on, or skip such spectra with --skip-bad",
    "bad_charge": "the precursor charge must be one nonzero integer",
    "bad_peak": "the peak arrays must decode to equal numbers of finite m/z > 0 and intensity >= 0",
    "no_peaks": "the spectrum has no peaks; skip it with --skip-bad",
    "bad_array": "the binary array does not decode as declared (length, precision, "
    "compression); re-convert the file (e.g. msconvert)",
    "too_many_peaks": "centroid the spectra (MS/MS spectra have hundreds to a few thousand "
    "peaks), e.g. msconvert --filter 'peakPicking true 1-'",
    "bad_peptide": "fix the annotation, or pass a Residues table that knows the residue",
}


def sniff(path: str | os.PathLike) -> str:
    """'mgf', 'mzml' or 'mzxml' from the first bytes of the file; ValueError otherwise."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        match = _ROOT.search(head)
        if match:
            return "mzxml" if match.group(1) == b"mzXML" else "mzml"
    elif _looks_like_mgf(text):
        return "mgf"
    raise ValueError(
        f"{path} is not MGF, mzML or mzXML (by its content: "
        f"{text[:40].decode('utf-8', 'replace')!r}...); pass peak files of those formats"
    )


def _looks_like_mgf(text: bytes) -> bool:
    """MGF: BEGIN IONS, after only comments, blank lines and KEY=VALUE defaults."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[:1] in (b"#", b";", b"!", b"/"):
            continue
        if line.upper() == b"BEGIN IONS":
            return True
        if b"=" not in line:
            return False
    return b"BEGIN IONS" in text.upper()


def iter_spectra(
    path: str | os.PathLike,
    *,
    residues: Residues | None = None,
    on_error: str = "raise",
    report: MgfReport | None = None,
    max_peaks: int = MAX_PEAK_LINES,
) -> Iterator[Spectrum]:
    """The MS2 spectra of an MGF, mzML or mzXML file (format by content), in file order."""
    if on_error not in zspectra.ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; use one of {zspectra.ON_ERROR}")
    report = report if report is not None else MgfReport()
    kind = sniff(path)
    if kind == "mgf":
        yield from zspectra.iter_mgf(
            path, residues=residues, on_error=on_error, report=report, max_peak_lines=max_peaks
        )
        return
    _refuse_entities(path)
    yield from _iter_xml(path, kind, on_error, report, max_peaks)


def read_spectra(path: str | os.PathLike, **kwargs) -> tuple[list[Spectrum], MgfReport]:
    """All MS2 spectra of a peak file and the report of what was skipped; see iter_spectra."""
    report = kwargs.pop("report", None) or MgfReport()
    found = list(iter_spectra(path, report=report, **kwargs))
    return found, report


def _refuse_entities(path) -> None:
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    root = _ROOT.search(head)
    prolog = head[: root.start()] if root else head
    if b"<!DOCTYPE" in prolog.upper() or b"<!ENTITY" in prolog.upper():
        raise ValueError(
            f"{path}: a DOCTYPE / ENTITY declaration before the root element; mzML and mzXML "
            "have none, and zoo does not expand XML entities. Re-convert the file (msconvert)"
        )


def _iter_xml(path, kind: str, on_error: str, report: MgfReport, max_peaks: int):
    from pyteomics import mzml, mzxml  # the XML formats only

    source = Path(path).name
    reader_cls = mzml.MzML if kind == "mzml" else mzxml.MzXML
    with reader_cls(str(path), decode_binary=False, use_index=False, huge_tree=False) as reader:
        for position, raw in enumerate(reader):
            native = _native_id(raw, kind)
            try:
                spectrum = _to_spectrum(raw, kind, position, native, source, max_peaks)
            except MgfError as e:
                if e.reason == "too_many_peaks" or on_error == "skip":
                    report.count(e.reason, str(e))
                    continue
                raise
            if spectrum is None:  # another MS level
                report.count("ms_level", f"{source}: spectrum {position} ({native}): not MS2")
                continue
            report.read += 1
            yield spectrum


def _native_id(raw: dict, kind: str) -> str:
    if kind == "mzml":
        return str(raw.get("id", ""))
    return f"scan={raw.get('num', raw.get('id', ''))}"


def _fail(reason: str, source: str, index: int, native: str, problem: str) -> MgfError:
    return MgfError(
        f"{source}: spectrum {index} ({native}): {problem}; {_FIXES[reason]}"
        + ("" if reason == "too_many_peaks" else "; or skip and count them with --skip-bad"),
        reason=reason,
        source=source,
        index=index,
        title=native,
    )


def _to_spectrum(raw, kind, index, native, source, max_peaks) -> Spectrum | None:
    fail = lambda reason, problem: _fail(reason, source, index, native, problem)  # noqa: E731
    if kind == "mzml":
        level = raw.get("ms level")
        ions = _mzml_selected_ions(raw)
        rt = _mzml_rt_seconds(raw)
        scans = _SCAN_NUMBER.search(native)
        scan = scans.group(1) if scans else ""
    else:
        level = raw.get("msLevel")
        ions = [
            {
                "mz": p.get("precursorMz"),
                "charges": [p["precursorCharge"]] if p.get("precursorCharge") is not None else [],
            }
            for p in raw.get("precursorMz", []) or []
        ]
        minutes = raw.get("retentionTime")
        rt = float(minutes) * 60.0 if minutes is not None else math.nan
        scan = str(raw.get("num", ""))
    if level is None or int(level) != 2:
        return None
    if not ions or ions[0]["mz"] is None:
        raise fail("missing_precursor", "no precursor m/z")
    try:
        precursor_mz = float(ions[0]["mz"])
    except (TypeError, ValueError):
        raise fail("bad_precursor", f"precursor m/z {ions[0]['mz']!r}") from None
    if not (math.isfinite(precursor_mz) and precursor_mz > 0):
        raise fail("bad_precursor", f"precursor m/z {precursor_mz}")
    charges = ions[0]["charges"]
    if not charges:
        raise fail("missing_charge", "no precursor charge")
    if len(charges) > 1:
        raise fail("bad_charge", f"{len(charges)} possible charges {charges}, no charge state")
    try:
        charge = int(charges[0])
    except (TypeError, ValueError):
        raise fail("bad_charge", f"precursor charge {charges[0]!r}") from None
    if charge == 0 or charge != float(charges[0]):
        raise fail("bad_charge", f"precursor charge {charges[0]!r}")
    mz, intensity = _peaks(raw, kind, max_peaks, fail)
    if len(mz) == 0:
        raise fail("no_peaks", "no peaks")
    return Spectrum(
        mz=mz,
        intensity=intensity,
        precursor_mz=precursor_mz,
        precursor_charge=charge,
        title=native,
        scans=scan,
        rt=rt,
        index=index,
        source=source,
        native_id=native,
    )


def _mzml_selected_ions(raw: dict) -> list[dict]:
    """The first precursor's selected ions: m/z and charges (the charge state, or the
    instrument's possible charge states when it did not decide)."""
    precursors = (raw.get("precursorList") or {}).get("precursor") or []
    if not precursors:
        return []
    out = []
    for ion in (precursors[0].get("selectedIonList") or {}).get("selectedIon") or []:
        if ion.get("charge state") is not None:
            charges = [ion["charge state"]]
        else:
            possible = ion.get("possible charge state")
            charges = [] if possible is None else list(np.atleast_1d(possible))
        out.append({"mz": ion.get("selected ion m/z"), "charges": charges})
    return out


def _mzml_rt_seconds(raw: dict) -> float:
    scans = (raw.get("scanList") or {}).get("scan") or []
    value = scans[0].get("scan start time") if scans else None
    if value is None:
        return math.nan
    unit = getattr(value, "unit_info", None) or "minute"
    return float(value) * (60.0 if "min" in str(unit) else 1.0)


_INFLATE = {"zlib compression", "zlib"}
_PLAIN = {"no compression", "none", None}


def _decode(record, declared: int, itemsize: int, fail) -> np.ndarray:
    """One pyteomics binary array record -> its values, every size checked."""
    data = record.data
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    try:
        raw = base64.b64decode(data, validate=False) if not isinstance(data, memoryview) else data
    except (binascii.Error, ValueError):
        raise fail("bad_array", "the binary array is not base64") from None
    want = declared * itemsize
    if record.compression in _INFLATE:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(raw, want + 1)  # at most one byte past the declaration
        except zlib.error:
            raise fail("bad_array", "the zlib stream is damaged") from None
    elif record.compression not in _PLAIN:  # e.g. MS-Numpress: pyteomics' codec, then checked
        if len(raw) > 16 * want + 64:
            raise fail("bad_array", f"{len(raw)} encoded bytes for {declared} values")
        try:
            values = np.asarray(record.decode())
        except Exception as e:  # a codec's own error on damaged data
            raise fail("bad_array", f"{record.compression}: {type(e).__name__}") from None
        return values
    if len(raw) != want:
        raise fail("bad_array", f"{len(raw)} bytes where {declared} values need {want}")
    return np.frombuffer(raw, dtype=record.dtype).copy()


def _peaks(raw: dict, kind: str, max_peaks: int, fail) -> tuple[np.ndarray, np.ndarray]:
    if kind == "mzml":
        declared = raw.get("defaultArrayLength")
        if declared is None or int(declared) < 0:
            raise fail("bad_array", f"defaultArrayLength {declared!r}")
        declared = int(declared)
        if declared > max_peaks:
            raise fail("too_many_peaks", f"{declared} peaks, more than {max_peaks}")
        arrays = []
        for key in ("m/z array", "intensity array"):
            record = raw.get(key)
            if record is None:
                if declared == 0:
                    return np.zeros(0), np.zeros(0)
                raise fail("bad_array", f"no {key}")
            values = _decode(record, declared, np.dtype(record.dtype).itemsize, fail)
            if len(values) != declared:
                raise fail("bad_array", f"{key}: {len(values)} values, declared {declared}")
            arrays.append(np.asarray(values, np.float64))
        mz, intensity = arrays
    else:
        declared = int(raw.get("peaksCount", 0) or 0)
        if declared > max_peaks:
            raise fail("too_many_peaks", f"{declared} peaks, more than {max_peaks}")
        record = raw.get("m/z array")
        if record is None or declared == 0:
            return np.zeros(0), np.zeros(0)
        pairs = _decode(record, declared, np.dtype(record.dtype).itemsize, fail)
        if len(pairs) != declared:
            raise fail("bad_array", f"{len(pairs)} peaks, declared {declared}")
        mz = np.asarray(pairs["m/z array"], np.float64)
        intensity = np.asarray(pairs["intensity array"], np.float64)
    if not (np.isfinite(mz).all() and (mz > 0).all()):
        raise fail("bad_peak", "an m/z that is not a finite number > 0")
    if not (np.isfinite(intensity).all() and (intensity >= 0).all()):
        raise fail("bad_peak", "an intensity that is not a finite number >= 0")
    return mz, intensity
