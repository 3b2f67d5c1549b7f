"""The calibrated PSM confidence: monotone, equal to the observed correct fraction, and its
1% / 5% false-peptide cuts hold on held-out PSMs drawn like the calibration ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from zoo.peptide import calibration


def _psms(rng, n):
    """Scores in [0, 1] whose true P(correct | score) is score**4: mostly wrong, and
    right most of the time only near the top."""
    scores = rng.uniform(0, 1, n)
    return scores, rng.uniform(0, 1, n) < scores**4


def test_confidence_is_monotone_and_matches_the_truth():
    rng = np.random.default_rng(0)
    cal = calibration.fit(*_psms(rng, 20_000))
    grid = np.linspace(0, 1, 101)
    conf = cal.confidence(grid)
    assert (np.diff(conf) >= 0).all() and conf.min() >= 0 and conf.max() <= 1
    np.testing.assert_allclose(conf[10:-5], grid[10:-5] ** 4, atol=0.06)
    assert cal.confidence([-np.inf])[0] == 0.0  # no prediction: no confidence


@pytest.mark.parametrize("rate", calibration.RATES)
def test_fpr_cut_holds_on_held_out_psms(rate):
    rng = np.random.default_rng(1)
    cal = calibration.fit(*_psms(rng, 50_000))
    t = cal.thresholds[f"{rate:g}"]
    assert t is not None and 0.5 < t < 1
    wrong, kept = 0, 0
    for _ in range(5):  # held-out sets from the same distribution
        s, c = _psms(rng, 50_000)
        above = s >= t
        wrong += int((above & ~c).sum())
        kept += int(above.sum())
    assert kept > 500  # the cut keeps PSMs: it is not vacuous
    assert wrong / kept <= rate * 1.5, (wrong, kept)  # binomial slack on a 1% rate


def test_fpr_threshold_small_cases():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    c = np.array([True, True, True, False, True])
    assert calibration.fpr_threshold(s, c, 0.0) == 0.7
    assert calibration.fpr_threshold(s, c, 0.2) == 0.5  # 1 wrong of 5
    assert calibration.fpr_threshold(s, ~c, 0.01) is None
    # Ties are one cut: a wrong PSM tied with a right one cannot be split off.
    assert calibration.fpr_threshold([0.9, 0.9], [True, False], 0.1) is None


def test_saved_calibration_round_trips_and_damage_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    cal = calibration.fit(*_psms(rng, 1000))
    path = cal.save(str(tmp_path))
    again = calibration.load(str(tmp_path))
    assert again.thresholds == cal.thresholds
    np.testing.assert_array_equal(again.confidence([0.3, 0.9]), cal.confidence([0.3, 0.9]))
    d = json.loads(open(path).read())
    d["confidences"] = d["confidences"][::-1]  # no longer monotone
    open(path, "w").write(json.dumps(d))
    with pytest.raises(ValueError, match="rerun `zoo calibrate`"):
        calibration.load(path)
    open(path, "w").write("{not json")
    with pytest.raises(ValueError, match="not a zoo calibration"):
        calibration.load(path)
    assert calibration.load(str(tmp_path / "nothing_here")) is None
