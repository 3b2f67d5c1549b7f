"""zoo.decode on a tiny mBART equals transformers 4.57.6 `generate`, token for token.

Fixture: tests/fixtures/generate/ (model/ and cases.json), written by
tests/fixtures/make_generate_fixtures.py; see its docstring for the cases.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo.decode import beam_search, greedy_search, max_length_for
from zoo.mbart import model as mbart
from zoo.mbart.convert import load_mbart

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "generate")
PAD, EOS = 1, 2
with open(os.path.join(FIXTURE, "cases.json")) as f:
    CASES = {c["name"]: c for c in json.load(f)["cases"]}


@pytest.fixture(scope="module")
def tiny_mbart():
    model, params = load_mbart(os.path.join(FIXTURE, "model"))
    return model, jax.tree.map(jnp.asarray, params)


# One output width for every case (the longest, max_length 24): a case's own budget is a
# traced max_len, so the cases share compiled searches.
STEPS = 23


@functools.partial(jax.jit, static_argnames=("model", "num_beams", "early_stopping"))
def translate(
    params,
    input_ids,
    attention_mask,
    start_id,
    forced_bos,
    max_len_B,
    length_penalty,
    *,
    model,
    num_beams,
    early_stopping,
):
    """Encode, size the cache for STEPS tokens, search: what a translation task does."""
    encoded = mbart.encode(model, params, input_ids, attention_mask)
    cache = mbart.init_cache(model, params, encoded, attention_mask, STEPS)
    step_fn = lambda tokens, c: mbart.decode_step(model, params, c, tokens)
    common = dict(
        start_ids_B=jnp.full((input_ids.shape[0],), start_id, jnp.int32),
        max_len=max_len_B,
        max_steps=STEPS,
        eos_id=EOS,
        pad_id=PAD,
        forced_bos_id=forced_bos,
        forced_eos_id=model.config.forced_eos_token_id,
    )
    if num_beams == 1:
        return greedy_search(step_fn, cache, **common)
    return beam_search(
        step_fn,
        cache,
        beam_size=num_beams,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        **common,
    )


def run_case(tiny_mbart, case, max_len_B):
    model, params = tiny_mbart
    kw = case["kwargs"]
    out = translate(
        params,
        jnp.asarray(case["input_ids"], jnp.int32),
        jnp.asarray(case["attention_mask"], jnp.int32),
        kw["decoder_start_token_id"],
        kw.get("forced_bos_token_id"),
        jnp.asarray(max_len_B, jnp.int32),
        jnp.float32(kw.get("length_penalty", 1.0)),
        model=model,
        num_beams=kw["num_beams"],
        early_stopping=kw.get("early_stopping", False),
    )
    return jax.tree.map(np.asarray, out)


def hf_padded(sequences, batch, beams):
    """HF rows [batch*beams, L] (cropped to the longest) -> [batch, beams, STEPS], pad-filled."""
    got = np.asarray(sequences).reshape(batch * beams, -1)
    seqs = np.full((batch * beams, STEPS), PAD, np.int64)
    seqs[:, : got.shape[1]] = got
    return seqs.reshape(batch, beams, STEPS)


GREEDY = [n for n in CASES if n.startswith("greedy")]
BEAM = [n for n in CASES if n.startswith("beam")]


@pytest.mark.parametrize("name", GREEDY)
def test_greedy_equals_transformers_generate(tiny_mbart, name):
    case = CASES[name]
    batch = len(case["input_ids"])
    # HF's max_length counts the decoder start token; our max_len does not.
    got = run_case(tiny_mbart, case, [case["kwargs"]["max_length"] - 1] * batch)
    np.testing.assert_array_equal(got, hf_padded(case["sequences"], batch, 1)[:, 0])


@pytest.mark.parametrize("name", BEAM)
def test_beam5_sequences_and_scores_equal_transformers_generate(tiny_mbart, name):
    case = CASES[name]
    batch, beams = len(case["input_ids"]), case["kwargs"]["num_beams"]
    seqs, scores = run_case(tiny_mbart, case, [case["kwargs"]["max_length"] - 1] * batch)
    np.testing.assert_array_equal(seqs, hf_padded(case["sequences"], batch, beams))
    want_scores = np.asarray(case["scores"]).reshape(batch, beams)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["greedy", "beam5"])
def test_per_row_budgets_in_one_batch_equal_rows_generated_alone(tiny_mbart, kind):
    case = CASES[f"per_row_{kind}"]
    batch, beams = len(case["input_ids"]), case["kwargs"]["num_beams"]
    lengths = np.asarray(case["attention_mask"]).sum(-1)
    budgets = np.asarray(max_length_for(lengths, 1.2, 3, 64))
    assert budgets.tolist() == case["max_new_tokens"]
    want = np.stack([hf_padded(rows, 1, beams)[0] for rows in case["sequences"]])
    out = run_case(tiny_mbart, case, budgets)
    if kind == "greedy":
        np.testing.assert_array_equal(out, want[:, 0])
    else:
        np.testing.assert_array_equal(out[0], want)
        np.testing.assert_allclose(out[1], np.asarray(case["scores"]), rtol=1e-4, atol=1e-5)
    # The budgets bind: some row ends at its own max_len with the forced </s>.
    assert any(want[row, 0, budgets[row] - 1] == EOS for row in range(batch))
    assert budgets.max() < STEPS and (want[np.arange(batch), :, budgets] == PAD).all()
