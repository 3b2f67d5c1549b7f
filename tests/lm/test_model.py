"""zoo.lm.model on its own (no fixtures): cached decoding, masks, packing, axes, config."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from zoo.lm.model import LM, LMConfig, count_flops, count_params, decode_step, prefill

TINY = LMConfig(
    vocab_size=97, hidden_size=48, num_layers=2, num_heads=6, num_kv_heads=2,
    intermediate_size=64, rope_scaling={"rope_type": "linear", "factor": 2.0},
)  # fmt: skip
AXES = {"batch", "length", "embed", "heads", "kv", "mlp", "vocab"}


@functools.cache
def _init(config, seed=0):
    """(model, variables) with random NumPy parameters of `init`'s shapes: `model.init` itself
    compiles one program per parameter (seconds on a shared CPU)."""
    model = LM(config)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
    rng = np.random.default_rng(seed)
    draw = lambda x: jnp.asarray(rng.normal(size=x.shape).astype(np.float32) * 0.3)  # noqa: E731
    return model, jax.tree.map(draw, nn.unbox(shapes))


def _ids(shape, vocab, seed=1):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


def test_cached_decoding_equals_teacher_forcing():
    config = dataclasses.replace(TINY, tie_word_embeddings=True, sliding_window=3)
    model, variables = _init(config)
    params = variables["params"]
    ids = _ids((2, 9), config.vocab_size)
    mask = jnp.ones((2, 9), jnp.int32).at[1, :3].set(0)  # row 1 left-padded
    full = jax.jit(model.apply)({"params": params}, ids, mask)
    prompt = 4
    logits, cache = jax.jit(prefill, static_argnums=(0, 4))(
        model, params, ids[:, :prompt], mask[:, :prompt], 12
    )
    np.testing.assert_allclose(logits, full[:, prompt - 1], atol=1e-5)
    step = jax.jit(decode_step, static_argnums=0)
    for t in range(prompt, 9):
        logits, cache = step(model, params, cache, ids[:, t])
        np.testing.assert_allclose(logits, full[:, t], atol=1e-5)


def test_padding_left_or_right_and_packing_do_not_change_real_positions():
    """One batch: a packed row (segments of 5 and 3, then pads), each segment alone
    right-padded, and the first segment left-padded."""
    model, variables = _init(TINY)
    a, b = _ids((5,), TINY.vocab_size, 2), _ids((3,), TINY.vocab_size, 3)
    z = lambda n: jnp.zeros((n,), jnp.int32)  # noqa: E731
    ids = jnp.stack([
        jnp.concatenate([a, b, z(2)]), jnp.concatenate([a, z(5)]),
        jnp.concatenate([b, z(7)]), jnp.concatenate([z(5), a]),
    ])  # fmt: skip
    segments = jnp.asarray([
        [1] * 5 + [2] * 3 + [0] * 2, [1] * 5 + [0] * 5, [1] * 3 + [0] * 7, [0] * 5 + [1] * 5,
    ])  # fmt: skip
    positions = jnp.asarray([
        [0, 1, 2, 3, 4, 0, 1, 2, 0, 0], list(range(10)), list(range(10)), [0] * 5 + [0, 1, 2, 3, 4],
    ])  # fmt: skip
    out = jax.jit(model.apply)(variables, ids, positions=positions, segment_ids=segments)
    np.testing.assert_allclose(out[0, :5], out[1, :5], atol=1e-5)
    np.testing.assert_allclose(out[0, 5:8], out[2, :3], atol=1e-5)
    np.testing.assert_allclose(out[3, 5:], out[1, :5], atol=1e-5)
    # The default positions (cumsum of the mask) give the same for left padding.
    default = jax.jit(model.apply)(variables, ids[3:], segments[3:] != 0)
    np.testing.assert_allclose(default[0, 5:], out[1, :5], atol=1e-5)


def test_every_parameter_has_logical_axes_and_the_documented_paths():
    for tied in (False, True):
        config = dataclasses.replace(TINY, tie_word_embeddings=tied, attention_bias=True)
        variables = jax.eval_shape(LM(config).init, jax.random.PRNGKey(0), jnp.zeros((1, 4), int))
        boxed = jax.tree.leaves(
            variables["params"], is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)
        )
        assert all(isinstance(x, nn.LogicallyPartitioned) for x in boxed)
        assert all(set(x.names) <= AXES for x in boxed)
        assert all(len(x.names) == len(x.value.shape) for x in boxed)
        params = nn.unbox(variables["params"])
        assert params["embed_tokens"]["embedding"].shape == (97, 48)
        assert ("lm_head" in params) == (not tied)
        if not tied:
            assert params["lm_head"]["kernel"].shape == (48, 97)
        attn = params["layers_0"]["self_attn"]
        assert attn["q_proj"]["kernel"].shape == (48, 6, 8)
        assert attn["k_proj"]["bias"].shape == (2, 8)
        assert "bias" not in attn["o_proj"]
        assert sum(x.size for x in jax.tree.leaves(params)) == count_params(config)


def test_remat_gives_the_same_gradients():
    one_layer = dataclasses.replace(TINY, num_layers=1)
    model, variables = _init(one_layer)
    remat = LM(dataclasses.replace(one_layer, remat="full"))
    ids = _ids((2, 7), TINY.vocab_size)

    def loss(m, p):
        return jnp.mean(m.apply({"params": p}, ids) ** 2)

    params = variables["params"]
    g1 = jax.jit(jax.grad(lambda p: loss(model, p)))(params)
    g2 = jax.jit(jax.grad(lambda p: loss(remat, p)))(params)
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(x, y, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    config = dataclasses.replace(TINY, dtype="bfloat16", num_layers=1)
    model = LM(config)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 4), int))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(variables)))
    _, f32 = _init(dataclasses.replace(TINY, num_layers=1))
    assert jax.jit(model.apply)(f32, _ids((1, 5), 97)).dtype == jnp.float32


@pytest.mark.parametrize(
    "change,message",
    [
        ({"num_kv_heads": 4}, "not a multiple of model.num_kv_heads"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_type='yarn'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "lacks 'low_freq_factor'"),
        ({"sliding_window": 0}, "model.sliding_window=0"),
        ({"hidden_size": 50, "head_dim": None}, "not divisible by model.num_heads"),
    ],
)
def test_validate_names_the_bad_field(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        dataclasses.replace(TINY, **change).validate()


def test_config_dict_round_trip_and_unknown_fields():
    assert LMConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown LMConfig fields"):
        LMConfig.from_dict({**TINY.to_dict(), "n_layer": 3})


def test_count_flops_is_six_n_tokens_plus_attention():
    c = TINY
    n = count_params(c) - c.vocab_size * c.hidden_size - (2 * c.num_layers + 1) * c.hidden_size
    attention = 3 * c.num_layers * 4 * 2 * 16 * 16 * c.num_heads * c.head_size
    assert count_flops(c, 2, 16) == pytest.approx(6 * n * 32 + attention)
