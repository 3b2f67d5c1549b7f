"""zoo.lm equals transformers 4.57.6 on tiny random Llama / Mistral / Qwen2 checkpoints:
logits (unpadded and left-padded batches), cached decoding, greedy and beam `generate`.

Fixtures: tests/fixtures/lm/<variant>/ and <variant>.npz, written by
tests/fixtures/make_lm_fixtures.py (see its docstring for the variants and generate settings).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo.lm
from zoo.lm import model as lm
from zoo.lm.generate import generate

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "lm")
VARIANTS = ("llama3_gqa", "llama_linear", "mistral_window", "qwen2_tied")


@functools.cache
def loaded(name: str):
    model, params = zoo.lm.load(os.path.join(FIXTURES, name))
    expected = dict(np.load(os.path.join(FIXTURES, f"{name}.npz")))
    return model, jax.tree.map(jnp.asarray, params), expected


@pytest.mark.parametrize("name", VARIANTS)
def test_logits_equal_transformers_on_real_positions(name):
    model, params, want = loaded(name)
    apply = jax.jit(model.apply)
    logits = apply({"params": params}, want["input_ids"])
    np.testing.assert_allclose(logits, want["logits"], atol=1e-5, rtol=0)
    padded = np.asarray(apply({"params": params}, want["padded_ids"], want["padded_mask"]))
    real = want["padded_mask"].astype(bool)
    np.testing.assert_allclose(padded[real], want["padded_logits"][real], atol=1e-5, rtol=0)


def test_the_fixtures_exercise_what_they_claim():
    configs = {name: loaded(name)[0].config for name in VARIANTS}
    assert configs["llama3_gqa"].num_heads == 6 and configs["llama3_gqa"].kv_heads == 2
    assert configs["llama3_gqa"].rope_scaling["rope_type"] == "llama3"
    assert configs["llama_linear"].rope_scaling["rope_type"] == "linear"
    assert configs["llama_linear"].attention_out_bias and configs["llama_linear"].kv_heads == 1
    assert configs["mistral_window"].sliding_window < loaded(VARIANTS[2])[2]["input_ids"].shape[1]
    assert configs["mistral_window"].head_size != 32 // 4
    assert configs["qwen2_tied"].tie_word_embeddings and configs["qwen2_tied"].attention_bias
    assert os.path.exists(os.path.join(FIXTURES, "llama_linear", "model.safetensors.index.json"))


@pytest.mark.parametrize("name", ["mistral_window", "llama3_gqa"])
def test_cached_decoding_equals_teacher_forcing_on_the_padded_batch(name):
    model, params, want = loaded(name)
    ids, mask = want["padded_ids"], want["padded_mask"]
    _, cache = jax.jit(lm.prefill, static_argnums=(0, 4))(
        model, params, ids[:, :5], mask[:, :5], 10
    )
    step = jax.jit(lm.decode_step, static_argnums=0)
    real = mask.astype(bool)
    for t in range(5, 10):
        logits, cache = step(model, params, cache, jnp.asarray(ids[:, t]))
        np.testing.assert_allclose(
            np.asarray(logits)[real[:, t]], want["padded_logits"][:, t][real[:, t]], atol=1e-5
        )


def ids_of(want) -> dict[str, int]:
    return {"eos": int(want["gen_eos"]), "pad": int(want["pad_id"])}


def pad_after_eos(tokens: np.ndarray, eos: int, pad: int) -> np.ndarray:
    """transformers fills finished beams with `pad_token_id or eos_token_id[0]`, the EOS when
    the pad id is 0 (falsy); zoo's searches always pad. Tokens after the first EOS -> pad."""
    after = np.cumsum(np.cumsum(tokens == eos, axis=-1), axis=-1) > 1
    return np.where(after, pad, tokens)


@pytest.mark.parametrize("name", VARIANTS)
def test_greedy_and_beam_equal_transformers_generate(name):
    model, params, want = loaded(name)
    ids, mask = want["padded_ids"], want["padded_mask"]
    common = dict(max_new_tokens=8, eos_id=int(want["gen_eos"]), pad_id=int(want["pad_id"]))
    greedy = generate(model, params, ids, mask, method="greedy", **common)
    np.testing.assert_array_equal(greedy.tokens, pad_after_eos(want["greedy"], **ids_of(want)))
    beam = generate(model, params, ids, mask, method="beam", num_beams=3, **common)
    np.testing.assert_array_equal(beam.beams, pad_after_eos(want["beam"], **ids_of(want)))
    np.testing.assert_allclose(beam.scores, want["beam_scores"], atol=1e-4)
