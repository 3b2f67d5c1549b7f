"""zoo.decode.peptide: AR greedy/beam search with Casanovo's rules, on synthetic step functions.

Two synthetic models, no network weights:
- a trie model: per spectrum, a few token paths with chosen logits; any other prefix falls to
  a flat "elsewhere" node. It states oracle probabilities and precise two-way choices.
- a hash model: logits are an integer hash of (spectrum, token prefix), computed the same way
  here in JAX and by tests/fixtures/make_ar_search_fixtures.py in NumPy for Casanovo 5.2.1's
  own beam search, whose predictions the fixture holds.
Static settings are shared between tests so that few searches compile.
"""

from __future__ import annotations

import functools
import itertools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.data.residues import (
    C13_SHIFT,
    CASANOVO,
    CASANOVO_MASSES,
    Residues,
    ppm_error,
    precursor_mz,
)
from zoo.decode.peptide import ar_beam_search, ar_greedy, merge_nterm_scores, to_predictions

FIXTURE = pathlib.Path(__file__).parents[1] / "fixtures" / "ar_search" / "casanovo_beams.json"
MODES = [  # (casanovo_compatible, precursor_filter)
    pytest.param(False, True, id="default-filter"),
    pytest.param(False, False, id="default-nofilter"),
    pytest.param(True, False, id="casanovo5"),
    pytest.param(True, True, id="casanovo5+filter"),
]
MAX_LEN = 24  # generated tokens, `$` included, in the trie tests
BATCH = 6  # spectra per trie search (fewer are padded with empty tries)

RES = CASANOVO
STOP = len(RES.tokens) + 1
VOCAB = STOP + 1


def ids(tokens: list[str], residues: Residues = RES) -> list[int]:
    return [residues.tokens.index(t) + 1 for t in tokens]


# ---------------------------------------------------------------------------------------------
# Trie model
# ---------------------------------------------------------------------------------------------

NODES = 160


def build_trie(spectra: list[list[tuple[list[int], list[float]]]]):
    """Tables of a trie model: spectra[b] = [(generation-order ids incl. `$`, logit of each)].

    Returns (next_node [NODES, V] int32, logits [NODES, V] f32, root [BATCH] int32). Node 0 is
    the flat "elsewhere" node (all logits 0, pad -5) every unknown prefix goes to.
    """
    nxt = np.zeros((NODES, VOCAB), np.int32)
    logits = np.zeros((NODES, VOCAB), np.float32)
    logits[:, 0] = -5.0
    roots, count = [], 1
    for paths in spectra + [[]] * (BATCH - len(spectra)):
        root, count = count, count + 1
        roots.append(root)
        for path, path_logits in paths:
            node = root
            for tok, lg in zip(path, path_logits):
                logits[node, tok] = lg
                if nxt[node, tok] == 0:
                    nxt[node, tok], count = count, count + 1
                node = nxt[node, tok]
    assert count <= NODES, count
    return jnp.asarray(nxt), jnp.asarray(logits), jnp.asarray(roots, jnp.int32)


@functools.partial(
    jax.jit, static_argnames=("beam", "reverse", "compat", "filt", "min_length", "max_length")
)
def search_trie(tables, mz_B, z_B, *, beam, reverse, compat, filt, min_length=6, max_length=MAX_LEN):
    nxt, logits, root_B = tables

    def step(tok_N, node_N):
        node_N = nxt[node_N, tok_N]
        return logits[node_N], node_N

    return ar_beam_search(
        step,
        logits[root_B],
        root_B,
        precursor_mz_B=mz_B,
        charge_B=z_B,
        residues=RES,
        beam_size=beam,
        max_length=max_length,
        min_length=min_length,
        reverse=reverse,
        precursor_filter=filt,
        casanovo_compatible=compat,
    )


def run_trie(spectra, mz, z, **statics):
    mz = list(mz) + [500.0] * (BATCH - len(mz))
    z = list(z) + [2] * (BATCH - len(z))
    mz64 = np.asarray(mz, np.float64)
    result = search_trie(build_trie(spectra), mz64, np.asarray(z), **statics)
    preds = to_predictions(result, residues=RES, reverse=statics["reverse"], charge_B=z)
    return preds[: len(spectra)], result


