"""The MGF TFDS builder: splits from globs over manual_dir, Casanovo-preprocessed examples in
file order, skipped records counted per file and reason in the stored metadata, no TensorFlow."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.data.sources import load_source
from zoo.peptide.features import spectrum_example
from zoo.peptide.residues import CASANOVO
from zoo.peptide.spectra import (
    MgfError,
    PreprocessConfig,
    Spectrum,
    preprocess,
    read_mgf,
    write_mgf,
)
from zoo.peptide.spectra_tfds import SPECTRUM_FEATURES, mgf_builder, mgf_stats, resolve_splits

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "peptide" / "sample_spectra.mgf"
MALFORMED = "BEGIN IONS\nTITLE=broken\nPEPMASS=500\nCHARGE=2+\n100 1\n200 x\nEND IONS\n"


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
    """species_a/: the first 30 sample spectra plus a malformed record; species_b/: the last 10,
    one of them charge 5 (Casanovo drops it) and one with 3 peaks (too few)."""
    root = tmp_path_factory.mktemp("mgf")
    spectra, _ = read_mgf(SAMPLE)
    (root / "species_a").mkdir()
    (root / "species_b").mkdir()
    write_mgf(root / "species_a" / "part1.mgf", spectra[:20])
    write_mgf(root / "species_a" / "part2.mgf", spectra[20:30])
    with open(root / "species_a" / "part2.mgf", "a") as f:
        f.write(MALFORMED)
    tail = spectra[30:]
    tail[3].precursor_charge = 5
    tail[6] = Spectrum(tail[6].mz[:3], tail[6].intensity[:3], 500.0, 2, "PEPK", "three peaks")
    write_mgf(root / "species_b" / "run.mgf", tail)
    (root / "notes.txt").write_text("not a spectrum file")
    return root


@pytest.fixture(scope="module")
def builder(manual_dir, tmp_path_factory):
    return mgf_builder(
        tmp_path_factory.mktemp("tfds"),
        manual_dir,
        {"train": ["species_a/*.mgf"], "test": ["species_b/*.mgf"]},
        name="two_species",
    )


def test_examples_are_casanovo_preprocessed_in_file_order(builder, manual_dir):
    expected = []
    for path in sorted((manual_dir / "species_a").glob("*.mgf")):
        expected += read_mgf(path, on_error="skip")[0]
    train = load_source(builder, "train")
    assert len(train) == 30
    for stored, spectrum in zip([train[i] for i in range(len(train))], expected, strict=True):
        mz, intensity = preprocess(
            spectrum.mz, spectrum.intensity, spectrum.precursor_mz, spectrum.precursor_charge
        )
        assert stored["mz"].dtype == np.float32 and stored["intensity"].dtype == np.float32
        np.testing.assert_array_equal(stored["mz"], mz.astype(np.float32))
        np.testing.assert_array_equal(stored["intensity"], intensity)
        assert float(stored["precursor_mz"]) == spectrum.precursor_mz
        assert int(stored["precursor_charge"]) == spectrum.precursor_charge
        assert stored["title"].decode() == spectrum.title
        assert stored["peptide"].decode() == CASANOVO.to_string(CASANOVO.parse(spectrum.peptide))
    peptides = [train[i]["peptide"].decode() for i in range(len(train))]
    assert "C+57.021GHTNNIRPK" in peptides  # ProForma in the file, Casanovo notation stored


def test_skipped_records_are_counted_per_file_and_reason(builder):
    stats = mgf_stats(builder)
    assert set(stats) == {"train", "test"}
    assert stats["train"]["species_a/part1.mgf"]["skipped"] == {}
    part2 = stats["train"]["species_a/part2.mgf"]
    assert part2["read"] == 10 and part2["skipped"] == {"bad_peak": 1}
    assert "TITLE='broken'" in part2["examples"]["bad_peak"][0]
    run = stats["test"]["species_b/run.mgf"]
    assert run["skipped"] == {"charge_out_of_range": 1, "too_few_peaks": 1}
    assert run["read"] == 8 == len(load_source(builder, "test"))


def test_prepared_dataset_is_reused_with_its_stats(builder, manual_dir):
    files = sorted(Path(builder.data_dir).rglob("*array_record*"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = mgf_builder(
        Path(builder.data_dir).parents[2],
        manual_dir,
        {"train": ["species_a/*.mgf"], "test": ["species_b/*.mgf"]},
        name="two_species",
    )
    assert again.data_dir == builder.data_dir
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert mgf_stats(again) == mgf_stats(builder)


def test_other_parameters_or_files_get_another_directory(builder, manual_dir, tmp_path):
    data_dir = Path(builder.data_dir).parents[2]
    splits = {"train": ["species_a/*.mgf"], "test": ["species_b/*.mgf"]}
    other = mgf_builder(
        data_dir, manual_dir, splits, name="two_species", preprocess=PreprocessConfig(n_peaks=50)
    )
    assert other.data_dir != builder.data_dir
    assert max(len(load_source(other, "train")[i]["mz"]) for i in range(30)) <= 50
    copy = tmp_path / "copy"
    shutil.copytree(manual_dir, copy)
    with open(copy / "species_b" / "run.mgf", "a") as f:
        f.write(MALFORMED)
    changed = mgf_builder(data_dir, copy, splits, name="two_species")
    assert changed.data_dir != builder.data_dir
    assert mgf_stats(changed)["test"]["species_b/run.mgf"]["skipped"]["bad_peak"] == 1


def test_on_error_raise_stops_the_build_naming_the_record(manual_dir, tmp_path):
    with pytest.raises(MgfError, match=r"part2.mgf: spectrum 10 \(TITLE='broken'"):
        mgf_builder(tmp_path, manual_dir, {"train": ["species_a/*.mgf"]}, on_error="raise")


@pytest.mark.parametrize(
    "splits, error, match",
    [
        ({"train": ["species_c/*.mgf"]}, FileNotFoundError, "species_c/\\*.mgf.*matches no file"),
        ({"train": ["*/*.mgf"], "test": ["species_b/*"]}, ValueError, "one split only"),
        ({"train": "species_a/*.mgf"}, TypeError, "list of globs"),
        ({}, ValueError, "splits is empty"),
    ],
)
def test_bad_split_patterns_raise_clearly(manual_dir, splits, error, match):
    with pytest.raises(error, match=match):
        resolve_splits(manual_dir, splits)


def test_spectrum_example_is_the_shared_feature_layout():
    spectrum = read_mgf(SAMPLE)[0][2]
    example = spectrum_example(spectrum, CASANOVO, PreprocessConfig())
    assert set(example) == set(SPECTRUM_FEATURES)
    assert example["peptide"] == "C+57.021GHTNNIRPK"
    assert example["precursor_charge"].dtype == np.int32
    assert example["precursor_mz"].dtype == np.float64
    assert (np.diff(example["mz"]) >= 0).all()


def test_building_and_reading_do_not_import_tensorflow(builder):
    assert load_source(builder, "train")[0]["mz"].size > 0
    assert "tensorflow" not in sys.modules


def test_a_split_with_no_kept_spectrum_raises_with_the_reasons(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "tiny.mgf").write_text(
        "BEGIN IONS\nTITLE=x\nPEPMASS=500\nCHARGE=2+\n100 1\nEND IONS\n"
    )
    with pytest.raises(ValueError, match=r"split 'train': no spectrum kept.*too_few_peaks: 1"):
        mgf_builder(tmp_path / "data", tmp_path / "in", {"train": ["tiny.mgf"]})


def test_mzml_and_mzxml_directories_build_the_same_examples_as_mgf(tmp_path):
    """The builder reads every format (by content): one split per format, same spectra."""
    pytest.importorskip("pyteomics.mzml", reason="pyteomics reads mzML / mzXML")
    peaks = SAMPLE.parents[1] / "peakfiles"
    root = tmp_path / "manual"
    for name in ("spectra.mgf", "spectra.mzML", "spectra.mzXML"):
        (root / name.split(".")[1]).mkdir(parents=True)
        shutil.copy(peaks / name, root / name.split(".")[1] / name)
    splits = {"mgf": ["mgf/*"], "mzml": ["mzML/*"], "mzxml": ["mzXML/*"]}
    builder = mgf_builder(tmp_path / "tfds", root, splits, name="three_formats")
    mgf, mzml, mzxml = (load_source(builder, s) for s in ("mgf", "mzml", "mzxml"))
    assert len(mgf) == len(mzml) == len(mzxml) == 12
    for i in range(12):
        for other in (mzml[i], mzxml[i]):
            np.testing.assert_array_equal(other["mz"], mgf[i]["mz"])
            np.testing.assert_array_equal(other["intensity"], mgf[i]["intensity"])
            assert float(other["precursor_mz"]) == float(mgf[i]["precursor_mz"])
    assert mgf[0]["peptide"] and not mzml[0]["peptide"]  # labels come only from MGF SEQ=
    assert mgf_stats(builder)["mzml"]["mzML/spectra.mzML"]["skipped"] == {"ms_level": 4}
