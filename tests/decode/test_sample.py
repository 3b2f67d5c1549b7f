"""zoo.decode.sample_search / filter_logits: temperature, top-k and top-p sampling.

A fixed-logits step function (the same logits at every step) lets the empirical token
frequencies of many rows be compared with the renormalised distribution that transformers'
Temperature -> TopK -> TopP warpers define (re-implemented here in NumPy as the reference).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.decode import filter_logits, greedy_search, sample_search

EOS, PAD, VOCAB = 2, 1, 11


def hf_warped_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float):
    """NumPy transcription of HF's TemperatureLogitsWarper, TopKLogitsWarper and
    TopPLogitsWarper (min_tokens_to_keep=1), then softmax: [V] probabilities."""
    scores = logits.astype(np.float64) / temperature
    if top_k > 0:
        kth = np.sort(scores)[::-1][min(top_k, len(scores)) - 1]
        scores = np.where(scores < kth, -np.inf, scores)
    if top_p < 1.0:
        order = np.argsort(scores, kind="stable")
        sorted_scores = scores[order]
        probs = np.exp(sorted_scores - sorted_scores.max())
        cum = np.cumsum(probs / probs.sum())
        remove = cum <= 1 - top_p
        remove[-1] = False
        scores[order[remove]] = -np.inf
    p = np.exp(scores - scores.max())
    return p / p.sum()


def fixed_step(logits_V):
    def step_fn(tokens_N, cache):
        return jnp.broadcast_to(logits_V, (tokens_N.shape[0], logits_V.shape[0])), cache

    return step_fn


@functools.partial(jax.jit, static_argnames=("rows", "max_len"))
def _sample_fixed(logits_V, rng, temperature, top_k, top_p, *, rows, max_len):
    cache = {"row": jnp.zeros((rows,), jnp.int32)}
    return sample_search(
        fixed_step(logits_V), cache, start_ids_B=jnp.zeros((rows,), jnp.int32), max_len=max_len,
        rng=rng, eos_id=-1, pad_id=PAD, temperature=temperature, top_k=top_k, top_p=top_p,
    )  # fmt: skip


LOGITS = np.random.default_rng(0).normal(size=VOCAB).astype(np.float32) * 1.5


@pytest.mark.parametrize(
    "temperature,top_k,top_p",
    [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.0, 0, 0.6), (1.3, 5, 0.8)],
)
def test_empirical_frequencies_match_the_top_k_top_p_renormalised_distribution(
    temperature, top_k, top_p
):
    rows, steps = 4000, 5  # 20000 draws; steps use different keys
    tokens = _sample_fixed(
        jnp.asarray(LOGITS), jax.random.PRNGKey(7), temperature, top_k, top_p,
        rows=rows, max_len=steps,
    )  # fmt: skip
    counts = np.bincount(np.asarray(tokens).ravel(), minlength=VOCAB)
    n = counts.sum()
    want = hf_warped_probs(LOGITS, temperature, top_k, top_p)
    assert np.all(counts[want == 0] == 0), "a filtered-out token was drawn"
    sigma = np.sqrt(want * (1 - want) / n)
    np.testing.assert_array_less(np.abs(counts / n - want), 5 * sigma + 1e-3)


def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p():
    probs = np.array([0.05, 0.5, 0.15, 0.3], np.float32)
    logits = jnp.log(jnp.asarray(probs))[None]
    for top_p, kept in [(0.4, {1}), (0.75, {1, 3}), (0.85, {1, 2, 3}), (0.99, {0, 1, 2, 3})]:
        out = np.asarray(filter_logits(logits, top_p=top_p))[0]
        assert set(np.flatnonzero(np.isfinite(out))) == kept, top_p
        want = hf_warped_probs(np.log(probs), 1.0, 0, top_p)
        np.testing.assert_allclose(np.asarray(jax.nn.softmax(out)), want, atol=1e-6)


def test_top_k_keeps_ties_like_transformers():
    logits = jnp.asarray([[0.0, 2.0, 1.0, 2.0, 1.0]])
    out = np.asarray(filter_logits(logits, top_k=2))[0]
    assert list(np.isfinite(out)) == [False, True, False, True, False]
    out = np.asarray(filter_logits(logits, top_k=3))[0]
    assert list(np.isfinite(out)) == [False, True, True, True, True]  # the 3rd best ties


class Toy:
    """logits = TABLE[last token] + POS[step]; the cache counts steps per row."""

    def __init__(self, batch=3):
        rng = np.random.default_rng(1)
        self.table = jnp.asarray(rng.normal(size=(VOCAB, VOCAB)).astype(np.float32) * 2)
        self.table = self.table.at[:, EOS].add(0.5)
        self.pos = jnp.asarray(rng.normal(size=(16, VOCAB)).astype(np.float32))
        self.start = jnp.asarray(rng.integers(3, VOCAB, batch), jnp.int32)
        self.batch = batch

    def step_fn(self, tokens_N, cache):
        logits = self.table[tokens_N] + self.pos[cache["step"]]
        return logits, {"step": cache["step"] + 1}

    def cache(self):
        return {"step": jnp.zeros((self.batch,), jnp.int32)}


@pytest.mark.parametrize("temperature", [0.0, 1e-4])
def test_temperature_to_zero_equals_greedy(temperature):
    toy = Toy()
    common = dict(start_ids_B=toy.start, max_len=10, eos_id=EOS, pad_id=PAD)
    greedy = jax.jit(lambda c: greedy_search(toy.step_fn, c, **common))(toy.cache())
    sampled = jax.jit(
        lambda c, t, k: sample_search(toy.step_fn, c, rng=k, temperature=t, **common)
    )(toy.cache(), temperature, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(sampled, greedy)


def test_samples_pad_after_eos_and_respect_per_row_budgets():
    toy = Toy(batch=64)
    out = jax.jit(
        lambda c, k: sample_search(
            toy.step_fn, c, start_ids_B=jnp.tile(toy.start, 22)[:64], max_len=jnp.arange(64) % 7,
            max_steps=8, rng=k, eos_id=EOS, pad_id=PAD, temperature=1.5,
        )
    )(toy.cache(), jax.random.PRNGKey(0))  # fmt: skip
    out = np.asarray(out)
    for row, budget in zip(out, np.arange(64) % 7):
        assert np.all(row[budget:] == PAD)
        eos_at = np.flatnonzero(row == EOS)
        if eos_at.size:
            assert np.all(row[eos_at[0] + 1 :] == PAD)
    assert (out == EOS).any()  # some rows really end early


def test_same_key_same_samples_other_key_other_samples():
    args = (jnp.asarray(LOGITS), 1.0, 0, 1.0)
    a = _sample_fixed(args[0], jax.random.PRNGKey(1), *args[1:], rows=64, max_len=4)
    b = _sample_fixed(args[0], jax.random.PRNGKey(1), *args[1:], rows=64, max_len=4)
    c = _sample_fixed(args[0], jax.random.PRNGKey(2), *args[1:], rows=64, max_len=4)
    np.testing.assert_array_equal(a, b)
    assert (np.asarray(a) != np.asarray(c)).any()
