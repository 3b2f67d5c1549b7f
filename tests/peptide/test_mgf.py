"""MGF reader and writer: every field of real spectra (checked against pyteomics), exact round
trips, and malformed records that raise a clear error or are skipped and counted."""

import math
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from zoo.peptide.residues import CASANOVO, ppm_error, precursor_mz
from zoo.peptide.spectra import MgfError, Spectrum, iter_mgf, read_mgf, write_mgf

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "peptide" / "sample_spectra.mgf"

GOOD = (
    "BEGIN IONS\nTITLE=good {i}\nPEPMASS=500.25\nCHARGE=2+\nSEQ=PEPTIDEK\n100.5 10\n200.25 20\n"
    "END IONS\n"
)


def test_sample_spectra_fields_equal_pyteomics():
    mgf = pytest.importorskip("pyteomics.mgf")
    ours, report = read_mgf(SAMPLE)
    theirs = list(mgf.read(str(SAMPLE), use_index=False))
    assert len(ours) == len(theirs) == 40 and report.total_skipped == 0 and report.read == 40
    for i, (s, t) in enumerate(zip(ours, theirs)):
        p = t["params"]
        assert (s.index, s.source) == (i, SAMPLE.name)
        assert s.title == p["title"] and s.scans == p["scans"] and s.peptide == p["seq"]
        assert s.precursor_mz == p["pepmass"][0]
        assert s.precursor_charge == int(p["charge"][0])
        assert s.rt == p["rtinseconds"]
        np.testing.assert_array_equal(s.mz, t["m/z array"])
        np.testing.assert_array_equal(s.intensity, t["intensity array"])
    assert {s.precursor_charge for s in ours} == {2, 3}


def test_sample_labels_parse_and_fit_their_precursors():
    spectra, _ = read_mgf(SAMPLE)
    for s in spectra:
        tokens = CASANOVO.parse(s.peptide)
        calc = precursor_mz(CASANOVO.peptide_mass(tokens), s.precursor_charge)
        ppm = min(abs(ppm_error(calc, s.precursor_mz, s.precursor_charge, k)) for k in (0, 1))
        assert ppm < 20, (s.title, s.peptide, ppm)
    assert any("C+57.021" in CASANOVO.parse(s.peptide) for s in spectra)


def _random_spectra(n: int, rng: np.random.Generator) -> list[Spectrum]:
    peptides = ["", "PEPTIDEK", "C[Carbamidomethyl]GHTNNIRPK", "+42.011M+15.995K", "[Acetyl]-AK"]
    out = []
    for i in range(n):
        k = int(rng.integers(1, 50))
        out.append(
            Spectrum(
                mz=np.sort(rng.uniform(50, 2000, k)) * 10.0 ** rng.integers(-3, 3),
                intensity=rng.lognormal(0, 4, k) * rng.integers(0, 2, k),
                precursor_mz=float(rng.uniform(100, 2000)),
                precursor_charge=int(rng.choice([1, 2, 3, 4, 7, -2])),
                peptide=peptides[i % len(peptides)],
                title=f'run1.{i}.{i}.2 File:"x=y.raw"' if i % 2 else "",
                scans=str(1000 + i) if i % 3 else "",
                rt=math.nan if i % 4 == 0 else float(rng.uniform(0, 7200)),
                index=i,
                source="r.mgf",
            )
        )
    return out


