"""A per-PSM confidence you can threshold: the model's score calibrated against correctness.

    cal = fit(scores, correct)           # on annotated spectra (`zoo calibrate`)
    cal.confidence(scores)               # P(peptide correct | score), monotone in the score
    cal.thresholds["0.01"]               # lowest score whose PSMs above have <= 1% false

Isotonic regression (pool adjacent violators, scipy) of correctness (Casanovo's
peptide-level match) on the search score: the confidence never decreases with the score, and
on the calibration set it is the fraction of correct PSMs among those of similar score. The
false peptide rate (FPR) threshold for a rate q is the lowest score t such that, among the
calibration PSMs scoring >= t, at most q are wrong; None when no such t keeps any PSM.

Saved as `calibration.json` next to the model (`zoo calibrate`), it is what `zoo denovo`
writes per PSM (`opt_global_zoo_confidence`) and what `--evaluate` marks on its
precision-coverage plot.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

FILENAME = "calibration.json"
RATES = (0.01, 0.05)


@dataclasses.dataclass
class Calibration:
    """Isotonic map score -> confidence: breakpoints `scores` (ascending) and their
    `confidences` (non-decreasing); between them linear, outside them flat."""

    scores: list[float]
    confidences: list[float]
    thresholds: dict[str, float | None]  # FPR rate (as text, "0.01") -> score threshold
    n: int  # PSMs it was fit on
    n_correct: int

    def confidence(self, scores) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        out = np.interp(np.where(np.isfinite(s), s, -np.inf), self.scores, self.confidences)
        return np.where(np.isfinite(s), out, 0.0)

    def to_dict(self) -> dict:
        return {"method": "isotonic", **dataclasses.asdict(self)}

    def save(self, path: str) -> str:
        if os.path.isdir(path):
            path = os.path.join(path, FILENAME)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        return path


def fit(scores, correct) -> Calibration:
    """Isotonic calibration of `correct` ([n] bool) on `scores` ([n] float, -inf allowed
    for spectra without a prediction: they get confidence 0)."""
    from scipy.optimize import isotonic_regression

    s = np.asarray(scores, np.float64)
    y = np.asarray(correct, np.float64)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and correct {y.shape} must be equal 1-d arrays")
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if len(s) < 2:
        raise ValueError(f"calibration needs at least 2 scored PSMs, got {len(s)}")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    # Equal scores are one point (their mean), so the fit cannot depend on their order.
    uniq, start, counts = np.unique(s, return_index=True, return_counts=True)
    means = np.add.reduceat(y, start) / counts
    fitted = isotonic_regression(means, weights=counts.astype(np.float64), increasing=True).x
    return Calibration(
        scores=[float(v) for v in uniq],
        confidences=[float(min(max(v, 0.0), 1.0)) for v in fitted],
        thresholds={f"{q:g}": fpr_threshold(s, y.astype(bool), q) for q in RATES},
        n=int(len(s)),
        n_correct=int(y.sum()),
    )


def fpr_threshold(scores, correct, rate: float) -> float | None:
    """Lowest score t with at most `rate` wrong among the PSMs scoring >= t (None if none)."""
    s = np.asarray(scores, np.float64)
    c = np.asarray(correct, bool)
    keep = np.isfinite(s)
    s, c = s[keep], c[keep]
    if not len(s):
        return None
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    wrong = np.cumsum(~c)
    k = np.arange(1, len(s) + 1)
    # A cut can only fall between distinct scores: the last index of each score run.
    last = np.r_[s[1:] != s[:-1], True]
    ok = (wrong <= rate * k) & last
    if not ok.any():
        return None
    return float(s[np.flatnonzero(ok)[-1]])


def precision_coverage(scores, correct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coverage [m], precision [m], score [m]) of keeping the PSMs scoring >= each distinct
    score, highest first; coverage is over all spectra (unscored ones never kept)."""
    s = np.asarray(scores, np.float64)
    c = np.asarray(correct, bool)
    n = len(s)
    keep = np.isfinite(s)
    s, c = s[keep], c[keep]
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    k = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)
    return (k / max(n, 1))[last], (np.cumsum(c) / k)[last], s[last]


def load(path: str) -> Calibration | None:
    """The calibration stored at `path` (a file, or a model dir holding calibration.json);
    None when there is none. A damaged file is a clear error."""
    if os.path.isdir(path):
        path = os.path.join(path, FILENAME)
    if not os.path.isfile(path):
        return None
    if os.path.getsize(path) > 64 << 20:
        raise ValueError(f"{path}: larger than 64 MiB; not a calibration file")
    try:
        with open(path) as f:
            d = json.load(f)
        cal = Calibration(
            scores=[float(v) for v in d["scores"]],
            confidences=[float(v) for v in d["confidences"]],
            thresholds={
                str(k): (None if v is None else float(v)) for k, v in d["thresholds"].items()
            },
            n=int(d["n"]),
            n_correct=int(d["n_correct"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a zoo calibration ({type(e).__name__}: {e}); rerun "
                         "`zoo calibrate`") from None  # fmt: skip
    s, c = np.asarray(cal.scores), np.asarray(cal.confidences)
    bad = (
        len(s) != len(c) or len(s) < 1 or not np.isfinite(s).all()
        or (np.diff(s) <= 0).any() or (np.diff(c) < 0).any() or not ((c >= 0) & (c <= 1)).all()
    )  # fmt: skip
    if bad:
        raise ValueError(f"{path}: breakpoints not ascending or confidences not monotone in "
                         "[0, 1]; rerun `zoo calibrate`")  # fmt: skip
    return cal


def plot_precision_coverage(path: str, scores, correct, calibration=None, title="") -> str:
    """PNG of precision vs coverage, with the 1% / 5% FPR cuts of this data (and of the
    stored calibration, when given) marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cov, prec, sc = precision_coverage(scores, correct)
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ax.plot(cov, prec, color="C0", label="keep PSMs scoring >= t")
    for q, color in zip(RATES, ("C3", "C1")):
        for source, t, style in (
            ("this data", fpr_threshold(scores, correct, q), "--"),
            ("calibration", (calibration.thresholds.get(f"{q:g}") if calibration else None), ":"),
        ):
            if t is None or not math.isfinite(t):
                continue
            i = int(np.flatnonzero(sc >= t)[-1]) if (sc >= t).any() else None
            if i is not None:
                ax.axvline(cov[i], color=color, ls=style,
                           label=f"{q:.0%} false, {source}: t={t:.3g}")  # fmt: skip
    ax.set_xlabel("coverage (fraction of spectra kept)")
    ax.set_ylabel("precision (peptide correct)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "precision-coverage")
    ax.legend(fontsize=7, loc="lower left")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
