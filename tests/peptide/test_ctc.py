"""CTC decoding against brute force: every path of a tiny [T, C] input enumerated.

(a) optax.ctc_loss, which the NAR trainer uses, equals -log of the summed probability of
all alignments; (b) prefix beam search with a large beam ranks peptides exactly;
(c) precise mass control returns the most probable fitting path, or None exactly when no
path fits; (d) greedy decoding collapses correctly. Plus PrimeNovo's combined policy.
"""

import itertools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoo.peptide.ctc import (
    collapse,
    ctc_align,
    ctc_beam_search,
    ctc_greedy,
    ctc_mass_table,
    token_scores,
)
from zoo.peptide.mass_control import ctc_decode_with_mass, ctc_mass_control, peptide_mass
from zoo.peptide.residues import CASANOVO, H2O

MASSES, NTERM = ctc_mass_table()  # 28 classes: blank + Casanovo's 27 tokens


def log_softmax(x, axis=-1):
    x = x - x.max(axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis, keepdims=True))


def all_paths(T, C):
    """[C**T, T] every path."""
    return np.array(list(itertools.product(range(C), repeat=T)), dtype=np.int64).reshape(-1, T)


def peptide_log_probs(lp):
    """Exhaustive: collapsed peptide -> log of the summed probability of its paths."""
    T, C = lp.shape
    paths = all_paths(T, C)
    scores = lp[np.arange(T), paths].sum(1)
    total: dict = {}
    for path, s in zip(paths, scores):
        total.setdefault(tuple(collapse(path)), []).append(s)
    return {k: float(np.logaddexp.reduce(v)) for k, v in total.items()}


# --- (a) optax.ctc_loss ------------------------------------------------------------------------
def test_optax_ctc_loss_equals_sum_over_all_alignments():
    # One call (one compilation): 32 sequences of 1..5 frames over 3 classes, labels of
    # 0..3 tokens. Frames and labels past each length are padding (paddings 1.0) filled with
    # large random values, which must not matter.
    rng = np.random.default_rng(0)
    B, T_max, C, N_max = 32, 5, 3, 3
    logits = rng.normal(size=(B, T_max, C)) * 2
    T = rng.integers(1, T_max + 1, size=B)
    N = rng.integers(0, N_max + 1, size=B)
    labels = rng.integers(1, C, size=(B, N_max))
    labels[:4, :2] = 1  # a repeated label needs a blank between its two copies
    N[:4], T[:4] = 2, [2, 3, 4, 5]
    logit_paddings = (np.arange(T_max)[None] >= T[:, None]).astype(np.float32)
    label_paddings = (np.arange(N_max)[None] >= N[:, None]).astype(np.float32)
    logits = np.where(logit_paddings[..., None] > 0, 100 * rng.normal(size=logits.shape), logits)
    got = jax.jit(optax.ctc_loss)(
        jnp.asarray(logits, jnp.float32),
        jnp.asarray(logit_paddings),
        jnp.asarray(labels),
        jnp.asarray(label_paddings),
    )  # fmt: skip  (blank_id defaults to 0, our blank)
    impossible = 0
    for b in range(B):
        lp = log_softmax(logits[b, : T[b]])  # optax takes logits and normalises them itself
        label = tuple(int(x) for x in labels[b, : N[b]])
        want = peptide_log_probs(lp).get(label, -np.inf)
        if np.isfinite(want):
            assert float(got[b]) == pytest.approx(-want, rel=1e-5, abs=1e-5), (b, label)
        else:  # too few frames to spell the label: optax gives ~ -log_epsilon, not inf
            impossible += 1
            assert float(got[b]) > 1e3
    assert 0 < impossible < B // 2


