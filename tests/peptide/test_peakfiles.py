"""MGF, mzML and mzXML of the same spectra give the same records (fixtures written by
tests/fixtures/make_peakfile_fixtures.py: psims for mzML, the mzXML schema by hand); the
format comes from the content; damaged and hostile XML is a clear, bounded error."""

from __future__ import annotations

import base64
import re
import shutil
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from zoo.peptide import peakfiles
from zoo.peptide.spectra import MgfError

pytest.importorskip("pyteomics.mzml", reason="pyteomics reads mzML / mzXML")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "peakfiles"
FORMATS = {"spectra.mgf": "mgf", "spectra.mzML": "mzml", "spectra.mzXML": "mzxml"}


@pytest.mark.parametrize("name, kind", FORMATS.items())
def test_format_is_read_from_the_content(name, kind, tmp_path):
    assert peakfiles.sniff(FIXTURES / name) == kind
    disguised = tmp_path / "run.txt"  # the name says nothing
    shutil.copy(FIXTURES / name, disguised)
    assert peakfiles.sniff(disguised) == kind


@pytest.mark.parametrize(
    "text",
    ["hello\nworld\n", '<?xml version="1.0"?>\n<MzIdentML id="x">\n</MzIdentML>\n', ""],
)
def test_anything_else_is_named_as_not_a_peak_file(text, tmp_path):
    path = tmp_path / "what.mgf"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"what\.mgf is not MGF, mzML or mzXML"):
        peakfiles.read_spectra(path)


def test_three_formats_give_identical_records():
    (mgf, _), (mzml, mzml_report), (mzxml, mzxml_report) = (
        peakfiles.read_spectra(FIXTURES / name) for name in FORMATS
    )
    assert len(mgf) == len(mzml) == len(mzxml) == 12
    # MS1 scans (and mzML's one MS3 scan) are skipped and counted, never read as MS2.
    assert mzml_report.skipped == {"ms_level": 4} and mzxml_report.skipped == {"ms_level": 3}
    for a, b, c in zip(mgf, mzml, mzxml):
        for other in (b, c):
            np.testing.assert_array_equal(a.mz, other.mz)
            np.testing.assert_array_equal(a.intensity, other.intensity)
            assert other.precursor_mz == a.precursor_mz
            assert other.precursor_charge == a.precursor_charge
            assert other.scans == a.scans
            assert other.rt == pytest.approx(a.rt, abs=1e-3)
        assert b.native_id == f"controllerType=0 controllerNumber=1 scan={a.scans}"
        assert c.native_id == f"scan={a.scans}"
        assert b.index == c.index  # the position among all the file's spectra, MS1 included
    assert [s.index for s in mzml][:5] == [1, 2, 3, 4, 6]


def _mzml_text() -> str:
    return (FIXTURES / "spectra.mzML").read_text()


def test_doctype_and_entities_are_refused(tmp_path):
    text = _mzml_text().replace("?>", '?>\n<!DOCTYPE x [<!ENTITY boom "boom">]>', 1)
    path = tmp_path / "entities.mzML"
    path.write_text(text)
    with pytest.raises(ValueError, match="DOCTYPE / ENTITY"):
        peakfiles.read_spectra(path)


def test_declared_length_that_does_not_match_is_an_error_naming_the_spectrum(tmp_path):
    text = _mzml_text()
    # The first MS2 spectrum (the second <spectrum>) claims one peak more than it has.
    spectra = text.split("<spectrum ")
    spectra[2] = re.sub(
        r'defaultArrayLength="(\d+)"',
        lambda m: f'defaultArrayLength="{int(m.group(1)) + 1}"',
        spectra[2],
        count=1,
    )
    path = tmp_path / "lying.mzML"
    path.write_text("<spectrum ".join(spectra))
    with pytest.raises(
        MgfError, match=r"lying\.mzML: spectrum 1 \(controllerType=0 .*scan=2\)"
    ) as e:
        peakfiles.read_spectra(path)
    assert "--skip-bad" in str(e.value) and e.value.reason == "bad_array"
    found, report = peakfiles.read_spectra(path, on_error="skip")
    assert len(found) == 11 and report.skipped == {"ms_level": 4, "bad_array": 1}


def test_zlib_bomb_costs_only_its_declared_size(tmp_path):
    """2 declared peaks whose zlib stream inflates to 200 MB: refused, memory bounded."""
    bomb = base64.b64encode(zlib.compress(b"\0" * (200 << 20), 9)).decode()
    text = (FIXTURES / "spectra.mzXML").read_text()
    text = re.sub(
        r'(<scan num="2" msLevel="2" peaksCount=")\d+(".*?<peaks compressionType=")\w+'
        r'(" compressedLen=")\d+(".*?>)[^<]*(</peaks>)',
        lambda m: f"{m.group(1)}2{m.group(2)}zlib{m.group(3)}1{m.group(4)}{bomb}{m.group(5)}",
        text,
        count=1,
        flags=re.S,
    )
    path = tmp_path / "bomb.mzXML"
    path.write_text(text)
    tracemalloc.start()
    start = time.perf_counter()
    found, report = peakfiles.read_spectra(path, on_error="skip")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.skipped.get("bad_array") == 1 and len(found) == 11
    assert peak < 50 << 20, f"{peak / 2**20:.0f} MiB at peak"
    assert time.perf_counter() - start < 10


def test_too_many_peaks_is_always_skipped_and_counted():
    found, report = peakfiles.read_spectra(FIXTURES / "spectra.mzML", max_peaks=60)
    assert report.skipped["too_many_peaks"] == 12 - len(found) > 0
    assert all(len(s.mz) <= 60 for s in found)
