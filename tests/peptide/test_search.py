"""zoo.peptide.search: AR greedy/beam search with Casanovo's rules, on synthetic step functions.

Two synthetic decoders, no weights:
- a trie: per spectrum, a few token paths with chosen logits; any other prefix falls to a
  flat "elsewhere" node. It states oracle probabilities and exact two-way choices.
- a hash: logits are an integer hash of (spectrum, token prefix), computed the same way here
  in JAX and by tests/fixtures/make_ar_search_fixtures.py in NumPy for Casanovo 5.2.1's own
  beam search, whose predictions tests/fixtures/ar_search/casanovo_beams.json holds.
One jitted search serves both decoders and every rule set (the rule flags are traced), so the
file compiles five searches: beams 1, 3, 5, the exhaustive one, and one on a tiny
PeptideModel through its KV cache (zoo.peptide.model).
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

from zoo.peptide.residues import C13_SHIFT, CASANOVO_MASSES, Residues, ppm_error, precursor_mz
from zoo.peptide.search import (
    ar_beam_search,
    ar_greedy,
    merge_nterm_scores,
    mz_parts,
    to_predictions,
)

FIXTURE = pathlib.Path(__file__).parents[1] / "fixtures" / "ar_search" / "casanovo_beams.json"
MODES = [  # (casanovo_compatible, precursor_filter)
    pytest.param(False, True, id="default-filter"),
    pytest.param(False, False, id="default-nofilter"),
    pytest.param(True, False, id="casanovo5"),
    pytest.param(True, True, id="casanovo5+filter"),
]
# Casanovo's tokenizer vocabulary: its residues plus depthcharge's plain C, I read as L.
RES = Residues(masses={**CASANOVO_MASSES, "C": 103.009184505}, replace_isoleucine=True)
STOP = len(RES.tokens) + 1
VOCAB = STOP + 1
IS_MOD = np.array([False] + [t in RES.nterm for t in RES.tokens] + [False])
MAX_LEN = 30  # generated tokens, `$` included (the fixture's max_peptide_len)
BATCH = 10  # spectra per search (fewer are padded)
NODES = 160
# Tests compile with XLA's backend optimisation off: the searches run in milliseconds, and
# compiling them is most of this file's time.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def ids(tokens: list[str], residues: Residues = RES) -> list[int]:
    return [residues.tokens.index(t) + 1 for t in tokens]


# ---------------------------------------------------------------------------------------------
# The synthetic decoders
# ---------------------------------------------------------------------------------------------


def _mix(h):
    """murmur3's 32-bit finaliser (uint32 wraps like the fixture script's masked uint64)."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _push(h, tok):
    return _mix(h * jnp.uint32(0x9E3779B1) + tok.astype(jnp.uint32) + jnp.uint32(1))


def hash_logits(h_N, length_N, is_mod_V, scale, offset):
    """The fixture script's `logits`: [N, V] f32, exact multiples of 2^-17 x scale + offsets."""
    vocab = is_mod_V.shape[0]
    v = jnp.arange(vocab, dtype=jnp.uint32)
    u = _mix(h_N[:, None] ^ (v * jnp.uint32(0x27D4EB2F) + jnp.uint32(0x165667B1)))
    x = (((u >> 8) & 0xFFFFF).astype(jnp.float32) / 2.0**17 - 4.0) * scale
    x = x.at[:, 1 : vocab - 1].add(offset)
    x = x.at[:, 0].add(-1.0)
    x = jnp.where(is_mod_V[None, :], x - 2.0, x)
    return x.at[:, vocab - 1].add((length_N.astype(jnp.float32) - 9.0) * 0.75)


def hash_seeds(mz) -> np.ndarray:
    """The fixture's spectrum seed: round(float32 m/z * 1000)."""
    return np.rint(np.asarray(mz, np.float32).astype(np.float64) * 1000).astype(np.uint32)