def oracle_path(peptide: str, reverse: bool, logit: float = 10.0):
    tokens = ids(RES.parse(peptide))
    if reverse:
        tokens = tokens[::-1]
    return tokens + [STOP], [logit] * (len(tokens) + 1)


TRYPTIC = [  # (peptide, charge)
    ("LGEYGFQNALIVR", 2),
    ("YLYEIAR", 2),
    ("C+57.021AM+15.995ADDLK", 2),
    ("+42.011SDKPDM+15.995AEIEK", 3),
    ("HPEYAVSVLLR", 3),
    ("VPQVSTPTLVEVSR", 2),
]


def mz_of(peptide: str, charge: int) -> float:
    return precursor_mz(RES.peptide_mass(peptide), charge)


# (1) oracle probabilities -------------------------------------------------------------------


@pytest.mark.parametrize("compat,filt", MODES)
@pytest.mark.parametrize("beam", [1, 5])
def test_oracle_probabilities_return_the_peptides_matching_the_precursor(compat, filt, beam):
    spectra = [[oracle_path(p, reverse=True)] for p, _ in TRYPTIC]
    mz = [mz_of(p, z) for p, z in TRYPTIC]
    preds, _ = run_trie(
        spectra, mz, [z for _, z in TRYPTIC], beam=beam, reverse=True, compat=compat, filt=filt
    )
    p_target = np.exp(10.0) / (np.exp(10.0) + VOCAB - 2 + np.exp(-5.0))
    for (peptide, z), pred in zip(TRYPTIC, preds):
        assert pred.peptide == peptide
        assert pred.matches_precursor
        assert pred.calc_mz == pytest.approx(mz_of(peptide, z), abs=1e-9)
        np.testing.assert_allclose(pred.aa_scores, p_target, rtol=1e-5)
        n = len(RES.parse(peptide))
        expected = p_target if filt else p_target ** (n + 1)
        assert pred.score == pytest.approx(expected, rel=1e-4)


# (2) the precursor flag ---------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [True, False])
def test_matching_flag_agrees_with_float64_ppm_at_the_tolerance_edge(reverse):
    """Precursors 49.99 / 50.01 ppm away from the peptide at isotope 0 or 1: the flag is
    |ppm| <= 50 at some isotope, computed in float64, and a flagged peptide is within it."""
    peptide, charge = "LGEYGFQNALIVR", 2
    exact = mz_of(peptide, charge)
    cases = []
    for iso, ppm in itertools.product((0, 1), (-50.01, -49.99, 49.99, 50.01)):
        # calc_mz - (obs - iso*C13/z) = ppm*obs/1e6  =>  obs = (calc + iso*C13/z) / (1 + ppm/1e6)
        cases.append((exact + iso * C13_SHIFT / charge) / (1 + ppm / 1e6))
    flags = []
    for batch in (cases[:BATCH], cases[BATCH:]):
        preds, _ = run_trie(
            [[oracle_path(peptide, reverse)]] * len(batch),
            batch,
            [charge] * len(batch),
            beam=5,
            reverse=reverse,
            compat=False,
            filt=True,
        )
        for obs, pred in zip(batch, preds):
            ppms = [ppm_error(pred.calc_mz, obs, charge, iso) for iso in (0, 1)]
            want = any(abs(p) <= 50 for p in ppms)
            assert pred.matches_precursor == want, (obs, ppms)
            flags.append(want)
            if want:
                assert pred.peptide == peptide
    assert flags == [False, True, True, False] * 2


def test_every_peptide_flagged_as_matching_is_within_50_ppm():
    """Random hash model, precursors of random peptides: check every returned flag."""
    rng = np.random.default_rng(5)
    res = HASH_RES
    mz, z = [], []
    for _ in range(HASH_BATCH):
        length = int(rng.integers(6, 12))
        pep = [res.tokens[i] for i in rng.integers(0, 20, size=length)]
        z.append(int(rng.integers(2, 4)))
        mz.append(precursor_mz(res.peptide_mass(pep), z[-1]))
    result = search_hash(
        jnp.asarray(_hash_seeds(mz)), np.asarray(mz), np.asarray(z), 2.0, beam=5, reverse=True,
        compat=False, filt=True
    )
    checked = 0
    for pred, obs, charge in zip(to_predictions(result, residues=res, reverse=True, charge_B=z),
                                 mz, z):
        ppms = [ppm_error(pred.calc_mz, obs, charge, iso) for iso in (0, 1)]
        assert pred.matches_precursor == any(abs(p) <= 50 for p in ppms)
        checked += 1
    assert checked == HASH_BATCH