# --- (b) prefix beam search ----------------------------------------------------------------
@pytest.mark.parametrize("T,C", [(1, 3), (3, 3), (4, 4), (5, 3), (6, 3)])
def test_beam_search_with_large_beam_equals_exhaustive_ranking(T, C):
    rng = np.random.default_rng(T * 10 + C)
    for _ in range(3):
        lp = log_softmax(rng.normal(size=(T, C)) * 1.5)
        exhaustive = sorted(peptide_log_probs(lp).items(), key=lambda kv: -kv[1])
        got = ctc_beam_search(lp, beam=10_000, top_k=8)
        assert [d.tokens for d in got] == [k for k, _ in exhaustive[:8]]
        np.testing.assert_allclose([d.log_prob for d in got], [v for _, v in exhaustive[:8]])
        for d in got:  # the reported path is the most probable alignment of the peptide
            assert tuple(collapse(d.path)) == d.tokens
            paths = all_paths(T, C)
            spelled = [p for p in paths if tuple(collapse(p)) == d.tokens]
            best = max(lp[np.arange(T), p].sum() for p in spelled)
            assert lp[np.arange(T), list(d.path)].sum() == pytest.approx(best)


def test_beam_search_merges_paths_that_collapse_alike():
    # Two slots, classes {blank, A}. The best single path is "_ _" (0.4), but "A" is spelled
    # by AA, A_ and _A: 0.1 + 0.4 + 0.1 = 0.6.
    lp = np.log(np.array([[0.5, 0.5], [0.8, 0.2]]))
    greedy = ctc_greedy(lp[None])[0]
    best = ctc_beam_search(lp, beam=4)[0]
    assert greedy.tokens == () and best.tokens == (1,)
    assert best.log_prob == pytest.approx(math.log(0.5 * 0.2 + 0.5 * 0.8 + 0.5 * 0.2))


def test_beam_search_batch_and_class_cutoff():
    rng = np.random.default_rng(3)
    lp = log_softmax(rng.normal(size=(2, 5, 4)) * 3)
    batch = ctc_beam_search(lp, beam=3)
    assert len(batch) == 2 and all(len(b) == 3 for b in batch)
    assert batch[1][0] == ctc_beam_search(lp[1], beam=3)[0]
    scores = [d.log_prob for d in batch[0]]
    assert scores == sorted(scores, reverse=True)
    cut = ctc_beam_search(lp[0], beam=3, top_n_classes=1)  # only each slot's argmax
    assert cut[0].tokens == ctc_greedy(lp[:1])[0].tokens


# --- (c) precise mass control ----------------------------------------------------------------
def exhaustive_mass_control(lp, masses, precursor_mass, tolerance, nterm):
    """The most probable path whose peptide fits, by enumeration: (tokens, score) or None."""
    T, C = lp.shape
    mk = np.rint(np.asarray(masses) * 1e6).astype(np.int64)
    paths = all_paths(T, C)
    prev = np.concatenate([np.full((len(paths), 1), -1), paths[:, :-1]], 1)
    emitted = (paths != 0) & (paths != prev)
    S = (np.where(emitted, mk[paths], 0)).sum(1)
    earlier = np.cumsum(emitted, 1) - emitted  # residues emitted before each slot
    valid = ~(emitted & np.isin(paths, list(nterm)) & (earlier > 0)).any(1)
    fits = valid & (np.abs(S / 1e6 + H2O - precursor_mass) <= tolerance)
    if not fits.any():
        return None
    scores = np.where(fits, lp[np.arange(T), paths].sum(1), -np.inf)
    i = int(scores.argmax())
    return tuple(collapse(paths[i])), float(scores[i])


def random_case(rng, T_max=6, C_max=4, with_nterm=True):
    T = int(rng.integers(1, T_max + 1))
    C = int(rng.integers(2, C_max + 1))
    pool = np.arange(1, len(MASSES)) if with_nterm else np.arange(1, 21)
    classes = rng.choice(pool, size=C - 1, replace=False)
    masses = np.concatenate([[0.0], MASSES[classes]])
    nterm = tuple(i + 1 for i, c in enumerate(classes) if c in NTERM)
    logits = rng.normal(size=(T, C)) * rng.uniform(0.5, 3)
    if rng.random() < 0.5:  # confident and repetitive, as trained CTC outputs are
        logits = np.repeat(logits[::2] * 2, 2, 0)[:T] + rng.normal(size=(T, C)) * 0.3
    lp = log_softmax(logits)
    spelled = collapse(rng.integers(0, C, size=T))  # aim near a reachable mass (or not)
    target = sum(masses[c] for c in spelled) + H2O + rng.uniform(-0.2, 0.2)
    return lp, masses, nterm, target