def build_trie(spectra: list[list[tuple[list[int], list[float]]]]):
    """spectra[b] = [(generation-order ids incl. `$`, logit of each)] -> (next [NODES, V] int32,
    logits [NODES, V] f32, root [BATCH] int32). Node 0 is "elsewhere": logits 0, pad -5 and `$`
    1 (else its equal logits tie and the lowest ids win every beam slot, so nothing ends)."""
    nxt = np.zeros((NODES, VOCAB), np.int32)
    logits = np.zeros((NODES, VOCAB), np.float32)
    logits[:, 0] = -5.0
    logits[0, STOP] = 1.0
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


EMPTY_TRIE = build_trie([])


@functools.partial(jax.jit, static_argnames=("beam",), compiler_options=FAST_COMPILE)
def search(trie, seed_B, parts, z_B, rules, *, beam):
    """One search over the trie (rules["hash"] False) or the hash decoder (True)."""
    nxt, trie_logits, root_B = trie
    is_mod_V = jnp.asarray(IS_MOD)

    def logits(c):
        from_hash = hash_logits(c["h"], c["len"], is_mod_V, rules["scale"], rules["offset"])
        return jnp.where(rules["hash"], from_hash, trie_logits[c["node"]])

    def step(tok_N, c):
        c = {"node": nxt[c["node"], tok_N], "h": _push(c["h"], tok_N), "len": c["len"] + 1}
        return logits(c), c

    h0 = _mix(seed_B.astype(jnp.uint32))
    cache = {"node": root_B, "h": h0, "len": jnp.zeros(h0.shape, jnp.int32)}
    run = ar_greedy if beam == 1 else functools.partial(ar_beam_search, beam_size=beam)
    return run(
        step,
        logits(cache),
        cache,
        precursor_mz_B=parts,
        charge_B=z_B,
        residues=RES,
        max_length=MAX_LEN,
        min_length=rules["min_length"],
        reverse=rules["reverse"],
        precursor_filter=rules["filter"],
        casanovo_compatible=rules["compat"],
    )


def run_search(
    *, mz, z, beam, reverse, compat, filt, trie=None, scale=1.0, offset=0.0, min_length=6
):
    """Predictions for len(mz) spectra; the hash decoder when `trie` is None."""
    n = len(mz)
    mz64 = np.asarray(list(mz) + [500.0] * (BATCH - n), np.float64)
    z_all = np.asarray(list(z) + [2] * (BATCH - n))
    rules = {
        "hash": jnp.bool_(trie is None),
        "scale": jnp.float32(scale),
        "offset": jnp.float32(offset),
        "min_length": jnp.int32(min_length),
        "reverse": jnp.bool_(reverse),
        "filter": jnp.bool_(filt),
        "compat": jnp.bool_(compat),
    }
    result = search(
        EMPTY_TRIE if trie is None else build_trie(trie),
        jnp.asarray(hash_seeds(mz64)),
        mz_parts(mz64),
        jnp.asarray(z_all),
        rules,
        beam=beam,
    )
    return to_predictions(result, residues=RES, reverse=reverse, charge_B=z_all)[:n]


def oracle_path(peptide: str, reverse: bool, logit: float = 10.0):
    tokens = ids(RES.parse(peptide))
    if reverse:
        tokens = tokens[::-1]
    return tokens + [STOP], [logit] * (len(tokens) + 1)


def mz_of(peptide: str, charge: int) -> float:
    return precursor_mz(RES.peptide_mass(peptide), charge)


def softmax_target(logit: float) -> float:
    """Probability of a trie token with `logit` when the others are 0 and pad -5."""
    return float(np.exp(logit) / (np.exp(logit) + VOCAB - 2 + np.exp(-5.0)))


TRYPTIC = [  # (peptide, charge); I is read as L
    ("LGEYGFQNALLVR", 2),
    ("YLYELAR", 2),
    ("C+57.021AM+15.995ADDLK", 2),
    ("+42.011SDKPDM+15.995AELEK", 3),
    ("HPEYAVSVLLR", 3),
    ("VPQVSTPTLVEVSR", 2),
]


# (1) oracle probabilities -------------------------------------------------------------------