# (4) precursor miss penalty -----------------------------------------------------------------


@pytest.mark.parametrize("compat", [False, True])
def test_precursor_miss_costs_one_and_loses_to_a_fitting_peptide(compat):
    fits, misses = "LGEYGFQNALIVR", "LGEYGFQNALVVR"  # I -> V: 14 Da light
    z = 2
    mz = mz_of(fits, z)
    path_fit, logit_fit = oracle_path(fits, reverse=True)
    path_miss, logit_miss = oracle_path(misses, reverse=True)
    # Reversed: R V V ... vs R V I ...: the paths part at the third token, where the miss is
    # more probable; after it both are near certain.
    logit_fit[2], logit_miss[2] = 6.0, 7.0
    both = [(path_miss, logit_miss), (path_fit, logit_fit)]
    only_miss = [(path_miss, logit_miss)]
    kw = dict(beam=3, reverse=True, compat=compat)
    (with_filter, alone), _ = run_trie([both, only_miss], [mz, mz], [z, z], filt=True, **kw)
    (no_filter, _), _ = run_trie([both, only_miss], [mz, mz], [z, z], filt=False, **kw)

    assert with_filter.peptide == fits and with_filter.matches_precursor
    assert no_filter.peptide == misses and not no_filter.matches_precursor
    assert alone.peptide == misses and not alone.matches_precursor
    # Casanovo 4's score: mean probability with `$`, minus 1 on a miss.
    assert alone.score == pytest.approx(np.mean(alone.aa_scores.tolist() + [alone.aa_scores[0]])
                                        - 1.0, abs=1e-3)
    assert -1.0 < alone.score < 0.0 < with_filter.score


# (5) minimum length and N-terminal modifications --------------------------------------------


@pytest.mark.parametrize("compat,filt", MODES)
@pytest.mark.parametrize("reverse", [True, False])
def test_min_length_and_nterm_modification_rules(compat, filt, reverse):
    mod, r = "+42.011", RES.parse
    short = r("PEPK")  # 4 tokens: too short
    internal = r("PEPTIDEK")[:3] + [mod] + r("PEPTIDEK")[3:]  # modification inside
    doubled = [mod, mod] + r("PEPTIDEK")  # two modifications
    good = [mod] + r("PEPTIDEK")
    paths = []
    for tokens in (short, internal, doubled, good):
        seq = ids(tokens)[::-1] if reverse else ids(tokens)
        paths.append([(seq + [STOP], [10.0] * (len(seq) + 1))])
    mz = [precursor_mz(RES.peptide_mass(t), 2) for t in (short, internal, doubled, good)]
    preds, _ = run_trie(paths, mz, [2] * 4, beam=5, reverse=reverse, compat=compat, filt=filt)
    for pred in preds:
        if pred is None:  # Casanovo-compatible search may keep nothing
            assert compat
            continue
        assert len(pred.tokens) >= 6, pred.peptide
        mods = [i for i, t in enumerate(pred.tokens) if t in RES.nterm]
        assert mods in ([], [0]), pred.peptide
    assert preds[3] is not None and preds[3].peptide == "+42.011PEPTIDEK"
    assert preds[0] is None or preds[0].peptide != "PEPK"


# (6) reversed decoding ----------------------------------------------------------------------


@pytest.mark.parametrize("compat", [False, True])
def test_reversed_decoding_returns_n_to_c_order_with_aligned_scores(compat):
    peptide = "+42.011SDKPDM+15.995AEIEK"
    tokens = RES.parse(peptide)
    gen = ids(tokens)[::-1]  # C->N: K E I E A M+15.995 D P K D S +42.011
    lg = [4.0 + 0.5 * i for i in range(len(gen))] + [12.0]
    mz = mz_of(peptide, 3)
    (pred,), _ = run_trie([[(gen + [STOP], lg)]], [mz], [3], beam=5, reverse=True,
                          compat=compat, filt=False)
    assert pred.peptide == peptide and pred.tokens == tuple(tokens)
    # Generation step i has probability softmax(lg[i]); N->C reverses them.
    probs = [np.exp(x) / (np.exp(x) + VOCAB - 2 + np.exp(-5.0)) for x in lg[:-1]]
    np.testing.assert_allclose(pred.aa_scores, probs[::-1], rtol=1e-5)
    merged = merge_nterm_scores(pred, RES)
    assert len(merged) == len(tokens) - 1
    assert merged[0] == pytest.approx(pred.aa_scores[0] * pred.aa_scores[1])