@pytest.mark.parametrize("grid", [None, 0.01, 40.0])  # default ~1 Da; fine; coarse (fallback)
def test_mass_control_equals_exhaustive_search(grid):
    rng = np.random.default_rng({None: 0, 0.01: 1, 40.0: 2}[grid])
    n_feasible, trials = 0, {None: 120, 0.01: 60, 40.0: 300}[grid]
    for trial in range(trials):
        lp, masses, nterm, target = random_case(rng, T_max=7 if grid == 40.0 else 6)
        tolerance = 0.1 if trial % 4 else 0.03
        want = exhaustive_mass_control(lp, masses, target, tolerance, nterm)
        got = ctc_mass_control(lp, masses, target, tolerance, nterm=nterm, grid=grid)
        if want is None:
            assert got is None, (trial, got)
            continue
        n_feasible += 1
        assert got is not None, (trial, want)
        assert (got.tokens, got.optimal, got.fits) == (want[0], True, True), (trial, got, want)
        assert got.log_prob == pytest.approx(want[1], abs=1e-9)
        assert abs(got.mass - target) <= tolerance
        assert got.mass == pytest.approx(peptide_mass(got.tokens, masses), abs=1e-9)
    assert trials // 4 <= n_feasible <= trials - 10  # both outcomes were exercised


def test_exact_fallback_agrees_with_the_grid_on_medium_inputs():
    # A 40 Da grid fails its optimality proof on most of these, so the exact-mass search
    # decides; the default grid mostly proves its own answer. Both must agree.
    rng = np.random.default_rng(9)
    compared = 0
    for _ in range(20):
        lp, masses, nterm, target = random_case(rng, T_max=12, C_max=6)
        fine = ctc_mass_control(lp, masses, target, nterm=nterm)
        coarse = ctc_mass_control(lp, masses, target, nterm=nterm, grid=40.0)
        assert (fine is None) == (coarse is None)
        if fine is not None and fine.optimal and coarse.optimal:
            compared += 1
            assert fine.tokens == coarse.tokens
            assert fine.log_prob == pytest.approx(coarse.log_prob, abs=1e-9)
    assert compared >= 6


def test_mass_control_on_full_size_output_fits_and_beats_fitting_alternatives():
    rng = np.random.default_rng(5)
    T, C = 40, len(MASSES)
    for _ in range(4):
        peptide = [int(c) for c in rng.integers(1, 21, size=int(rng.integers(6, 12)))]
        path = np.zeros(T, int)
        path[np.sort(rng.choice(T, size=len(peptide), replace=False))] = peptide
        logits = rng.normal(size=(T, C))
        logits[np.arange(T), path] += 3.0
        lp = log_softmax(logits)
        target = peptide_mass(peptide, MASSES)
        got = ctc_mass_control(lp, MASSES, target, nterm=NTERM)
        assert got is not None and got.fits
        assert abs(peptide_mass(got.tokens, MASSES) - target) <= 0.1
        assert got.log_prob == pytest.approx(sum(lp[t, c] for t, c in enumerate(got.path)))
        assert tuple(collapse(got.path)) == got.tokens
        assert not any(c in NTERM for c in got.tokens[1:])
        # The planted path fits, so the answer scores at least as high.
        assert got.log_prob >= lp[np.arange(T), path].sum() - 1e-9
        greedy = ctc_greedy(lp[None])[0]
        if abs(peptide_mass(greedy.tokens, MASSES) - target) <= 0.1:
            assert got.log_prob == pytest.approx(greedy.log_prob)


def test_mass_control_batch_speed_for_the_demo():
    # 16 spectra of 40 slots x 28 classes with moderately confident posteriors: well under a
    # second each on a CPU (measured ~0.05 s).
    rng = np.random.default_rng(11)
    T, C = 40, len(MASSES)
    cases = []
    for _ in range(16):
        peptide = [int(c) for c in rng.integers(1, 21, size=int(rng.integers(7, 14)))]
        path = np.zeros(T, int)
        path[np.sort(rng.choice(T, size=len(peptide), replace=False))] = peptide
        logits = rng.normal(size=(T, C))
        logits[np.arange(T), path] += 4.0 * rng.uniform(0.3, 1.5, size=T)
        cases.append((log_softmax(logits), peptide_mass(peptide, MASSES) + rng.normal(0, 0.02)))
    start = time.perf_counter()
    results = [ctc_mass_control(lp, MASSES, m, nterm=NTERM) for lp, m in cases]
    per_spectrum = (time.perf_counter() - start) / len(cases)
    assert all(r is not None and r.fits for r in results)
    assert per_spectrum < 1.0, per_spectrum


