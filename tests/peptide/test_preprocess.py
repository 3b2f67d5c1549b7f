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

zoo sorts stably where spectrum_utils uses numba's (unstable, quadratic on crafted orders)
quicksort, so the two are compared up to the documented differences (`preprocess`): the order
of peaks within an equal m/z, and which of equal intensities straddling the n_peaks cut are
kept (zoo: the later in m/z order). Every case without such a tie must match exactly.
"""

import contextlib
import importlib.util
import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from zoo.peptide.spectra import (
    LowQualitySpectrum,
    PreprocessConfig,
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
    """Casanovo 5.2.1's DeNovoDataModule.preprocessing_fn, step by step, on spectrum_utils.

    -> (result, scaled): result is (mz, intensity) or None where Casanovo drops the spectrum;
    scaled is (mz, intensity) after scale_intensity, the input of the top-n cut (or None)."""
    sus = pytest.importorskip("spectrum_utils.spectrum")
    if not 1 <= charge <= config.max_charge:  # depthcharge parser: valid_charge
        return None, None
    spectrum = sus.MsmsSpectrum("s", precursor_mz, charge, mz, intensity)
    try:  # depthcharge drops the spectrum on these exceptions
        spectrum.set_mz_range(min_mz=config.min_mz, max_mz=config.max_mz)
        spectrum.remove_precursor_peak(config.remove_precursor_tol, "Da")
        spectrum.scale_intensity("root", 1)
        scaled = spectrum.mz.copy(), spectrum.intensity.copy()
        spectrum.filter_intensity(config.min_intensity, config.n_peaks)
    except (IndexError, KeyError, ValueError):
        return None, None
    if len(spectrum.mz) < config.min_peaks:
        return None, scaled
    return (spectrum.mz.copy(), spectrum.intensity / np.linalg.norm(spectrum.intensity)), scaled


def _canonical(peaks):
    """Peaks ordered by (m/z, intensity): the order within an equal m/z is not compared."""
    order = np.lexsort((peaks[1], peaks[0]))
    return peaks[0][order], peaks[1][order]


def _assert_same(ours, ref, what, *, tie_at_cut_allowed=False, n_peaks=DEFAULT.n_peaks):
    """ours equals ref up to the order of equal m/z; with tie_at_cut_allowed, also up to which
    of equal intensities at the n_peaks cut are kept. -> True where that tie made a difference.
    """
    assert (ours is None) == (ref is None), f"{what}: dropped by one side only"
    if ours is None:
        return False
    assert ours[1].dtype == np.float32 and (np.diff(ours[0]) >= 0).all()
    ours, ref = _canonical(ours), _canonical(ref)
    if len(ours[0]) == len(ref[0]) and (ours[0] == ref[0]).all():
        np.testing.assert_allclose(ours[1], ref[1], rtol=0, atol=1e-6, err_msg=what)
        return False
    assert tie_at_cut_allowed, f"{what}: m/z differ: {ours[0]} vs {ref[0]}"
    # A tie at the cut: n_peaks kept on both sides, the same intensities, and the peaks kept by
    # one side only all at the lowest kept intensity, where the zoo side keeps the higher m/z.
    assert len(ours[0]) == len(ref[0]) == n_peaks, f"{what}: not a cut ({len(ours[0])} peaks)"
    np.testing.assert_allclose(np.sort(ours[1]), np.sort(ref[1]), rtol=0, atol=1e-6)
    floor = ours[1].min()
    at_floor = [np.isclose(side[1], floor, rtol=0, atol=1e-6) for side in (ours, ref)]
    np.testing.assert_array_equal(ours[0][~at_floor[0]], ref[0][~at_floor[1]], err_msg=what)
    tied_ours = ours[0][at_floor[0]]
    union = Counter(tied_ours.tolist()) | Counter(ref[0][at_floor[1]].tolist())  # multisets
    highest = sorted(union.elements())[-len(tied_ours) :]
    np.testing.assert_array_equal(tied_ours, highest, err_msg=f"{what}: not the higher m/z")
    return True


def _zoo_rule(scaled, config):
    """zoo's documented cut on spectrum_utils' scaled peaks: peaks above min_intensity x base
    peak, the n_peaks most intense, among equal intensities the higher m/z; unit L2 norm.
    -> ((mz, intensity) or None, whether equal intensities straddle the cut)."""
    mz, intensity = scaled
    above = intensity.astype(np.float64) > config.min_intensity * np.float64(intensity.max())
    mz, intensity = mz[above], intensity[above]
    ranked = np.lexsort((mz, intensity))[::-1]  # most intense first; ties: higher m/z first
    tie = len(ranked) > config.n_peaks and (
        intensity[ranked[config.n_peaks - 1]] == intensity[ranked[config.n_peaks]]
    )
    kept = np.sort(ranked[: config.n_peaks])
    if len(kept) < config.min_peaks:
        return None, tie
    return (mz[kept], intensity[kept] / np.linalg.norm(intensity[kept])), tie


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
    n_kept, n_ties = 0, 0
    for what, mz, intensity, precursor_mz, charge in inputs:
        for config, label in ((DEFAULT, what), (tight, f"{what} (tight config)")):
            ours = _ours(mz, intensity, precursor_mz, charge, config)
            ref, scaled = _spectrum_utils(mz, intensity, precursor_mz, charge, config)
            n_kept += ours is not None and config is DEFAULT
            if scaled is None:  # dropped before the cut: nothing is tied
                _assert_same(ours, ref, label)
                continue
            rule, tie = _zoo_rule(scaled, config)
            _assert_same(ours, rule, f"{label}: zoo's tie rule")  # every case, ties or not
            if tie:
                n_ties += 1
            else:  # no tie at the cut: exactly spectrum_utils (up to equal-m/z order)
                _assert_same(ours, ref, label)
    assert n_kept > len(inputs) // 3  # the comparison is not vacuous
    assert n_ties > 10  # and ties at the cut occur (random_cases' squared intensities)


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
    n_ties = 0
    for i, (mz, intensity, precursor_mz, charge) in enumerate(CASES):
        ref = None
        if fixture["kept"][i]:
            rows = slice(offsets[i], offsets[i + 1])
            ref = (np.sort(mz)[fixture["index"][rows]], fixture["intensity"][rows])
        ours = _ours(mz, intensity, precursor_mz, charge)
        n_ties += _assert_same(ours, ref, f"random case {i}", tie_at_cut_allowed=True)
    assert 0 < fixture["kept"].sum() < len(CASES)
    assert n_ties < 10  # only the few tied-intensity cases where numba kept other peaks


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


def test_tied_intensities_at_the_cut_keep_the_later_peaks_in_mz_order():
    """Where spectrum_utils' quicksort picks arbitrarily, zoo's rule: of equal intensities
    straddling the n_peaks cut, the peaks at higher m/z are kept, whatever the file order."""
    mz = 100.0 + np.arange(40.0)
    intensity = np.full(40, 4.0)
    intensity[[3, 30]] = 9.0  # two above the tie, then 8 of the 38 tied peaks are kept
    config = PreprocessConfig(n_peaks=10, min_peaks=1, min_intensity=0.0)
    kept = np.array([3, 30, 32, 33, 34, 35, 36, 37, 38, 39])  # the two, then 8 highest tied
    for order in (np.arange(40), np.arange(40)[::-1], np.random.default_rng(0).permutation(40)):
        out_mz, out_intensity = preprocess(mz[order], intensity[order], 1000.0, 2, config)
        np.testing.assert_array_equal(out_mz, mz[kept], err_msg=f"file order {order}")
        expected = np.sqrt(intensity[kept]) / np.linalg.norm(np.sqrt(intensity[kept]))
        np.testing.assert_allclose(out_intensity, expected, rtol=1e-6)


def test_equal_mz_peaks_keep_file_order_and_duplicates():
    """A stable m/z sort: peaks sharing an m/z come out in file order (numba's quicksort
    reorders them), and exact duplicates are kept (Casanovo does not deduplicate)."""
    rng = np.random.default_rng(0)
    mz = rng.permutation(np.repeat([300.0, 200.0, 100.0], 20))
    intensity = rng.integers(1, 100, 60).astype(np.float64) ** 2
    intensity[mz == 300.0] = 25.0  # 20 identical peaks
    config = PreprocessConfig(n_peaks=60, min_peaks=1, min_intensity=0.0)
    out_mz, out_intensity = preprocess(mz, intensity, 1000.0, 2, config)
    np.testing.assert_array_equal(out_mz, np.repeat([100.0, 200.0, 300.0], 20))
    in_file_order = np.concatenate([np.sqrt(intensity[mz == m]) for m in (100.0, 200.0, 300.0)])
    np.testing.assert_allclose(out_intensity, in_file_order / np.linalg.norm(in_file_order), 1e-6)


def _median_of_three_killer(n: int) -> np.ndarray:
    """[n] values whose order makes a median-of-three quicksort quadratic (McIlroy, "A killer
    adversary for quicksort", 1999), built for numba's (spectrum_utils') partition: each
    pass pivots on the second smallest value, so each removes 2 of n. The last <= 15 values
    are equal: duplicates, which is what sent zoo's old code to its pure-Python quicksort."""
    position = list(range(n))  # position -> which value slot sits there as the sort runs
    value = [0] * n
    low, high, next_value = 0, n - 1, 0
    while high - low >= 15:
        mid = (low + high) >> 1
        value[position[low]], value[position[mid]] = next_value, next_value + 1
        next_value += 2
        position[high], position[mid] = position[mid], position[high]  # pivot to the end
        position[low + 1], position[high] = position[high], position[low + 1]  # and back
        low += 2
    for i in range(low, high + 1):
        value[position[i]] = next_value
    return np.array(value, dtype=np.float64)


@contextlib.contextmanager
def _fails_after(seconds: float, what: str):
    """Fails the test once `seconds` have passed (SIGALRM; main thread only, else only timed),
    so a regression to a quadratic sort fails instead of hanging the suite."""

    def expire(signum, frame):
        raise AssertionError(f"{what} did not finish in {seconds} s")

    armed = threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGALRM")
    if armed:
        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        yield
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < seconds, f"{what} took over {seconds} s"


def _adversarial(pattern: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mz, intensity) of n peaks in an order crafted against quicksort. In (stable) m/z order
    the intensities are in killer order with the top 1000 equal: a tie at the n_peaks cut,
    the other place zoo's old code went to its pure-Python quicksort."""
    if pattern == "killer_mz":  # duplicate m/z (the last 15 or so), killer order
        mz = 100.0 + _median_of_three_killer(n) * 1e-3  # 100 .. 1100
    elif pattern == "sawtooth_mz":  # 1000 m/z values, each n / 1000 times, descending runs
        mz = 1100.0 - (np.arange(n) % 1000).astype(np.float64)
    else:  # "killer_intensity": distinct m/z, descending; the attack is on the cut alone
        mz = 1100.0 - np.arange(n) * 1e-3
    intensity = np.empty(n)
    intensity[np.argsort(mz, kind="stable")] = np.minimum(_median_of_three_killer(n), n - 1000) + 1
    return mz, intensity


@pytest.mark.parametrize("pattern", ["killer_mz", "sawtooth_mz", "killer_intensity"])
def test_million_adversarial_peaks_preprocess_in_bounded_time(pattern):
    """The denial of service: 1M peaks with duplicate m/z or tied intensities in a crafted
    order took zoo's old pure-Python quicksort hours (quadratic: 20k peaks 5 s); NumPy's
    stable sort takes about a second. 20 s is a safety net on a loaded 2-core machine."""
    n = 1_000_000
    mz, intensity = _adversarial(pattern, n)
    with _fails_after(20.0, f"preprocess of 1M {pattern} peaks"):
        out_mz, out_intensity = preprocess(mz, intensity, 3000.0, 2)
    # The 1000 most intense peaks are tied: the 150 kept are the last of them in m/z order.
    in_mz_order = intensity[np.argsort(mz, kind="stable")]
    expected = np.sort(mz)[np.flatnonzero(in_mz_order == in_mz_order.max())[-150:]]
    assert (in_mz_order == in_mz_order.max()).sum() == 1000
    np.testing.assert_array_equal(out_mz, expected)
    np.testing.assert_allclose(out_intensity, np.full(150, 1 / np.sqrt(150)), rtol=1e-6)
