"""zoo.decode searches on a toy model whose next-token log-probs are known in closed form.

Toy model: logits = TABLE[last token] + PREV[token before it] + bias[row] + POS[step]. The
cache holds the per-row bias, step counter and previous token, so a beam that gets another
beam's cache row (a wrong gather) sees wrong log-probs. Budgets, forced tokens, length
penalty and diversity strength are traced, so tests of one shape share a compiled search.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decode import reference as ref
from zoo.decode import (
    beam_search,
    diverse_beam_search,
    greedy_search,
    hamming_penalty,
    max_length_for,
)

EOS, PAD = 2, 1
STEPS = 8  # output width of every toy search but the exhaustive one
TRACED = ("max_len", "forced_bos_id", "length_penalty", "diversity_strength")


class Toy:
    def __init__(self, seed: int, vocab: int = 13, batch: int = 4, eos_boost: float = 1.0):
        rng = np.random.default_rng(seed)
        self.vocab, self.batch = vocab, batch
        self.table_VxV = rng.normal(size=(vocab, vocab)).astype(np.float32) * 2.0
        self.table_VxV[:, EOS] += eos_boost  # hypotheses end after a few tokens
        self.prev_VxV = rng.normal(size=(vocab, vocab)).astype(np.float32)
        self.pos_PxV = rng.normal(size=(16, vocab)).astype(np.float32)
        self.bias_BxV = rng.normal(size=(batch, vocab)).astype(np.float32)
        self.start_B = rng.integers(3, vocab, size=batch).astype(np.int32)

    def cache(self):
        return {
            "bias": jnp.asarray(self.bias_BxV),
            "step": jnp.zeros((self.batch,), jnp.int32),
            "prev": jnp.zeros((self.batch,), jnp.int32),  # before the start token: token 0
        }

    def tables(self):
        return tuple(map(jnp.asarray, (self.table_VxV, self.prev_VxV, self.pos_PxV)))

    def logp(self, row: int, prefix: list) -> np.ndarray:
        fed = [0, self.start_B[row]] + list(prefix)
        step = min(len(prefix), self.pos_PxV.shape[0] - 1)
        logits = (
            self.table_VxV[fed[-1]].astype(np.float64)
            + self.prev_VxV[fed[-2]]
            + self.bias_BxV[row]
            + self.pos_PxV[step]
        )
        return logits - np.logaddexp.reduce(logits)


def toy_step(tables, token_N, cache):
    """The model's step_fn (tables bound with functools.partial)."""
    table_VxV, prev_VxV, pos_PxV = tables
    step_N = jnp.minimum(cache["step"], pos_PxV.shape[0] - 1)
    logits_NxV = table_VxV[token_N] + prev_VxV[cache["prev"]] + cache["bias"] + pos_PxV[step_N]
    return logits_NxV, {"bias": cache["bias"], "step": cache["step"] + 1, "prev": token_N}


@functools.partial(jax.jit, static_argnames=("search", "static"))
def _search(tables, cache, start_B, traced, *, search, static):
    step_fn = functools.partial(toy_step, tables)
    return search(
        step_fn, cache, start_ids_B=start_B, eos_id=EOS, pad_id=PAD, **traced, **dict(static)
    )


def run(search, toy: Toy, steps: int = STEPS, **kwargs):
    """Run a search under jit, the way a model would call it."""
    kwargs["max_len"] = np.broadcast_to(kwargs["max_len"], (toy.batch,))
    traced = {k: jnp.asarray(kwargs.pop(k)) for k in TRACED if kwargs.get(k) is not None}
    kwargs.pop("forced_bos_id", None)
    static = tuple(sorted(dict(kwargs, max_steps=steps).items()))
    out = _search(
        toy.tables(), toy.cache(), jnp.asarray(toy.start_B), traced, search=search, static=static
    )
    return jax.tree.map(np.asarray, out)


def padded(seq, width=STEPS):
    return list(seq) + [PAD] * (width - len(seq))


# ---------------------------------------------------------------------------------------------
# Greedy and beam search


def test_greedy_equals_numpy_argmax_chain_with_per_row_max_len_and_forcing():
    toy = Toy(seed=0, eos_boost=0.0)
    max_len_B = np.array([7, 3, 5, 1], np.int32)
    forced_bos_B = np.array([9, 4, 7, 5], np.int32)
    out = run(greedy_search, toy, max_len=max_len_B, forced_bos_id=forced_bos_B, forced_eos_id=EOS)
    assert out.shape == (4, STEPS)
    for row in range(4):
        want = ref.greedy(toy.logp, row, max_len_B[row], EOS, forced_bos_B[row], EOS)
        assert out[row].tolist() == padded(want), row
    # Rows honour their own budget and start with the forced BOS / end with the forced EOS.
    assert out[:, 0].tolist() == [9, 4, 7, EOS]  # row 3 has one token: forced EOS wins
    assert out[1, 2] == EOS and (out[1, 3:] == PAD).all()