@pytest.mark.parametrize("compat,filt", MODES)
@pytest.mark.parametrize("beam", [1, 5])
def test_oracle_probabilities_return_the_peptides_matching_the_precursor(compat, filt, beam):
    preds = run_search(
        trie=[[oracle_path(p, reverse=True)] for p, _ in TRYPTIC],
        mz=[mz_of(p, z) for p, z in TRYPTIC],
        z=[z for _, z in TRYPTIC],
        beam=beam,
        reverse=True,
        compat=compat,
        filt=filt,
    )
    p_target = softmax_target(10.0)
    for (peptide, z), pred in zip(TRYPTIC, preds):
        assert pred is not None and pred.peptide == peptide
        assert pred.matches_precursor
        assert pred.calc_mz == pytest.approx(mz_of(peptide, z), abs=1e-9)
        np.testing.assert_allclose(pred.aa_scores, p_target, rtol=1e-5)
        n_tokens = len(RES.parse(peptide))
        # Casanovo 4 with the filter: mean probability; Casanovo 5: the product, `$` included.
        expected = p_target if filt else p_target ** (n_tokens + 1)
        assert pred.score == pytest.approx(expected, rel=1e-4)


# (2) the precursor flag ---------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [True, False])
def test_matching_flag_agrees_with_float64_ppm_at_the_tolerance_edge(reverse):
    """Precursors 49.99 / 50.01 ppm from the peptide at isotope 0 or 1: the flag is |ppm| <= 50
    at some isotope as float64 computes it (a float32 sum of masses would be ~0.1 ppm off)."""
    peptide, charge = "LGEYGFQNALLVR", 2
    exact = mz_of(peptide, charge)
    mz = []
    for iso, ppm in itertools.product((0, 1), (-50.01, -49.99, 49.99, 50.01)):
        # calc - (obs - iso*C13/z) = ppm * obs / 1e6  =>  obs = (calc + iso*C13/z) / (1 + ppm/1e6)
        mz.append((exact + iso * C13_SHIFT / charge) / (1 + ppm / 1e6))
    preds = run_search(
        trie=[[oracle_path(peptide, reverse)]] * len(mz),
        mz=mz,
        z=[charge] * len(mz),
        beam=5,
        reverse=reverse,
        compat=False,
        filt=True,
    )
    flags = []
    for obs, pred in zip(mz, preds):
        ppms = [ppm_error(pred.calc_mz, obs, charge, iso) for iso in (0, 1)]
        flags.append(any(abs(p) <= 50 for p in ppms))
        assert pred.matches_precursor == flags[-1], (obs, ppms)
        if flags[-1]:
            assert pred.peptide == peptide
    assert flags == [False, True, True, False] * 2


def test_every_peptide_flagged_as_matching_is_within_50_ppm():
    """The hash decoder with precursors of random peptides, in every mode: each flag is right."""
    rng = np.random.default_rng(5)
    mz, z = [], []
    for _ in range(BATCH):
        pep = [RES.tokens[i] for i in rng.integers(0, 20, size=int(rng.integers(6, 12)))]
        z.append(int(rng.integers(2, 4)))
        mz.append(precursor_mz(RES.peptide_mass(pep), z[-1]))
    for compat, filt in itertools.product((False, True), repeat=2):
        preds = run_search(mz=mz, z=z, beam=5, reverse=True, compat=compat, filt=filt, offset=2.0)
        for pred, obs, charge in zip(preds, mz, z):
            if pred is None:
                continue
            ppms = [ppm_error(pred.calc_mz, obs, charge, iso) for iso in (0, 1)]
            assert pred.matches_precursor == any(abs(p) <= 50 for p in ppms)


# (4) precursor miss penalty -----------------------------------------------------------------


