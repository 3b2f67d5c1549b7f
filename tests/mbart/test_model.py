"""mBART model: config mapping, incremental decoding, position-table limits, dropout sites."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.linen import meta

from zoo.mbart import model as mbart
from zoo.mbart.model import MBart, MBartConfig

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "mbart")

TINY = MBartConfig(
    vocab_size=40,
    d_model=16,
    num_heads=4,
    decoder_num_heads=2,
    mlp_dim=32,
    decoder_mlp_dim=24,
    encoder_layers=2,
    decoder_layers=2,
    max_length=12,
    dropout=0.0,
)


def _hf_config(variant: str) -> dict:
    with open(os.path.join(FIXTURES, variant, "config.json")) as f:
        return json.load(f)


def _init(config: MBartConfig, seed: int = 0):
    model = MBart(config)
    ids = jnp.ones((1, 3), jnp.int32)
    params = meta.unbox(jax.jit(model.init)(jax.random.key(seed), ids, ids, ids)["params"])
    # Larger-than-init values so every tensor visibly matters.
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    leaves = [
        (np.asarray(x) + 0.3 * rng.standard_normal(x.shape)).astype(np.float32) for x in leaves
    ]
    return model, jax.tree.unflatten(tree, leaves)


@pytest.fixture(scope="module")
def tiny():
    return _init(TINY)


# One compiled function per (model, shapes) for the whole module.
_apply = jax.jit(lambda model, params, *a: model.apply({"params": params}, *a), static_argnums=0)
_encode = jax.jit(mbart.encode, static_argnums=0)
_init_cache = jax.jit(mbart.init_cache, static_argnums=(0, 4))
_step = jax.jit(mbart.decode_step, static_argnums=0)


def _batch(config: MBartConfig, batch=3, src_len=7, tgt_len=6, seed=1):
    rng = np.random.default_rng(seed)
    src = rng.integers(3, config.vocab_size, (batch, src_len)).astype(np.int32)
    mask = np.arange(src_len)[None] < np.array([src_len, 4, 2][:batch])[:, None]
    tgt = rng.integers(3, config.vocab_size, (batch, tgt_len)).astype(np.int32)
    return np.where(mask, src, 1), mask.astype(np.int32), tgt


@pytest.mark.parametrize("variant", ["cc25", "m50"])
def test_to_hf_config_reproduces_every_field_of_transformers_config_json(variant):
    hf = _hf_config(variant)
    ours = MBartConfig.from_hf_config(hf).to_hf_config()
    differing = {
        k: (hf[k], ours.get(k, "<missing>"))
        for k in hf
        if k != "transformers_version" and ours.get(k, "<missing>") != hf[k]
    }
    assert differing == {}


def test_config_round_trips_through_hf_and_dict_forms():
    assert MBartConfig.from_hf_config(TINY.to_hf_config()) == TINY
    assert MBartConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY


def test_from_hf_config_reads_per_side_widths_and_relu():
    c = MBartConfig.from_hf_config(_hf_config("m50"))
    assert (c.num_heads, c.dec_heads, c.mlp_dim, c.dec_mlp_dim) == (4, 2, 32, 24)
    assert (c.activation, c.decoder_start_token_id, c.max_length) == ("relu", 2, 32)


def test_from_hf_config_uses_transformers_default_for_missing_scale_embedding():
    # transformers' MBartConfig defaults scale_embedding to False; released configs set true.
    assert MBartConfig.from_hf_config({"model_type": "mbart"}).scale_embedding is False


@pytest.mark.parametrize(
    "hf, needle",
    [
        ({"model_type": "bart"}, "post-LN"),
        ({"activation_function": "swish"}, "swish"),
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"encoder_attention_heads": 0}, r"encoder_attention_heads=0 \(int\) must be an integer"),
        ({"encoder_attention_heads": "16"}, r"encoder_attention_heads='16' \(str\)"),
        ({"d_model": 10**9}, r"d_model=1000000000"),
        ({"dropout": 2.0}, r"dropout=2\.0 must be a number from 0"),
        ({"max_position_embeddings": -5}, r"max_position_embeddings=-5"),
        ({"activation_function": ["gelu"]}, r"activation_function=\['gelu'\] is not supported"),
    ],
)
def test_from_hf_config_rejects_what_it_cannot_compute(hf, needle):
    with pytest.raises(ValueError, match=needle):
        MBartConfig.from_hf_config(hf)


def _teacher_forced(model, params, src, mask, tgt):
    return np.asarray(_apply(model, params, src, mask, tgt))


def test_cached_decoding_equals_teacher_forcing(tiny):
    model, params = tiny
    src, mask, tgt = _batch(TINY)
    want = _teacher_forced(model, params, src, mask, tgt)
    cache = _init_cache(model, params, _encode(model, params, src, mask), mask, TINY.max_length)
    got = []
    for t in range(tgt.shape[1]):
        logits, cache = _step(model, params, cache, tgt[:, t])
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.stack(got, 1), want, atol=1e-5, rtol=0)
    assert np.asarray(cache["index"]).tolist() == [tgt.shape[1]] * 3


def test_cache_leaves_have_leading_batch_dim(tiny):
    model, params = tiny
    src, mask, _ = _batch(TINY)
    cache = jax.eval_shape(
        lambda p, e, m: mbart.init_cache(model, p, e, m, 9),
        params,
        jax.ShapeDtypeStruct((3, 7, TINY.d_model), jnp.float32),
        mask,
    )
    shapes = [x.shape for x in jax.tree.leaves(cache)]
    assert len(shapes) == 2 + 4 * TINY.decoder_layers
    assert all(s[0] == 3 for s in shapes)
    assert cache["layers"][0]["self_k"].shape == (3, 2, 9, 8)  # decoder heads 2, head_dim 8
    assert cache["beam_shared"]["cross"][0]["k"].shape == (3, 2, 7, 8)


def _select_rows(keep_B, new, old):
    return jax.tree.map(
        lambda n, o: jnp.where(keep_B.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old
    )


def _gather_rows(cache, perm_B):
    return jax.tree.map(lambda x: x[perm_B], cache)


def test_cache_rows_advance_independently_and_survive_gathering(tiny):
    """Rows held back (their cache rows restored) and rows reordered mid-decode, as a beam
    search does, still give each example its teacher-forced logits."""
    model, params = tiny
    src, mask, tgt = _batch(TINY)
    want = _teacher_forced(model, params, src, mask, tgt)
    cache = _init_cache(model, params, _encode(model, params, src, mask), mask, TINY.max_length)
    step = _step
    length = tgt.shape[1]
    delay = np.array([0, 2, 1])  # example b starts feeding its target at global step delay[b]
    example_in_slot = np.arange(3)
    fed = np.zeros(3, int)  # per example
    got = np.zeros(want.shape, np.float32)
    for s in range(length + delay.max()):
        ex = example_in_slot
        active = (s >= delay[ex]) & (fed[ex] < length)
        tokens = tgt[ex, np.minimum(fed[ex], length - 1)]
        logits, new = step(model, params, cache, jnp.asarray(tokens))
        cache = _select_rows(jnp.asarray(active), new, cache)
        for slot in np.flatnonzero(active):
            got[ex[slot], fed[ex[slot]]] = np.asarray(logits[slot])
        fed[ex[active]] += 1
        if s == 3:
            perm = np.array([2, 0, 1])
            cache, example_in_slot = _gather_rows(cache, perm), example_in_slot[perm]
    assert (fed == length).all()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_init_cache_rejects_max_length_beyond_position_table(tiny):
    model, params = tiny
    src, mask, _ = _batch(TINY)
    encoded = np.zeros((3, 7, TINY.d_model), np.float32)
    with pytest.raises(ValueError, match=r"max_length=13 exceeds the position table"):
        mbart.init_cache(model, params, encoded, mask, TINY.max_length + 1)


def test_sequence_longer_than_position_table_raises_instead_of_clamping(tiny):
    model, params = tiny
    src, mask, tgt = _batch(TINY, src_len=TINY.max_length + 1, tgt_len=TINY.max_length + 1)
    with pytest.raises(ValueError, match=r"sequence length 13 exceeds the position table"):
        _encode(model, params, src, mask)
    with pytest.raises(ValueError, match=r"sequence length 13 exceeds the position table"):
        _apply(model, params, src[:, :5], mask[:, :5], tgt)


def test_activation_dropout_is_applied_after_the_ffn_activation(tiny):
    _, params = tiny
    src, mask, tgt = _batch(TINY)
    rng = jax.random.key(0)

    def run(config, deterministic):
        fn = jax.jit(
            lambda p: MBart(config).apply(
                {"params": p}, src, mask, tgt, deterministic=deterministic, rngs={"dropout": rng}
            )
        )
        return np.asarray(fn(params))

    with_dropout = dataclasses.replace(TINY, activation_dropout=0.5)
    evaluation = run(with_dropout, True)
    np.testing.assert_allclose(run(TINY, False), evaluation, atol=1e-6)
    assert np.abs(run(with_dropout, False) - evaluation).max() > 1e-3