# ---------------------------------------------------------------------------------------------
# Hash model: Casanovo parity and exhaustive search
# ---------------------------------------------------------------------------------------------

# The fixture's vocabulary: Casanovo's tokenizer also holds depthcharge's plain C; I -> L.
HASH_RES = Residues(masses={**CASANOVO_MASSES, "C": 103.009184505}, replace_isoleucine=True)
HASH_BATCH = 10


def _mix(h):
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _hash_seeds(mz) -> np.ndarray:
    """The fixture's spectrum seed: round(float32 m/z * 1000)."""
    return np.rint(np.asarray(mz, np.float32).astype(np.float64) * 1000).astype(np.uint32)


def hash_model(residues: Residues, seed_B, offset):
    """(first_logits, cache, step_fn) of the fixture's hash decoder (see its docstring)."""
    vocab = len(residues.tokens) + 2
    is_mod = jnp.asarray([False] + [t in residues.nterm for t in residues.tokens] + [False])

    def logits(h_N, length_N):
        v = jnp.arange(vocab, dtype=jnp.uint32)
        u = _mix(h_N[:, None] ^ (v * jnp.uint32(0x27D4EB2F) + jnp.uint32(0x165667B1)))
        x = ((u >> 8) & 0xFFFFF).astype(jnp.float32) / 2.0**17 - 4.0
        x = x.at[:, 1 : vocab - 1].add(offset)
        x = x.at[:, 0].add(-1.0)
        x = jnp.where(is_mod[None, :], x - 2.0, x)
        return x.at[:, vocab - 1].add((length_N.astype(jnp.float32) - 9.0) * 0.75)

    def step(tok_N, cache):
        h = _mix(cache["h"] * jnp.uint32(0x9E3779B1) + tok_N.astype(jnp.uint32) + jnp.uint32(1))
        n = cache["len"] + 1
        return logits(h, n), {"h": h, "len": n}

    h0 = _mix(jnp.asarray(seed_B, jnp.uint32))
    cache = {"h": h0, "len": jnp.zeros(h0.shape, jnp.int32)}
    return logits(h0, cache["len"]), cache, step


@functools.partial(
    jax.jit,
    static_argnames=("beam", "reverse", "compat", "filt", "max_length", "min_length", "tiny"),
)
def search_hash(seed_B, mz_B, z_B, offset, *, beam, reverse, compat, filt, max_length=30,
                min_length=6, tiny=False):
    residues = TINY_RES if tiny else HASH_RES
    first, cache, step = hash_model(residues, seed_B, offset)
    search = ar_greedy if beam == 1 else functools.partial(ar_beam_search, beam_size=beam)
    return search(
        step,
        first,
        cache,
        precursor_mz_B=mz_B,
        charge_B=z_B,
        residues=residues,
        max_length=max_length,
        min_length=min_length,
        reverse=reverse,
        precursor_filter=filt,
        casanovo_compatible=compat,
    )


def _fixture():
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("reverse", [True, False])
@pytest.mark.parametrize("beam", [1, 3, 5])
def test_casanovo_compatible_search_equals_casanovo_5_2_1(reverse, beam):
    """Casanovo's own beam_search_decode on the same logits (fixture): same peptide (or none),
    score and aa_scores, in both logit regimes (see make_ar_search_fixtures.py)."""
    fx = _fixture()
    assert list(HASH_RES.tokens) == fx["tokens"]
    mz, z = np.asarray(fx["precursor_mz"]), np.asarray(fx["charge"])
    seeds = jnp.asarray(_hash_seeds(mz))
    for case in fx["cases"]:
        if case["reverse"] != reverse or case["beam"] != beam:
            continue
        result = search_hash(
            seeds, mz, z, fx["regimes"][case["regime"]], beam=beam, reverse=reverse,
            compat=True, filt=False, max_length=fx["max_peptide_len"],
            min_length=fx["min_peptide_len"],
        )
        preds = to_predictions(result, residues=HASH_RES, reverse=reverse, charge_B=z)
        for i, (got, want) in enumerate(zip(preds, case["predictions"])):
            where = f"{case['regime']} spectrum {i}"
            if want is None:
                assert got is None, where
                continue
            assert got is not None and got.peptide == want["peptide"], where
            assert got.score == pytest.approx(want["score"], rel=2e-4), where
            np.testing.assert_allclose(got.aa_scores, want["aa_scores"], atol=2e-6, err_msg=where)