def test_mass_control_rejects_bad_inputs():
    lp = log_softmax(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        ctc_mass_control(lp, [0.0, 57.0], 200.0)
    with pytest.raises(ValueError, match="not N-terminal"):
        ctc_mass_control(lp, [0.0, 57.0, -17.0], 200.0)
    assert ctc_mass_control(lp, [0.0, 57.0, -17.0], 200.0, nterm=(2,)) is None


# --- combined policy (PrimeNovo) ---------------------------------------------------------------
def test_decode_with_mass_keeps_fitting_beam_result_else_runs_mass_control():
    G, A = 1 + CASANOVO.tokens.index("G"), 1 + CASANOVO.tokens.index("A")
    logits = np.full((4, len(MASSES)), -30.0)
    logits[:, 0] = [0.0, 5.0, 0.0, 5.0]  # blank
    logits[0, G], logits[2, A], logits[2, G] = 5.0, 3.0, 1.0  # "G _ A _", G second at slot 2
    lp = log_softmax(logits)
    ga = peptide_mass([G, A], MASSES)
    kept = ctc_decode_with_mass(lp, MASSES, ga, beam=5, nterm=NTERM)
    assert kept.source == "beam" and kept.fits and kept.tokens == (G, A)
    # Precursor of "GG": the beam's GA misses by 14 Da; mass control finds GG.
    gg = peptide_mass([G, G], MASSES)
    fixed = ctc_decode_with_mass(lp, MASSES, gg, beam=5, nterm=NTERM)
    assert fixed.source == "mass_control" and fixed.fits and fixed.tokens == (G, G)
    # Nothing of 4 slots weighs 5000 Da: the beam result, marked as not fitting.
    far = ctc_decode_with_mass(lp[None], MASSES, [5000.0], beam=5, nterm=NTERM)[0]
    assert far.source == "beam" and far.fits is False and far.tokens == (G, A)


# --- (d) greedy -----------------------------------------------------------------------------
def test_collapse_merges_repeats_then_drops_blanks():
    assert collapse([1, 1, 0, 1, 2, 2, 0, 0, 3]) == [1, 1, 2, 3]
    assert collapse([0, 0, 0]) == []
    assert collapse([2, 2, 2]) == [2]
    assert collapse([1, 2, 1]) == [1, 2, 1]
    assert collapse([3, 1, 1, 3], blank=3) == [1]


def test_greedy_collapses_the_argmax_path_with_scores():
    rng = np.random.default_rng(2)
    lp = log_softmax(rng.normal(size=(3, 7, 5)) * 3)
    for b, d in enumerate(ctc_greedy(lp)):
        path = lp[b].argmax(-1)
        assert d.path == tuple(path) and list(d.tokens) == collapse(path)
        assert d.log_prob == pytest.approx(lp[b].max(-1).sum())
        assert len(d.token_scores) == len(d.tokens)
    probs = np.log(np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]))
    d = ctc_greedy(probs[None])[0]
    assert d.tokens == (1, 1)  # A A _ A -> A A
    np.testing.assert_allclose(d.token_scores, [0.9, 0.6])  # max over each token's slots
    assert token_scores(probs, [1, 1, 0, 1]) == pytest.approx([0.9, 0.6])


def test_align_finds_the_best_path_spelling_the_tokens():
    rng = np.random.default_rng(4)
    lp = log_softmax(rng.normal(size=(5, 3)))
    for tokens in [(1,), (1, 2), (1, 1), (2, 1, 2)]:
        path, score = ctc_align(lp, tokens)
        spelled = [p for p in all_paths(5, 3) if tuple(collapse(p)) == tokens]
        assert score == pytest.approx(max(lp[np.arange(5), p].sum() for p in spelled))
        assert tuple(collapse(path)) == tokens
    assert ctc_align(lp, (1, 1, 1))[0] == [1, 0, 1, 0, 1]  # repeats need blanks between
    assert ctc_align(lp, (1, 1, 1, 2)) == (None, -np.inf)  # 6 slots needed, 5 given