def test_greedy_stops_at_eos_or_its_budget_and_pads_after():
    toy = Toy(seed=1, eos_boost=1.5)
    max_len_B = np.array([7, 3, 5, 6], np.int32)
    out = run(greedy_search, toy, max_len=max_len_B)
    for row in range(4):
        assert out[row].tolist() == padded(ref.greedy(toy.logp, row, max_len_B[row], EOS)), row
    assert any(EOS in r[:-2] for r in out.tolist()), "some row should end early on its EOS"
    assert any(r[n - 1] != EOS and r[n] == PAD for r, n in zip(out.tolist(), max_len_B))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_with_a_wide_beam_equals_exhaustive_enumeration(length_penalty):
    # V=4, 4 steps: 3**3 live prefixes at most, so K=64 never prunes a prefix, and
    # early_stopping="never" bounds the best reachable score, so the search is exact.
    vocab, max_len, k = 4, 4, 64
    toy = Toy(seed=2, vocab=vocab, batch=2, eos_boost=0.5)
    seqs, scores = run(
        beam_search,
        toy,
        steps=max_len,
        beam_size=k,
        max_len=max_len,
        length_penalty=length_penalty,
        early_stopping="never",
    )
    for row in range(2):
        everything = []
        for length in range(1, max_len + 1):
            for seq in itertools.product(range(vocab), repeat=length):
                if EOS in seq[:-1] or (length < max_len and seq[-1] != EOS):
                    continue
                total = sum(toy.logp(row, list(seq[:i]))[t] for i, t in enumerate(seq))
                everything.append((total / length**length_penalty, list(seq)))
        everything.sort(key=lambda c: -c[0])
        top = 10
        assert seqs[row, :top].tolist() == [padded(s, max_len) for _, s in everything[:top]]
        np.testing.assert_allclose(scores[row, :top], [s for s, _ in everything[:top]], rtol=1e-5)


@pytest.mark.parametrize(
    "early_stopping, length_penalty", [(False, 1.0), (False, 0.6), (True, 1.0), ("never", 2.0)]
)
def test_beam_search_equals_numpy_reference_with_per_row_max_len(early_stopping, length_penalty):
    k = 3
    max_len_B = np.array([8, 4, 6, 7], np.int32)
    for seed in range(3, 9):  # several toys share one compiled search
        toy = Toy(seed=seed)
        seqs, scores = run(
            beam_search,
            toy,
            beam_size=k,
            max_len=max_len_B,
            length_penalty=length_penalty,
            early_stopping=early_stopping,
            forced_eos_id=EOS,
        )
        assert seqs.shape == (4, k, STEPS) and scores.shape == (4, k)
        for row in range(4):
            want = ref.beam(
                toy.logp, row, k, max_len_B[row], EOS, length_penalty, early_stopping, None, EOS
            )
            assert len(want) == k
            assert seqs[row].tolist() == [padded(s) for _, s in want], (seed, row)
            np.testing.assert_allclose(scores[row], [s for s, _ in want], rtol=1e-5)
            assert (seqs[row, :, max_len_B[row] :] == PAD).all()


def test_beam_search_forced_bos_per_row_starts_every_hypothesis():
    toy = Toy(seed=4)
    forced_B = np.array([5, 11, 8, 3], np.int32)
    seqs, scores = run(
        beam_search, toy, beam_size=3, max_len=6, forced_bos_id=forced_B, forced_eos_id=EOS
    )
    assert (seqs[:, :, 0] == forced_B[:, None]).all()
    for row in range(4):
        want = ref.beam(toy.logp, row, 3, 6, EOS, forced_bos=forced_B[row], forced_eos=EOS)
        assert seqs[row].tolist() == [padded(s) for _, s in want]
        np.testing.assert_allclose(scores[row], [s for s, _ in want], rtol=1e-5)


def test_beam_size_one_is_greedy():
    toy = Toy(seed=5)
    seqs, _ = run(beam_search, toy, beam_size=1, max_len=7, forced_eos_id=EOS)
    greedy = run(greedy_search, toy, max_len=7, forced_eos_id=EOS)
    np.testing.assert_array_equal(seqs[:, 0], greedy)


# --------------------------------------------------------------------------------------------
# Diverse beam search: 3 groups of 2 beams throughout


