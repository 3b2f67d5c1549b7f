"""The batched NAR decoders equal their one-spectrum-at-a-time references.

(a) `ctc_beam_search` (all spectra at once) == `ctc_beam_search_reference`, ties included;
(b) `ctc_mass_control_batch` (jitted grid DP on a batch, and the NumPy loop) ==
`ctc_mass_control` per spectrum == exhaustive search; (c) `ctc_decode_with_mass_batch` ==
`ctc_decode_with_mass` per spectrum.
"""

import numpy as np
import pytest

from tests.peptide.test_ctc import MASSES, NTERM, exhaustive_mass_control, log_softmax, random_case
from zoo.peptide.ctc import collapse, ctc_beam_search, ctc_beam_search_reference
from zoo.peptide.mass_control import ctc_decode_with_mass, ctc_mass_control
from zoo.peptide.mass_control_batch import ctc_decode_with_mass_batch, ctc_mass_control_batch
from zoo.peptide.residues import H2O


# --- (a) prefix beam search ------------------------------------------------------------------
@pytest.mark.parametrize("beam", [1, 5])
@pytest.mark.parametrize("B", [1, 3, 8])
def test_batched_beam_search_equals_reference(B, beam):
    rng = np.random.default_rng(B * 10 + beam)
    for trial in range(12):
        T, C = int(rng.integers(1, 9)), int(rng.integers(2, 7))
        logits = rng.normal(size=(B, T, C)) * rng.uniform(0.3, 4)
        if trial % 3 == 0:  # exact ties between candidates
            logits = np.round(logits)
        if trial % 4 == 0:  # mostly blanks: long runs, many merges
            logits[..., 0] += 3
        if trial % 4 == 1:  # repeats of one residue, which need a blank in between
            logits[..., 1] += 3
        lp = log_softmax(logits)
        if trial % 5 == 0:  # a class that is never possible
            lp[:, :, C - 1] = -np.inf
        top_k = int(rng.integers(1, beam + 2))
        cutoff = [None, None, 2][trial % 3]
        got = ctc_beam_search(lp, beam, top_k=top_k, top_n_classes=cutoff)
        want = ctc_beam_search_reference(lp, beam, top_k=top_k, top_n_classes=cutoff)
        assert got == want, (trial, got, want)


def test_batched_beam_search_equals_reference_at_full_size():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(6, 40, len(MASSES)))
    logits[:3, :, 0] += 1.5  # flat, blank-heavy; the rest peaky
    logits[3:] *= 4
    lp = log_softmax(logits)
    assert ctc_beam_search(lp, 5) == ctc_beam_search_reference(lp, 5)
    assert ctc_beam_search(lp[0], 5) == ctc_beam_search_reference(lp[0], 5)


# --- (b) mass control ------------------------------------------------------------------------
def _group(cases, size):
    """Cases with the same (T, masses, nterm), `size` at a time: one batch each."""
    groups: dict = {}
    for lp, masses, nterm, target in cases:
        key = (lp.shape, masses.tobytes(), nterm)
        groups.setdefault(key, []).append((lp, masses, nterm, target))
    for members in groups.values():
        for k in range(0, len(members), size):
            yield members[k : k + size]


def _random_cases(rng, backend):
    if backend == "numpy":  # any shape: nothing to compile
        return [random_case(rng, T_max=5, C_max=3, with_nterm=False) for _ in range(80)]
    # One shape (one compilation): 5 slots, blank + G + A, targets near a reachable mass.
    masses = MASSES[[0, 1, 2]]
    cases = []
    for _ in range(48):
        logits = rng.normal(size=(5, 3)) * rng.uniform(0.5, 3)
        spelled = collapse(rng.integers(0, 3, size=5))
        target = masses[spelled].sum() + H2O + rng.uniform(-0.2, 0.2)
        cases.append((log_softmax(logits), masses, (), float(target)))
    return cases


@pytest.mark.parametrize("backend", ["jax", "numpy"])
def test_batched_mass_control_equals_single_and_exhaustive(backend):
    rng = np.random.default_rng(21)
    cases = _random_cases(rng, backend)
    stats: dict = {}
    n_feasible = n_batched = 0
    for group in _group(cases, 8):
        lp = np.stack([c[0] for c in group])
        masses, nterm = group[0][1], group[0][2]
        targets = [c[3] for c in group]
        got = ctc_mass_control_batch(
            lp, masses, targets, 0.1, nterm=nterm, backend=backend, chunk=8, stats=stats
        )
        n_batched += len(group) > 1
        for b, target in enumerate(targets):
            single = ctc_mass_control(lp[b], masses, target, 0.1, nterm=nterm)
            assert got[b] == single, (b, got[b], single)
            want = exhaustive_mass_control(lp[b], masses, target, 0.1, nterm)
            assert (got[b] is None) == (want is None)
            if want is not None:
                n_feasible += 1
                assert got[b].tokens == want[0] and got[b].optimal
                assert got[b].log_prob == pytest.approx(want[1], abs=1e-9)
    assert n_batched >= 3 and 5 <= n_feasible <= len(cases) - 5, n_feasible
    assert stats["grid"] == stats["certified"] + stats["fallback"]


def test_batched_mass_control_equals_single_at_full_size():
    # Planted peptides of 40 slots x 28 classes, flat and confident: the grid proves most,
    # the exact search settles the rest; spectra of different masses share one batch.
    rng = np.random.default_rng(5)
    T, C = 40, len(MASSES)
    lp, targets = [], []
    for k in range(6):
        peptide = [int(c) for c in rng.integers(1, 21, size=int(rng.integers(5, 9)))]
        path = np.zeros(T, int)
        path[np.sort(rng.choice(T, size=len(peptide), replace=False))] = peptide
        logits = rng.normal(size=(T, C))
        logits[np.arange(T), path] += 3.0 if k % 2 else 1.0
        lp.append(log_softmax(logits))
        targets.append(float(MASSES[peptide].sum()) + H2O + rng.normal(0, 0.03))
    lp = np.stack(lp)
    stats: dict = {}
    got = ctc_mass_control_batch(lp, MASSES, targets, nterm=NTERM, backend="jax", stats=stats)
    for b in range(len(lp)):
        assert got[b] == ctc_mass_control(lp[b], MASSES, targets[b], nterm=NTERM)
    assert stats["grid"] == len(lp)


def test_batched_decode_with_mass_equals_single():
    rng = np.random.default_rng(8)
    T, C = 12, len(MASSES)
    logits = rng.normal(size=(5, T, C)) * 2
    logits[..., 0] += 1
    lp = log_softmax(logits)
    beams = ctc_beam_search(lp, 5)
    targets = [H2O + float(MASSES[list(b[0].tokens)].sum()) for b in beams]
    targets[1] += 0.5  # the beam's peptide misses: mass control replaces it
    targets[2] = 4000.0  # nothing fits: the beam's peptide, fits=False
    targets[3] += 57.02  # one G more than the beam's peptide
    stats: dict = {}
    got = ctc_decode_with_mass_batch(lp, MASSES, targets, nterm=NTERM, stats=stats)
    for b in range(len(lp)):
        assert got[b] == ctc_decode_with_mass(lp[b], MASSES, targets[b], nterm=NTERM)
    assert got == ctc_decode_with_mass(lp, MASSES, targets, nterm=NTERM)
    assert got[2].fits is False and got[0].source == "beam"
    assert stats["spectra"] == 5 and stats["beam_fits"] == 2
