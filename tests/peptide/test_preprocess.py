"""Casanovo's peak preprocessing in NumPy equals spectrum_utils and Casanovo's own pipeline.

Two references:
  * spectrum_utils 0.5 itself, called here on the same peaks in Casanovo 5.2.1's order
    (set_mz_range, remove_precursor_peak, scale_intensity("root", 1), filter_intensity, the
    min-peaks drop, L2 norm); numba compiles it once per process (~12 s on 2 cores), so all
    cases share one test, marked slow;
  * tests/fixtures/peptide/preprocess_casanovo.npz, written by
    tests/fixtures/make_spectra_fixtures.py with Casanovo's DeNovoDataModule.preprocessing_fn
    and depthcharge's MgfParser, i.e. Casanovo's composition of the steps, not our reading.
The cases (tests/fixtures/make_spectra_fixtures.py:random_cases) cover unsorted and duplicate
m/z, tied intensities at the top-150 cut, zeros, peaks in the precursor windows, charges 0..6.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from zoo.peptide.spectra import (
    LowQualitySpectrum,
    PreprocessConfig,
    _numba_quicksort_argsort,
    preprocess,
    read_mgf,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SAMPLE = FIXTURES / "peptide" / "sample_spectra.mgf"


def _load_cases():
    spec = importlib.util.spec_from_file_location(
        "make_spectra_fixtures", FIXTURES / "make_spectra_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.random_cases(), module.cases_digest


CASES, CASES_DIGEST = _load_cases()
DEFAULT = PreprocessConfig()


def _ours(mz, intensity, precursor_mz, charge, config=DEFAULT):
    try:
        return preprocess(mz, intensity, precursor_mz, charge, config)
    except LowQualitySpectrum:
        return None


def _spectrum_utils(mz, intensity, precursor_mz, charge, config=DEFAULT):
    """Casanovo 5.2.1's DeNovoDataModule.preprocessing_fn, step by step, on spectrum_utils."""
    sus = pytest.importorskip("spectrum_utils.spectrum")
    if not 1 <= charge <= config.max_charge:  # depthcharge parser: valid_charge
        return None
    spectrum = sus.MsmsSpectrum("s", precursor_mz, charge, mz, intensity)
    try:  # depthcharge drops the spectrum on these exceptions
        spectrum.set_mz_range(min_mz=config.min_mz, max_mz=config.max_mz)
        spectrum.remove_precursor_peak(config.remove_precursor_tol, "Da")
        spectrum.scale_intensity("root", 1)
        spectrum.filter_intensity(config.min_intensity, config.n_peaks)
    except (IndexError, KeyError, ValueError):
        return None
    if len(spectrum.mz) < config.min_peaks:
        return None
    return spectrum.mz.copy(), spectrum.intensity / np.linalg.norm(spectrum.intensity)


def _assert_same(ours, ref, what):
    assert (ours is None) == (ref is None), f"{what}: dropped by one side only"
    if ours is None:
        return
    np.testing.assert_array_equal(ours[0], ref[0], err_msg=f"{what}: m/z differ")
    assert ours[1].dtype == np.float32
    np.testing.assert_allclose(ours[1], ref[1], rtol=0, atol=1e-6, err_msg=f"{what}: intensity")


# Almost all of this test's time is numba compiling spectrum_utils' jitclass (~12 s on an idle
# 2-core machine; it cannot be cached). The fixture tests below check the same cases against
# Casanovo's own pipeline in well under a second.
@pytest.mark.slow
def test_equals_spectrum_utils_on_random_and_real_spectra():
    pytest.importorskip("spectrum_utils")
    sample, _ = read_mgf(SAMPLE)
    inputs = [(f"random case {i}", *case) for i, case in enumerate(CASES)]
    inputs += [
        (f"sample {s.title}", s.mz, s.intensity, s.precursor_mz, s.precursor_charge) for s in sample
    ]
    # Also non-default values: a small top-n stresses the cut, and a floor of 0.25 is exactly
    # representable, so peaks at exactly floor x base peak occur (random_cases' squares).
    tight = PreprocessConfig(n_peaks=25, min_intensity=0.25, min_peaks=5)
    n_kept = 0
    for what, mz, intensity, precursor_mz, charge in inputs:
        ours = _ours(mz, intensity, precursor_mz, charge)
        _assert_same(ours, _spectrum_utils(mz, intensity, precursor_mz, charge), what)
        n_kept += ours is not None
        _assert_same(
            _ours(mz, intensity, precursor_mz, charge, tight),
            _spectrum_utils(mz, intensity, precursor_mz, charge, tight),
            f"{what} (tight config)",
        )
    assert n_kept > len(inputs) // 3  # the comparison is not vacuous