def test_diverse_strength_zero_equals_independent_beam_search_per_group():
    toy = Toy(seed=6)
    max_len_B = np.array([7, 5, 3, 8], np.int32)
    seqs, scores = run(
        diverse_beam_search,
        toy,
        beam_size=6,
        num_groups=3,
        diversity_strength=0.0,
        max_len=max_len_B,
    )
    one_seqs, one_scores = run(beam_search, toy, beam_size=2, max_len=max_len_B)
    for g in range(3):  # contiguous blocks of 2 beams
        np.testing.assert_array_equal(seqs[:, 2 * g : 2 * g + 2], one_seqs)
        np.testing.assert_allclose(scores[:, 2 * g : 2 * g + 2], one_scores, rtol=1e-6)


def test_diverse_group_zero_is_unpenalised_and_later_groups_diverge():
    toy = Toy(seed=7)
    seqs, _ = run(
        diverse_beam_search, toy, beam_size=6, num_groups=3, diversity_strength=5.0, max_len=6
    )
    one_seqs, _ = run(beam_search, toy, beam_size=2, max_len=6)
    np.testing.assert_array_equal(seqs[:, :2], one_seqs)
    # A strong penalty keeps the groups' best hypotheses apart.
    assert any(not np.array_equal(seqs[:, 0], seqs[:, 2 * g]) for g in (1, 2))


def test_hamming_penalty_counts_equal_numpy_bincount():
    rng = np.random.default_rng(8)
    chosen_BxM = rng.integers(-1, 9, size=(4, 6))  # -1: a finished group's slot
    got = np.asarray(hamming_penalty(jnp.asarray(chosen_BxM), 9, 0.5))
    want = np.stack([0.5 * ref.hamming_counts(row[row >= 0], 9) for row in chosen_BxM])
    np.testing.assert_allclose(got, want)


def test_diverse_one_step_scores_equal_numpy_hamming_reference():
    # With max_len=1 every candidate finishes at once, so group g's hypotheses are the top
    # K/G tokens of logp - strength * (count of tokens chosen by groups < g).
    toy = Toy(seed=9)
    strength, groups, kg = 0.7, 3, 2
    seqs, scores = run(
        diverse_beam_search,
        toy,
        beam_size=groups * kg,
        num_groups=groups,
        diversity_strength=strength,
        max_len=1,
    )
    for row in range(4):
        logp_V = toy.logp(row, [])
        chosen: list = []
        for g in range(groups):
            penalised = logp_V - strength * ref.hamming_counts(chosen, toy.vocab)
            top = np.argsort(-penalised, kind="stable")[:kg]
            block = slice(g * kg, (g + 1) * kg)
            assert seqs[row, block, 0].tolist() == top.tolist()
            np.testing.assert_allclose(scores[row, block], penalised[top], rtol=1e-5)
            chosen += top.tolist()


@pytest.mark.parametrize("strength", [0.4, 3.0])
def test_diverse_search_equals_numpy_reference_over_several_steps(strength):
    groups, kg = 3, 2
    max_len_B = np.array([6, 4, 8, 7], np.int32)
    for seed in range(10, 14):
        toy = Toy(seed=seed)
        seqs, scores = run(
            diverse_beam_search,
            toy,
            beam_size=groups * kg,
            num_groups=groups,
            diversity_strength=strength,
            max_len=max_len_B,
        )
        for row in range(4):
            want = ref.diverse(toy.logp, row, groups, kg, max_len_B[row], EOS, strength)
            for g, done in enumerate(want):
                block = slice(g * kg, (g + 1) * kg)
                assert seqs[row, block].tolist() == [padded(s) for _, s in done], (seed, row, g)
                np.testing.assert_allclose(scores[row, block], [s for s, _ in done], rtol=1e-5)


# --------------------------------------------------------------------------------------------


def test_max_length_for_is_a_times_len_plus_b_capped():
    got = np.asarray(max_length_for(np.array([10, 3, 900]), 1.2, 10, 1024))
    assert got.tolist() == [22, 13, 1024]


def test_cache_leaf_without_batch_dim_is_rejected_with_its_path():
    toy = Toy(seed=11)
    bad = {**toy.cache(), "index": jnp.int32(0)}
    step_fn = functools.partial(toy_step, toy.tables())
    with pytest.raises(ValueError, match=r"\['index'\]"):
        greedy_search(step_fn, bad, start_ids_B=toy.start_B, max_len=3, eos_id=EOS, pad_id=PAD)


def test_traced_max_len_without_max_steps_is_rejected():
    toy = Toy(seed=12)
    step_fn = functools.partial(toy_step, toy.tables())

    @jax.jit
    def go(max_len_B):
        return greedy_search(
            step_fn, toy.cache(), start_ids_B=toy.start_B, max_len=max_len_B, eos_id=2, pad_id=1
        )

    with pytest.raises(ValueError, match="max_steps"):
        go(jnp.full((4,), 3))