@pytest.mark.parametrize("compat", [False, True])
def test_precursor_miss_costs_one_and_loses_to_a_fitting_peptide(compat):
    fits, misses = "LGEYGFQNALLVR", "LGEYGFQNALVVR"  # L -> V: 14 Da light
    z = 2
    mz = mz_of(fits, z)
    path_fit, logit_fit = oracle_path(fits, reverse=True)
    path_miss, logit_miss = oracle_path(misses, reverse=True)
    # Generated C->N, R V L ... and R V V ... part at the third token, where the miss is more
    # probable; after it both are near certain.
    logit_fit[2], logit_miss[2] = 6.0, 7.0
    both = [(path_miss, logit_miss), (path_fit, logit_fit)]
    only_miss = [(path_miss, logit_miss)]
    kw = dict(trie=[both, only_miss], mz=[mz, mz], z=[z, z], beam=3, reverse=True, compat=compat)
    with_filter, alone = run_search(filt=True, **kw)
    no_filter, _ = run_search(filt=False, **kw)

    assert with_filter.peptide == fits and with_filter.matches_precursor
    assert no_filter.peptide == misses and not no_filter.matches_precursor
    assert alone.peptide == misses and not alone.matches_precursor
    # Casanovo 4's score: mean probability, `$` included, minus 1 on a miss.
    with_stop = alone.aa_scores.tolist() + [softmax_target(10.0)]
    assert alone.score == pytest.approx(np.mean(with_stop) - 1.0, abs=1e-5)
    assert with_filter.score > 0.0 > alone.score > -1.0


# (5) minimum length and N-terminal modifications --------------------------------------------


@pytest.mark.parametrize("compat,filt", MODES)
@pytest.mark.parametrize("reverse", [True, False])
def test_min_length_and_nterm_modification_rules(compat, filt, reverse):
    mod, body = "+42.011", RES.parse("PEPTLDEK")
    peptides = [
        RES.parse("PEPK"),  # too short
        body[:3] + [mod] + body[3:],  # modification inside
        [mod, mod] + body,  # two modifications
        [mod] + body,  # fine
    ]
    trie = []
    for tokens in peptides:
        seq = ids(tokens)[::-1] if reverse else ids(tokens)
        trie.append([(seq + [STOP], [10.0] * (len(seq) + 1))])
    mz = [precursor_mz(RES.peptide_mass(t), 2) for t in peptides]
    preds = run_search(
        trie=trie, mz=mz, z=[2] * 4, beam=5, reverse=reverse, compat=compat, filt=filt
    )
    for pred in preds:
        # Casanovo 5 may keep nothing once it discards; with the filter, every beam from the
        # short peptide's prefix passes its precursor before 6 tokens and is dropped.
        if pred is None:
            assert compat or filt
            continue
        assert len(pred.tokens) >= 6, pred.peptide
        mods = [i for i, t in enumerate(pred.tokens) if t in RES.nterm]
        assert mods in ([], [0]), pred.peptide
    assert preds[3] is not None and preds[3].peptide == "+42.011PEPTLDEK"
    assert preds[0] is None or preds[0].peptide != "PEPK"


def test_min_length_is_a_parameter():
    short = "PEPK"
    preds = run_search(
        trie=[[oracle_path(short, True)]],
        mz=[mz_of(short, 2)],
        z=[2],
        beam=3,
        reverse=True,
        compat=False,
        filt=True,
        min_length=4,
    )
    assert preds[0].peptide == short and preds[0].matches_precursor


# (6) reversed decoding ----------------------------------------------------------------------


@pytest.mark.parametrize("compat", [False, True])
def test_reversed_decoding_returns_n_to_c_order_with_aligned_scores(compat):
    peptide = "+42.011SDKPDM+15.995AELEK"
    tokens = RES.parse(peptide)
    gen = ids(tokens)[::-1]  # K E L E A M+15.995 D P K D S +42.011
    lg = [4.0 + 0.5 * i for i in range(len(gen))] + [12.0]
    (pred,) = run_search(
        trie=[[(gen + [STOP], lg)]],
        mz=[mz_of(peptide, 3)],
        z=[3],
        beam=5,
        reverse=True,
        compat=compat,
        filt=False,
    )
    assert pred.peptide == peptide and pred.tokens == tuple(tokens)
    # Generation step i has probability softmax(lg[i]); N->C order reverses them.
    probs = [softmax_target(x) for x in lg[:-1]]
    np.testing.assert_allclose(pred.aa_scores, probs[::-1], rtol=1e-5)
    merged = merge_nterm_scores(pred, RES)  # as Casanovo's mzTab writer stores them
    assert len(merged) == len(tokens) - 1
    assert merged[0] == pytest.approx(pred.aa_scores[0] * pred.aa_scores[1])