def _assert_equal_spectra(a: Spectrum, b: Spectrum) -> None:
    for field in ("precursor_mz", "precursor_charge", "peptide", "title", "scans", "index"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.rt == b.rt or (math.isnan(a.rt) and math.isnan(b.rt))
    np.testing.assert_array_equal(a.mz, b.mz)
    np.testing.assert_array_equal(a.intensity, b.intensity)


def test_write_then_read_round_trips_exactly(tmp_path):
    spectra = _random_spectra(60, np.random.default_rng(0))
    path = tmp_path / "r.mgf"
    assert write_mgf(path, spectra) == 60
    again, report = read_mgf(path)
    assert report.total_skipped == 0
    for a, b in zip(spectra, again, strict=True):
        _assert_equal_spectra(a, b)
        assert b.mz.dtype == np.float64 and b.source == "r.mgf"


def test_sample_file_survives_read_write_read(tmp_path):
    spectra, _ = read_mgf(SAMPLE)
    write_mgf(tmp_path / SAMPLE.name, spectra)
    for a, b in zip(spectra, read_mgf(tmp_path / SAMPLE.name)[0], strict=True):
        _assert_equal_spectra(a, b)


@pytest.mark.parametrize(
    "field, value",
    [("title", "two\nlines"), ("title", " padded"), ("peptide", "PEP\rK")],
)
def test_write_refuses_what_would_not_read_back(tmp_path, field, value):
    spectrum = _random_spectra(1, np.random.default_rng(1))[0]
    setattr(spectrum, field, value)
    with pytest.raises(ValueError, match=field):
        write_mgf(tmp_path / "x.mgf", [spectrum])


def test_write_refuses_an_empty_spectrum(tmp_path):
    empty = Spectrum(np.zeros(0), np.zeros(0), 500.0, 2, title="empty")
    with pytest.raises(ValueError, match="non-empty"):
        write_mgf(tmp_path / "x.mgf", [empty])


@pytest.mark.parametrize("text, charge", [("2+", 2), ("2", 2), ("+2", 2), ("3-", -3), (" 4+ ", 4)])
def test_charge_notations(tmp_path, text, charge):
    path = tmp_path / "c.mgf"
    path.write_text(f"BEGIN IONS\nPEPMASS=500\nCHARGE={text}\n100 1\nEND IONS\n")
    assert read_mgf(path)[0][0].precursor_charge == charge


def test_file_wide_defaults_comments_crlf_and_extra_columns(tmp_path):
    path = tmp_path / "h.mgf"
    path.write_bytes(
        b"# exported by a tool\r\nCHARGE=3+\r\nMASS=Monoisotopic\r\n\r\n"
        b"BEGIN IONS\r\nTITLE=a\r\nPEPMASS=400.5 1234.5\r\n100.0\t5.0\r\n"
        b"150.0 6.0 1+\r\nEND IONS\r\n"
        b"BEGIN IONS\r\nTITLE=b\r\nPEPMASS=300\r\nCHARGE=2+\r\n110 1\r\nEND IONS\r\n"
    )
    (a, b), report = read_mgf(path)
    assert (a.title, a.precursor_mz, a.precursor_charge) == ("a", 400.5, 3)
    np.testing.assert_array_equal(a.mz, [100.0, 150.0])
    np.testing.assert_array_equal(a.intensity, [5.0, 6.0])
    assert (b.precursor_charge, b.index, report.read) == (2, 1, 2)


def _record(body: str, title: str = "bad one") -> str:
    return f"BEGIN IONS\nTITLE={title}\n{body}\nEND IONS\n"


# reason -> file text whose second record (index 1, TITLE "bad one") is malformed
MALFORMED = {
    "missing_pepmass": _record("CHARGE=2+\n100 1"),
    "missing_charge": _record("PEPMASS=500\n100 1"),
    "bad_charge": _record("PEPMASS=500\nCHARGE=2+ and 3+\n100 1"),
    "bad_charge_zero": _record("PEPMASS=500\nCHARGE=0\n100 1"),
    "bad_pepmass": _record("PEPMASS=abc\nCHARGE=2+\n100 1"),
    "bad_pepmass_negative": _record("PEPMASS=-5\nCHARGE=2+\n100 1"),
    "bad_peak": _record("PEPMASS=500\nCHARGE=2+\n100 1\n200 abc"),
    "bad_peak_one_column": _record("PEPMASS=500\nCHARGE=2+\n100"),
    "bad_peak_nan": _record("PEPMASS=500\nCHARGE=2+\n100 nan"),
    "bad_peak_negative": _record("PEPMASS=500\nCHARGE=2+\n100 -1"),
    "bad_peak_text_line": _record("PEPMASS=500\nCHARGE=2+\nhello world"),
    "no_peaks": _record("PEPMASS=500\nCHARGE=2+"),
    "bad_peptide": _record("PEPMASS=500\nCHARGE=2+\nSEQ=PEPXIDE\n100 1"),
    "bad_peptide_proforma": _record("PEPMASS=500\nCHARGE=2+\nSEQ=PEPS[Phospho]K\n100 1"),
    "bad_field": _record("PEPMASS=500\nCHARGE=2+\nRTINSECONDS=soon\n100 1"),
    "duplicate_field": _record("PEPMASS=500\nPEPMASS=501\nCHARGE=2+\n100 1"),
    "truncated": "BEGIN IONS\nTITLE=bad one\nPEPMASS=500\nCHARGE=2+\n100 1\n",
    "truncated_by_next_record": "BEGIN IONS\nTITLE=bad one\nPEPMASS=500\nCHARGE=2+\n100 1\n",
}
FIELD = {
    "missing_pepmass": "PEPMASS",
    "missing_charge": "CHARGE",
    "bad_charge": "CHARGE",
    "bad_pepmass": "PEPMASS",
    "bad_peak": "peak",
    "no_peaks": "peak",
    "bad_peptide": "SEQ",
    "bad_field": "RTINSECONDS",
    "duplicate_field": "PEPMASS",
    "truncated": "END IONS",
}


def _file(tmp_path, case: str) -> Path:
    text = GOOD.format(i=0) + MALFORMED[case]
    if case == "truncated_by_next_record":
        text += GOOD.format(i=2)
    elif case != "truncated":
        text += GOOD.format(i=2)
    path = tmp_path / f"{case}.mgf"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_record_raises_naming_file_spectrum_and_field(tmp_path, case):
    path = _file(tmp_path, case)
    reason = next(r for r in FIELD if case.startswith(r))
    with pytest.raises(MgfError) as e:
        read_mgf(path)
    message = str(e.value)
    assert e.value.reason == reason
    assert str(path) in message and "spectrum 1" in message and "'bad one'" in message
    assert FIELD[reason] in message
    if reason == "bad_peak":  # the offending line is quoted with its line number
        bad_line = MALFORMED[case].split("\n")[-3]
        assert f"peak {bad_line!r}" in message and "line " in message
    assert "Fix:" in message and "on_error='skip'" in message
    assert (e.value.index, e.value.title) == (1, "bad one")


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_record_is_skipped_and_counted(tmp_path, case):
    path = _file(tmp_path, case)
    reason = next(r for r in FIELD if case.startswith(r))
    spectra, report = read_mgf(path, on_error="skip")
    assert report.skipped == {reason: 1}
    assert len(report.examples[reason]) == 1 and str(path) in report.examples[reason][0]
    expected_titles = ["good 0"] if case == "truncated" else ["good 0", "good 2"]
    assert [s.title for s in spectra] == expected_titles
    assert [s.index for s in spectra] == [0, 2][: len(spectra)]  # positions keep counting
    assert report.read == len(spectra)


def test_unknown_residue_error_names_the_residue(tmp_path):
    with pytest.raises(MgfError, match=r"'X'"):
        read_mgf(_file(tmp_path, "bad_peptide"))


def test_labels_are_not_checked_without_a_vocabulary(tmp_path):
    spectra, report = read_mgf(_file(tmp_path, "bad_peptide"), residues=None)
    assert [s.peptide for s in spectra] == ["PEPTIDEK", "PEPXIDE", "PEPTIDEK"]
    assert report.total_skipped == 0


def test_stray_text_between_records(tmp_path):
    path = tmp_path / "s.mgf"
    path.write_text(GOOD.format(i=0) + "oops\n" + GOOD.format(i=1) + "END IONS\n")
    with pytest.raises(MgfError, match="outside any spectrum"):
        read_mgf(path)
    spectra, report = read_mgf(path, on_error="skip")
    assert len(spectra) == 2 and report.skipped == {"stray_text": 2}


def test_report_counts_several_reasons_and_keeps_few_examples(tmp_path):
    text = "".join(MALFORMED["no_peaks"] for _ in range(5)) + MALFORMED["missing_charge"]
    path = tmp_path / "many.mgf"
    path.write_text(text + GOOD.format(i=6))
    report_spectra, report = read_mgf(path, on_error="skip")
    assert len(report_spectra) == 1 and report.skipped == {"no_peaks": 5, "missing_charge": 1}
    assert len(report.examples["no_peaks"]) == 3 and report.total_skipped == 6
    assert "6 skipped" in str(report)


def test_iter_mgf_streams_and_rejects_unknown_policy(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        next(iter_mgf(SAMPLE, on_error="ignore"))
    first = next(iter_mgf(SAMPLE))
    assert first.title == "0" and first.peptide == "IAHYNKR"


def _big_record(n_peak_lines: int, title: str = "huge") -> str:
    peaks = "100.5 1\n" * n_peak_lines
    return f"BEGIN IONS\nTITLE={title}\nPEPMASS=500\nCHARGE=2+\n{peaks}END IONS\n"


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_record_over_the_peak_cap_is_skipped_and_counted_in_every_mode(tmp_path, on_error):
    """Too large to take is not malformed: never kept, never stops the run, always counted."""
    path = tmp_path / "cap.mgf"
    path.write_text(GOOD.format(i=0) + _big_record(51) + GOOD.format(i=2))
    spectra, report = read_mgf(path, on_error=on_error, max_peak_lines=50)
    assert [(s.title, s.index) for s in spectra] == [("good 0", 0), ("good 2", 2)]
    assert report.skipped == {"too_many_peaks": 1} and report.read == 2
    (message,) = report.examples["too_many_peaks"]
    assert str(path) in message and "spectrum 1" in message and "'huge'" in message
    assert "51 peak lines" in message and "max_peak_lines=50" in message and "Fix:" in message


def test_record_at_the_peak_cap_is_read(tmp_path):
    path = tmp_path / "cap.mgf"
    path.write_text(_big_record(50))
    (spectrum,), report = read_mgf(path, max_peak_lines=50)
    assert len(spectrum.mz) == 50 and report.total_skipped == 0


def test_over_the_cap_is_counted_even_with_a_bad_line_past_the_cap(tmp_path):
    """Lines past the cap are counted, not parsed: a bad one there does not make it raise."""
    path = tmp_path / "cap.mgf"
    path.write_text(_big_record(60).replace("END IONS", "hello world\nEND IONS") + GOOD.format(i=1))
    spectra, report = read_mgf(path, max_peak_lines=50)
    assert [s.title for s in spectra] == ["good 1"] and report.skipped == {"too_many_peaks": 1}


def test_million_peak_lines_are_counted_not_held(tmp_path):
    """A record of 1M peak lines (an attack, or a profile scan) costs linear time and at most
    max_peak_lines lines of memory: with a cap of 1000, 100k lines peak at < 2 MB where
    reading them all takes ~36 MB."""
    path = tmp_path / "huge.mgf"
    path.write_text(GOOD.format(i=0) + _big_record(1_000_000) + GOOD.format(i=2))
    start = time.perf_counter()
    spectra, report = read_mgf(path)  # the default cap
    assert time.perf_counter() - start < 20.0  # ~1 s; a safety net, not a benchmark
    assert len(spectra) == 2 and report.skipped == {"too_many_peaks": 1}
    assert "1000000 peak lines" in report.examples["too_many_peaks"][0]

    path.write_text(_big_record(100_000))
    peaks = {}
    for cap in (1000, 1_000_000):
        tracemalloc.start()
        read_mgf(path, max_peak_lines=cap)
        peaks[cap] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[1000] < 2e6 < 8e6 < peaks[1_000_000], peaks


@pytest.mark.parametrize("bad", [0, -1, 1.5, None])
def test_peak_cap_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="max_peak_lines"):
        read_mgf(SAMPLE, max_peak_lines=bad)