# (3) exhaustive search on a tiny vocabulary --------------------------------------------------

TINY_RES = Residues(
    masses={"G": 57.021464, "A": 71.037114, "S": 87.032028, "-17.027": -17.026549}
)


def _exhaustive(seed: int, mz: float, z: int, offset: float, *, reverse, filt, max_length,
                min_length):
    """Best (score, N->C tokens) over every peptide, by the default rules (module doc)."""
    res = TINY_RES
    stop, mod = len(res.tokens) + 1, res.tokens.index("-17.027") + 1
    mass = {i + 1: res.mass(t) for i, t in enumerate(res.tokens)}
    first, cache, step = hash_model(res, np.asarray([seed], np.uint32), offset)
    step = jax.jit(step)

    def ppm(m):
        calc = precursor_mz(m, z)
        return [ppm_error(calc, mz, z, iso) for iso in (0, 1)]

    best = (-np.inf, None)

    def visit(prefix, probs, logits, c):
        nonlocal best
        p_V = np.asarray(jax.nn.softmax(logits[0]))
        pos = len(prefix)
        for tok in range(1, stop + 1):
            if reverse and prefix and prefix[-1] == mod and tok != stop:
                continue  # reversed, the modification is the last token before `$`
            if tok == stop and (pos == 0 or pos < min_length):
                continue
            if tok == mod:
                if pos == 0:
                    ok = not reverse or min_length <= 1
                else:
                    ok = reverse and mod not in prefix and pos + 1 >= min_length
                if not ok:
                    continue
            seq, pr = prefix + [tok], probs + [float(p_V[tok])]
            m = sum(mass[t] for t in seq if t != stop) + 18.0105647
            if tok == stop:
                fits = any(abs(x) <= 50 for x in ppm(m))
                if filt:
                    score = np.mean(pr) - (0.0 if fits else 1.0)
                else:
                    score = float(np.prod(np.clip(np.float32(pr), np.finfo(np.float64).eps, 1)))
                if score > best[0]:
                    best = (score, seq[:-1])
                continue
            if filt:
                corr = min(0.0, res.mass("-17.027")) if reverse and mod not in seq else 0.0
                if all(x > 50 for x in ppm(m + corr)):
                    if len(seq) >= min_length:
                        score = np.mean(pr + [0.0]) - 1.0
                        if score > best[0]:
                            best = (score, seq)
                    continue
            if pos + 1 < max_length:
                lg, c2 = step(jnp.asarray([tok], jnp.int32), c)
                visit(seq, pr, lg, c2)

    visit([], [], first, cache)
    score, seq = best
    names = [res.tokens[t - 1] for t in (seq or [])]
    return score, tuple(names[::-1] if reverse else names)


@pytest.mark.parametrize("filt", [True, False])
def test_wide_beam_search_equals_exhaustive_search(filt):
    max_length, min_length, reverse = 5, 2, True  # up to 4 tokens
    res = TINY_RES
    rng = np.random.default_rng(3)
    mz, z = [], []
    for _ in range(3):
        pep = [res.tokens[i] for i in rng.integers(0, 3, size=int(rng.integers(2, 5)))]
        z.append(2)
        mz.append(precursor_mz(res.peptide_mass(pep), 2))
    seeds = _hash_seeds(mz)
    result = search_hash(
        jnp.asarray(seeds), np.asarray(mz), np.asarray(z), 0.5, beam=800, reverse=reverse,
        compat=False, filt=filt, max_length=max_length, min_length=min_length, tiny=True,
    )
    preds = to_predictions(result, residues=res, reverse=reverse, charge_B=z)
    for i, pred in enumerate(preds):
        score, tokens = _exhaustive(int(seeds[i]), mz[i], z[i], 0.5, reverse=reverse, filt=filt,
                                    max_length=max_length, min_length=min_length)
        assert pred is not None and pred.tokens == tokens, (i, pred, tokens, score)
        assert pred.score == pytest.approx(score, rel=1e-5)