# ---------------------------------------------------------------------------------------------
# Casanovo parity
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [True, False])
@pytest.mark.parametrize("beam", [1, 3, 5])
def test_casanovo_compatible_search_equals_casanovo_5_2_1(reverse, beam):
    """Casanovo's own beam_search_decode on the same logits: the same peptide (or none), score
    and aa_scores, in the four logit regimes of make_ar_search_fixtures.py (the last three
    reach Casanovo's quirks: pad and `$` as first tokens, 1e-8 pad candidates, ended rows
    picked again, discarded N-terminal modifications)."""
    fx = json.loads(FIXTURE.read_text())
    assert list(RES.tokens) == fx["tokens"]
    assert (fx["max_peptide_len"], fx["min_peptide_len"]) == (MAX_LEN, 6)
    cases = [c for c in fx["cases"] if c["reverse"] == reverse and c["beam"] == beam]
    assert len(cases) == len(fx["regimes"]) == 4
    for case in cases:
        preds = run_search(
            mz=fx["precursor_mz"],
            z=fx["charge"],
            beam=beam,
            reverse=reverse,
            compat=True,
            filt=False,
            scale=fx["regimes"][case["regime"]][0],
            offset=fx["regimes"][case["regime"]][1],
        )
        for i, (got, want) in enumerate(zip(preds, case["predictions"], strict=True)):
            where = f"{case['regime']} spectrum {i}"
            if want is None:
                assert got is None, where
                continue
            assert got is not None and got.peptide == want["peptide"], where
            assert got.score == pytest.approx(want["score"], rel=2e-4), where
            np.testing.assert_allclose(got.aa_scores, want["aa_scores"], atol=2e-6, err_msg=where)


# ---------------------------------------------------------------------------------------------
# (3) exhaustive search on a tiny vocabulary
# ---------------------------------------------------------------------------------------------

TINY = Residues(masses={"G": 57.021464, "A": 71.037114, "S": 87.032028, "-17.027": -17.026549})
TINY_STOP = len(TINY.tokens) + 1
TINY_MOD = TINY.tokens.index("-17.027") + 1
TINY_IS_MOD = np.arange(TINY_STOP + 1) == TINY_MOD


def tiny_model(seed_B):
    is_mod_V = jnp.asarray(TINY_IS_MOD)

    def step(tok_N, c):
        c = {"h": _push(c["h"], tok_N), "len": c["len"] + 1}
        return hash_logits(c["h"], c["len"], is_mod_V, 1.0, 0.5), c

    h0 = _mix(jnp.asarray(seed_B, jnp.uint32))
    cache = {"h": h0, "len": jnp.zeros(h0.shape, jnp.int32)}
    return hash_logits(h0, cache["len"], is_mod_V, 1.0, 0.5), cache, step


@functools.partial(jax.jit, compiler_options=FAST_COMPILE)
def tiny_search(seed_B, parts, z_B, filt):
    first, cache, step = tiny_model(seed_B)
    return ar_beam_search(
        step,
        first,
        cache,
        precursor_mz_B=parts,
        charge_B=z_B,
        residues=TINY,
        beam_size=800,
        max_length=5,
        min_length=2,
        reverse=True,
        precursor_filter=filt,
        casanovo_compatible=False,
    )