def test_equals_casanovo_pipeline_fixture_on_random_cases():
    fixture = np.load(FIXTURES / "peptide" / "preprocess_casanovo.npz")
    assert str(fixture["digest"]) == CASES_DIGEST(CASES), (
        "random_cases() draws differently under this numpy; rerun "
        "tests/fixtures/make_spectra_fixtures.py"
    )
    config = json.loads(str(fixture["config"]))
    assert PreprocessConfig() == PreprocessConfig(
        min_mz=config["min_mz"],
        max_mz=config["max_mz"],
        remove_precursor_tol=config["remove_precursor_tol"],
        min_intensity=config["min_intensity"],
        n_peaks=config["max_peaks"],
        min_peaks=config["min_peaks"],
        max_charge=config["max_charge"],
    ), "our defaults are not Casanovo's config.yaml"
    offsets = np.concatenate([[0], np.cumsum(fixture["n"])])
    for i, (mz, intensity, precursor_mz, charge) in enumerate(CASES):
        ref = None
        if fixture["kept"][i]:
            rows = slice(offsets[i], offsets[i + 1])
            ref = (np.sort(mz)[fixture["index"][rows]], fixture["intensity"][rows])
        _assert_same(_ours(mz, intensity, precursor_mz, charge), ref, f"random case {i}")
    assert 0 < fixture["kept"].sum() < len(CASES)


def test_equals_casanovo_mgf_parser_on_sample_spectra():
    fixture = np.load(FIXTURES / "peptide" / "preprocess_casanovo.npz")
    spectra, _ = read_mgf(SAMPLE)
    assert list(fixture["sample_index"]) == [s.index for s in spectra]
    offsets = np.concatenate([[0], np.cumsum(fixture["sample_n"])])
    for i, s in enumerate(spectra):
        assert s.precursor_mz == fixture["sample_precursor_mz"][i]
        assert s.precursor_charge == fixture["sample_charge"][i]
        rows = slice(offsets[i], offsets[i + 1])
        ref = (fixture["sample_mz"][rows], fixture["sample_intensity"][rows])
        _assert_same(_ours(s.mz, s.intensity, s.precursor_mz, s.precursor_charge), ref, s.title)


def test_output_is_ascending_unit_norm_float32_and_capped():
    mz, intensity, precursor_mz, charge = next(c for c in CASES if len(c[0]) > 400 and c[3] == 2)
    out_mz, out_intensity = preprocess(mz, intensity, precursor_mz, charge)
    assert out_mz.dtype == np.float64 and out_intensity.dtype == np.float32
    assert len(out_mz) == 150 and (np.diff(out_mz) > 0).all()
    assert out_mz.min() >= 50.0 and out_mz.max() <= 2500.0
    assert abs(np.linalg.norm(out_intensity.astype(np.float64)) - 1) < 1e-6


@pytest.mark.parametrize(
    "charge, n_peaks, reason",
    [(0, 100, "charge_out_of_range"), (5, 100, "charge_out_of_range"), (2, 10, "too_few_peaks")],
)
def test_drops_what_casanovo_drops_with_the_reason(charge, n_peaks, reason):
    mz = np.linspace(100, 1000, n_peaks)
    with pytest.raises(LowQualitySpectrum) as e:
        preprocess(mz, np.ones(n_peaks), 1500.0, charge)
    assert e.value.reason == reason


def test_a_peak_exactly_at_the_floor_is_dropped():
    """spectrum_utils keeps intensities strictly above min_intensity x base peak (after the
    square root): sqrt([1, 4, 16]) / 4 = [0.25, 0.5, 1.0] with a floor of 0.25 keeps two."""
    mz = np.array([100.0, 200.0, 300.0])
    config = PreprocessConfig(min_intensity=0.25, min_peaks=1)
    out_mz, out_intensity = preprocess(mz, np.array([1.0, 4.0, 16.0]), 1000.0, 2, config)
    np.testing.assert_array_equal(out_mz, [200.0, 300.0])
    np.testing.assert_allclose(out_intensity, np.array([0.5, 1.0]) / np.sqrt(1.25), rtol=1e-6)


def test_top_n_keeps_the_most_intense_in_mz_order():
    mz = np.arange(100.0, 110.0)
    intensity = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10], dtype=float) ** 2
    config = PreprocessConfig(n_peaks=3, min_peaks=1, min_intensity=0.0)
    out_mz, _ = preprocess(mz, intensity, 1000.0, 2, config)
    np.testing.assert_array_equal(out_mz, [102.0, 106.0, 109.0])


def test_no_peak_in_range_is_dropped_not_an_error():
    with pytest.raises(LowQualitySpectrum) as e:
        preprocess(np.array([10.0, 3000.0]), np.array([1.0, 2.0]), 500.0, 2)
    assert e.value.reason == "no_peaks_in_range"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1.0])
def test_bad_intensity_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="finite"):
        preprocess(np.array([100.0, 200.0]), np.array([1.0, bad]), 500.0, 2)


def test_quicksort_port_equals_numba_argsort_with_ties():
    """The tie-breaking order used for equal m/z or equal intensities at the cut is numba's."""
    quicksort = pytest.importorskip("numba.misc.quicksort")
    numba_argsort = quicksort.make_py_quicksort(is_argsort=True, is_np_array=True).run_quicksort
    rng = np.random.default_rng(0)
    for n in [0, 1, 2, 15, 16, 17, 40, 300, 1000]:
        for values in (rng.integers(0, 4, n), rng.integers(0, 50, n), np.sort(rng.random(n))):
            values = values.astype(np.float32)
            np.testing.assert_array_equal(
                _numba_quicksort_argsort(values), numba_argsort(values), err_msg=f"n={n}"
            )