def _np_mix(h):
    """_mix in NumPy on uint64 arrays (or Python ints), wrapping to uint32 like the fixture."""
    m = 0xFFFFFFFF
    h = h & m
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & m
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def _np_probs(h: int, length: int) -> np.ndarray:
    """Softmax of the tiny hash decoder's logits after a prefix with hash h, in NumPy."""
    v = np.arange(TINY_STOP + 1, dtype=np.uint64)
    u = _np_mix(np.uint64(h) ^ ((v * np.uint64(0x27D4EB2F) + np.uint64(0x165667B1)) & 0xFFFFFFFF))
    x = ((u >> np.uint64(8)) & np.uint64(0xFFFFF)).astype(np.float32) / np.float32(2**17) - 4
    x[1:TINY_STOP] += np.float32(0.5)
    x[0] -= 1
    x[TINY_IS_MOD] -= 2
    x[TINY_STOP] += np.float32((length - 9.0) * 0.75)
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def exhaustive(seed: int, mz: float, z: int, *, filt: bool, max_length=5, min_length=2):
    """Best (score, N->C tokens) over every peptide the default rules allow (reversed)."""
    mass = {i + 1: TINY.mass(t) for i, t in enumerate(TINY.tokens)}
    best = (-np.inf, None)

    def fits(m, extra=0.0):
        ppms = [ppm_error(precursor_mz(m + extra, z), mz, z, iso) for iso in (0, 1)]
        return any(abs(p) <= 50 for p in ppms), all(p > 50 for p in ppms)

    def keep(score, seq):
        nonlocal best
        if score > best[0]:
            best = (score, seq)

    def visit(prefix, probs, h):
        p_V = _np_probs(h, len(prefix))
        pos = len(prefix)
        for tok in range(1, TINY_STOP + 1):
            if prefix and prefix[-1] == TINY_MOD and tok != TINY_STOP:
                continue  # reversed, the modification is the last token before `$`
            if tok == TINY_STOP and (pos == 0 or pos < min_length):
                continue
            if tok == TINY_MOD and not (TINY_MOD not in prefix and pos + 1 >= min_length):
                continue
            seq, pr = prefix + [tok], probs + [float(p_V[tok])]
            m = sum(mass[t] for t in seq if t != TINY_STOP) + 18.0105647
            if tok == TINY_STOP:
                if filt:
                    keep(np.mean(pr) - (0.0 if fits(m)[0] else 1.0), seq[:-1])
                else:
                    keep(float(np.prod(np.clip(pr, np.finfo(np.float64).eps, 1))), seq[:-1])
                continue
            if filt:  # terminated once past the precursor even with the -17 Da modification
                extra = TINY.mass("-17.027") if TINY_MOD not in seq else 0.0
                if fits(m, extra)[1]:
                    if len(seq) >= min_length:
                        keep(np.mean(pr + [0.0]) - 1.0, seq)
                    continue
            if pos + 1 < max_length:
                visit(seq, pr, _np_mix(h * 0x9E3779B1 + tok + 1))

    visit([], [], _np_mix(seed))
    score, seq = best
    return score, tuple(TINY.tokens[t - 1] for t in reversed(seq))


@pytest.mark.parametrize("filt", [True, False])
def test_wide_beam_search_equals_exhaustive_search(filt):
    """Beam 800 holds every live prefix of <= 4 tokens over G, A, S, -17.027: the search must
    then return the best peptide by its scoring rules."""
    rng = np.random.default_rng(3)
    mz = []
    for _ in range(3):
        pep = [TINY.tokens[i] for i in rng.integers(0, 3, size=int(rng.integers(2, 5)))]
        mz.append(precursor_mz(TINY.peptide_mass(pep), 2))
    z = [2, 2, 2]
    seeds = hash_seeds(mz)
    result = tiny_search(
        jnp.asarray(seeds), mz_parts(np.asarray(mz)), jnp.asarray(z), jnp.bool_(filt)
    )
    preds = to_predictions(result, residues=TINY, reverse=True, charge_B=z)
    matched = 0
    for i, pred in enumerate(preds):
        score, tokens = exhaustive(int(seeds[i]), mz[i], z[i], filt=filt)
        assert pred is not None and pred.tokens == tokens, (i, pred, tokens, score)
        assert pred.score == pytest.approx(score, rel=1e-5, abs=1e-7)
        matched += pred.matches_precursor
    assert not filt or matched  # the precursor peptides are reachable: some fit


# ---------------------------------------------------------------------------------------------
# On the peptide model's cache
# ---------------------------------------------------------------------------------------------


def test_search_on_a_tiny_peptide_model_scores_what_teacher_forcing_gives():
    """Beam 3 through PeptideModel.ar_init_cache / ar_step (hybrid, random weights): every
    kept token's probability, and the score, equal the teacher-forced decoder's on the
    returned tokens, so beams read the right cache rows."""
    from flax import traverse_util
    from flax.linen import meta

    from zoo.peptide import model as peptide
    from zoo.peptide.model import PeptideConfig, PeptideModel

    cfg = PeptideConfig(
        mode="hybrid",
        n_residues=len(RES.tokens),
        d_model=16,
        n_heads=2,
        d_ff=32,
        encoder_layers=1,
        ar_layers=1,
        nar_layers=1,
        nar_slots=8,
        max_peptide_len=12,
    )
    model = PeptideModel(cfg)
    n, peaks = 4, 6
    rng = np.random.default_rng(0)
    mz = np.sort(rng.uniform(50, 1500, (n, peaks)), axis=1).astype(np.float32)
    intensity = rng.uniform(0.01, 1, (n, peaks)).astype(np.float32)
    charge = np.array([2, 3, 2, 2], np.int32)
    prec_mz = rng.uniform(400, 900, n)
    mass = ((prec_mz - 1.007276) * charge).astype(np.float32)
    tokens0 = np.zeros((n, cfg.max_peptide_len), np.int32)

    # Random parameters drawn with NumPy on the abstract init (no compiled init).
    boxed = jax.eval_shape(model.init, jax.random.key(0), mz, intensity, mass, charge, tokens0)
    params = {}
    for key, leaf in traverse_util.flatten_dict(meta.unbox(boxed["params"]), sep="/").items():
        if key.endswith("/terms"):
            params[key] = peptide.float_encoder_terms(leaf.shape[0], 1.0, 1e4)
        elif key.endswith("/scale"):
            params[key] = np.ones(leaf.shape, np.float32)
        else:
            params[key] = 0.3 * rng.standard_normal(leaf.shape).astype(np.float32)
    params["ar_output/bias"][cfg.stop_id] += 2.0  # so that beams end within 12 tokens
    params = traverse_util.unflatten_dict(params, sep="/")

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def decode(params, parts):
        v = {"params": params}
        memory, mask = model.apply(v, mz, intensity, method=PeptideModel.encode)
        states, _ = model.apply(v, memory, mask, mass, charge, method=PeptideModel.nar)
        first, cache = model.apply(
            v,
            mass,
            charge,
            memory,
            mask,
            states,
            cfg.max_peptide_len,
            method=PeptideModel.ar_init_cache,
        )

        def step(tok_N, c):
            return model.apply(v, tok_N, c, method=PeptideModel.ar_step)

        result = ar_beam_search(
            step,
            first,
            cache,
            precursor_mz_B=parts,
            charge_B=charge,
            residues=RES,
            beam_size=3,
            max_length=cfg.max_peptide_len,
            reverse=cfg.reverse,
            precursor_filter=False,
        )
        # Teacher forcing on the kept tokens (generation order) and `$`, zero-padded: the
        # decoder is causal, so the padding does not change earlier positions.
        pos_T = jnp.arange(cfg.max_peptide_len)
        fed = jnp.where(pos_T < result.length_B[:, None], result.tokens_BxT, 0)
        fed = jnp.where(pos_T == result.length_B[:, None], STOP, fed)
        logits = model.apply(v, fed, mass, charge, memory, mask, states, method=PeptideModel.ar)
        return result, fed, jax.nn.softmax(logits)

    result, fed, probs = jax.device_get(decode(params, mz_parts(prec_mz)))
    assert result.found_B.sum() >= 2
    for b in np.flatnonzero(result.found_B):
        length = result.length_B[b]
        want = probs[b, np.arange(length + 1), fed[b, : length + 1]]
        np.testing.assert_allclose(result.prob_BxT[b, :length], want[:-1], rtol=2e-5)
        score = np.prod(np.clip(want, np.finfo(np.float64).eps, 1))
        assert result.score_B[b] == pytest.approx(score, rel=1e-4)
