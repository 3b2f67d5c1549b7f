"""The peptide model: causality, non-causal NAR, the three modes, the gradient block, the cache.

Kept fast on a small CPU: parameters are drawn with NumPy on the abstract init (no compiled
init), every model call is jitted once and reused, with XLA's cheap backend settings
(`FAST_COMPILE`, 3-4x faster compiles, same float semantics), and the stacks have one layer
each. The Casanovo parity tests (tests/pretrained/test_casanovo.py) cover two-layer stacks, the
AR-only cache and compiled `init`-free parameters from a real checkpoint.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util
from flax.linen import meta

from zoo.nn import cache as search
from zoo.peptide import model as peptide
from zoo.peptide.model import PeptideConfig, PeptideModel

TINY = PeptideConfig(
    mode="hybrid",
    n_residues=27,
    d_model=16,
    n_heads=2,
    d_ff=32,
    encoder_layers=1,
    ar_layers=1,
    nar_layers=1,
    nar_slots=8,
)
B, P, T = 3, 7, 6
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)
WAVELENGTHS = {
    "mz_encoder": peptide.MZ_WAVELENGTHS,
    "int_encoder": peptide.INTENSITY_WAVELENGTHS,
    "mass_encoder": peptide.MASS_WAVELENGTHS,
}


def inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    mz = np.sort(rng.uniform(50, 2500, (B, P)), axis=1).astype(np.float32)
    intensity = rng.uniform(0.01, 1, (B, P)).astype(np.float32)
    mz[0, 5:], intensity[0, 5:] = 0, 0  # padding peaks
    mass = rng.uniform(600, 3000, B).astype(np.float32)
    charge = np.array([2, 3, 1], np.int32)
    tokens = rng.integers(1, TINY.n_residues + 2, (B, T)).astype(np.int32)
    tokens[1, 4:] = 0  # a shorter peptide
    tokens[2, 2] = 0  # a pad inside a row: masked as a key by `ar` and by the cache alike
    return mz, intensity, mass, charge, tokens


def flat(tree):
    return traverse_util.flatten_dict(meta.unbox(tree), sep="/")


def random_params(model: PeptideModel, seed: int = 0) -> dict:
    """Parameters of the model's shapes drawn with NumPy; wavelengths as `init` makes them."""
    boxed = jax.eval_shape(model.init, jax.random.key(0), *inputs())["params"]
    rng = np.random.default_rng(seed)
    out = {}
    for key, leaf in flat(boxed).items():
        if key.endswith("/terms"):
            owner = key.split("/")[-2]
            low, high = WAVELENGTHS.get(owner, peptide.POSITION_WAVELENGTHS)
            out[key] = peptide.float_encoder_terms(leaf.shape[0], low, high)
        elif key.endswith("/scale"):
            out[key] = 1 + 0.1 * rng.standard_normal(leaf.shape).astype(np.float32)
        else:
            out[key] = 0.3 * rng.standard_normal(leaf.shape).astype(np.float32)
    return traverse_util.unflatten_dict(out, sep="/")


@pytest.fixture(scope="module")
def hybrid():
    """(model, params, jitted forward(params, tokens) -> outputs dict) of TINY."""
    model = PeptideModel(TINY)
    mz, intensity, mass, charge, _ = inputs()
    forward = jit(lambda p, toks: model.apply({"params": p}, mz, intensity, mass, charge, toks))
    return model, random_params(model), forward


def test_every_parameter_has_logical_axis_names_and_numpy_params_fit(hybrid):
    model, params, _ = hybrid
    boxed = jax.eval_shape(model.init, jax.random.key(0), *inputs())["params"]
    leaves = traverse_util.flatten_dict(boxed, sep="/")
    for key, leaf in leaves.items():
        assert isinstance(leaf, nn.LogicallyPartitioned), key
        assert len(leaf.names) == len(leaf.value.shape), key
    shapes = {k: leaf.value.shape for k, leaf in leaves.items()}
    assert {k: v.shape for k, v in flat(params).items()} == shapes


def test_ar_cache_keeps_encoder_states_where_beam_search_never_reorders_them(hybrid):
    """The AR cache holds the encoder memory (and NAR states) under zoo.nn.cache.BEAM_SHARED,
    so a beam reorder hands that entry back as it is instead of copying it every step."""
    model, params, forward = hybrid
    mz, intensity, mass, charge, tokens = inputs()
    out = forward(params, tokens)
    _, cache = model.apply(
        {"params": params},
        mass,
        charge,
        out["memory"],
        out["memory_mask"],
        out["nar_states"],
        T,
        method="ar_init_cache",
    )
    assert search.BEAM_SHARED in cache
    cache = search.repeat_rows(cache, 2)
    moved = search.gather_rows(cache, jnp.asarray([[1, 0]] * B))
    assert moved[search.BEAM_SHARED] is cache[search.BEAM_SHARED]
    assert moved["index"] is not cache["index"]


@pytest.mark.parametrize("mode", ["ar", "nar", "hybrid"])
def test_each_mode_builds_only_its_parts_and_output_shapes(mode):
    """Abstract init and run (shapes only; the hybrid and AR models also run for real below
    and in the Casanovo parity tests)."""
    config = dataclasses.replace(TINY, mode=mode)
    model = PeptideModel(config)
    args = inputs()
    variables = jax.eval_shape(model.init, jax.random.key(1), *args)
    out = jax.eval_shape(model.apply, variables, *args)
    parts = {k.split("_")[0] for k in flat(variables["params"])}
    want = {"ar": {"encoder", "ar"}, "nar": {"encoder", "nar"}, "hybrid": {"encoder", "ar", "nar"}}
    assert parts == want[mode]
    shapes = {k: v.shape for k, v in out.items()}
    expected = {"memory": (B, P + 1, config.d_model), "memory_mask": (B, P + 1)}
    if mode != "nar":
        expected["ar_logits"] = (B, T + 1, config.n_residues + 2)
    if mode != "ar":
        expected["nar_logits"] = (B, config.nar_slots, config.n_residues + 1)
        expected["nar_states"] = (B, config.nar_slots, config.d_model)
    assert shapes == expected


def test_hybrid_runs_and_masks_padding_peaks(hybrid):
    _, params, forward = hybrid
    out = forward(params, inputs()[-1])
    assert all(np.isfinite(out[k]).all() for k in ("ar_logits", "nar_logits"))
    np.testing.assert_array_equal(out["memory_mask"][0], [True] * 6 + [False] * 2)
    assert out["memory_mask"][1:].all()


def test_ar_logits_at_step_t_ignore_tokens_after_t(hybrid):
    _, params, forward = hybrid
    tokens = inputs()[-1]
    base = np.asarray(forward(params, tokens)["ar_logits"])
    for t in range(T):
        changed = tokens.copy()
        changed[:, t:] = (changed[:, t:] % TINY.n_residues) + 1  # different, never pad
        out = np.asarray(forward(params, changed)["ar_logits"])
        np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
        assert np.abs(out[:, t + 1] - base[:, t + 1]).max() > 1e-4  # the test can fail


def test_nar_slots_attend_to_every_other_slot(hybrid):
    """Not causal: perturbing the last slot's query moves every slot's logits, the first too."""
    model, params, forward = hybrid
    mz, intensity, mass, charge, tokens = inputs()
    out = forward(params, tokens)
    memory, mask = out["memory"], out["memory_mask"]

    @jit
    def nar_logits(p, delta):
        def perturb_last_slot(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.module.name == "nar_positions":
                out = out.at[-1].add(delta)
            return out

        with nn.intercept_methods(perturb_last_slot):
            return model.apply({"params": p}, memory, mask, mass, charge, method="nar")[1]

    base, moved = nar_logits(params, 0.0), nar_logits(params, 1.0)
    np.testing.assert_allclose(base, out["nar_logits"], atol=1e-6)
    delta = np.abs(moved - base).max(axis=(0, 2))
    assert (delta > 1e-5).all(), delta


def test_gradient_block_ar_loss_gives_exactly_zero_gradient_to_the_nar_decoder(hybrid):
    """jax.grad of the AR loss (the full hybrid forward) w.r.t. every NAR parameter and every
    sinusoid wavelength is exactly 0, while the output bias next to them gets a gradient.

    Only these parameters are differentiated (the rest are closed over): the property is the
    same and the compile is a fraction of a full backward pass.
    """
    model, params, _ = hybrid
    mz, intensity, mass, charge, tokens = inputs()
    everything = flat(params)
    wrt = [k for k in everything if k.startswith("nar_") or k.endswith("/terms")]
    wrt.append("ar_output/bias")
    fixed = {k: v for k, v in everything.items() if k not in wrt}

    def ar_loss(sub):
        p = traverse_util.unflatten_dict({**fixed, **sub}, sep="/")
        out = model.apply({"params": p}, mz, intensity, mass, charge, tokens)
        return -jax.nn.log_softmax(out["ar_logits"])[:, :-1].max(-1).sum()

    grads = jit(jax.grad(ar_loss))({k: everything[k] for k in wrt})
    nar = [k for k in grads if k.startswith("nar_")]
    terms = [k for k in grads if k.endswith("/terms")]
    assert len(nar) > 20 and len(terms) == 7
    assert all(not np.any(grads[k]) for k in nar + terms)
    assert np.any(grads["ar_output/bias"])


def test_ar_cross_attention_reads_nar_states_without_passing_gradients_back(hybrid):
    """d(AR loss)/d(nar_states) is exactly 0 although the logits depend on the states, while
    the encoder output (read by the same cross-attention) gets a gradient."""
    model, params, forward = hybrid
    _, _, mass, charge, tokens = inputs()
    out = forward(params, tokens)

    def ar_logits(states, memory):
        return model.apply(
            {"params": params},
            tokens,
            mass,
            charge,
            memory,
            out["memory_mask"],
            states,
            method="ar",
        )

    def loss(states, memory):
        return -jax.nn.log_softmax(ar_logits(states, memory)).max(-1).sum()

    d_states, d_memory = jit(jax.grad(loss, argnums=(0, 1)))(out["nar_states"], out["memory"])
    assert not np.any(d_states) and np.any(d_memory)
    moved = jit(ar_logits)(out["nar_states"] + 1.0, out["memory"])
    assert np.abs(moved - out["ar_logits"]).max() > 1e-3  # the states are read


def test_cached_decoding_equals_teacher_forcing_with_beam_reordering(hybrid):
    """Hybrid cache: 3 spectra x 2 beams; rows are repeated, stepped, reordered with
    search.gather_rows mid-way and stepped on; every row's logits equal `ar` teacher-forced
    on that row's token history (1e-5), pads inside the history included."""
    model, params, forward = hybrid
    mz, intensity, mass, charge, tokens = inputs()
    k = 2
    out = forward(params, tokens)
    memory, mask, states = out["memory"], out["memory_mask"], out["nar_states"]
    init = jit(
        lambda p: model.apply(
            {"params": p}, mass, charge, memory, mask, states, T, method="ar_init_cache"
        )
    )
    step = jit(lambda p, toks, cache: model.apply({"params": p}, toks, cache, method="ar_step"))
    rng = np.random.default_rng(5)
    feed = rng.integers(1, TINY.n_residues + 2, (B * k, T)).astype(np.int32)
    feed[3, 1] = 0
    parents = np.array([[1, 1], [1, 0], [0, 1]])
    logits, cache = init(params)
    cache = search.repeat_rows(cache, k)
    got = [search.repeat_rows(logits, k)]
    history = np.zeros((B * k, 0), np.int32)
    for t in range(T):
        if t == 3:  # beam k of item b now continues beam parents[b, k]
            cache = search.gather_rows(cache, jnp.asarray(parents))
            rows = (np.arange(B)[:, None] * k + parents).reshape(-1)
            history, got = history[rows], [g[rows] for g in got]
        logits, cache = step(params, feed[:, t], cache)
        history = np.concatenate([history, feed[:, t : t + 1]], 1)
        got.append(logits)
    for leaf in jax.tree.leaves(cache):
        assert leaf.shape[0] == B * k
    np.testing.assert_array_equal(cache["index"], T + 1)
    rep = lambda x: np.repeat(np.asarray(x), k, axis=0)  # noqa: E731
    forced = jit(
        lambda p, toks: model.apply(
            {"params": p},
            toks,
            rep(mass),
            rep(charge),
            rep(memory),
            rep(mask),
            rep(states),
            method="ar",
        )
    )(params, history)
    np.testing.assert_allclose(np.stack(got, 1), forced, atol=1e-5, rtol=0)


def test_float_encoder_is_depthcharge_formula_with_exact_division_under_jit():
    terms = peptide.float_encoder_terms(10, 0.001, 10000)
    d_sin = 5
    expected = [0.001 / (2 * math.pi) * 1e7 ** (i / (d_sin - 1)) for i in range(d_sin)] * 2
    np.testing.assert_allclose(terms, expected, rtol=1e-7)
    # Phases up to ~1.6e7 rad: sin(fl32(x / t)) needs a true division, not x * (1 / t).
    x = np.random.default_rng(0).uniform(50, 2500, (4, 64)).astype(np.float32)
    enc = peptide.FloatEncoder(10, 0.001, 10000)
    params = enc.init(jax.random.key(0), x)
    np.testing.assert_array_equal(meta.unbox(params)["params"]["terms"], terms)
    got = np.asarray(jax.jit(enc.apply)(params, x))  # default compiler options, as in use
    phase = (x[..., None] / terms).astype(np.float64)  # float32 division, as torch
    want = np.concatenate([np.sin(phase[..., :d_sin]), np.cos(phase[..., d_sin:])], -1)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_dropout_acts_only_when_not_deterministic(hybrid):
    _, params, _ = hybrid
    model = PeptideModel(dataclasses.replace(TINY, dropout=0.3))
    mz, intensity = inputs()[:2]
    encode = jit(
        lambda p, det, key: model.apply(
            {"params": p}, mz, intensity, deterministic=det, rngs={"dropout": key}, method="encode"
        )[0],
        static_argnums=1,
    )
    a, b = encode(params, True, jax.random.key(1)), encode(params, True, jax.random.key(2))
    c = encode(params, False, jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert np.abs(c - a).max() > 1e-3


def test_errors_name_the_missing_part():
    args = inputs()
    mz, intensity, mass, charge, tokens = args
    memory = jnp.zeros((B, P + 1, TINY.d_model))
    mask = jnp.ones((B, P + 1), bool)
    model = PeptideModel(TINY)
    with pytest.raises(ValueError, match="pass nar_states"):
        jax.eval_shape(
            functools.partial(model.init, method="ar"),
            jax.random.key(0),
            tokens,
            mass,
            charge,
            memory,
            mask,
        )
    ar_only = PeptideModel(dataclasses.replace(TINY, mode="ar"))
    with pytest.raises(ValueError, match="has no NAR decoder"):
        jax.eval_shape(
            functools.partial(ar_only.init, method="nar"),
            jax.random.key(0),
            memory,
            mask,
            mass,
            charge,
        )
    with pytest.raises(ValueError, match="not divisible"):
        jax.eval_shape(
            PeptideModel(dataclasses.replace(TINY, n_heads=5)).init, jax.random.key(0), *args
        )
    with pytest.raises(ValueError, match="model.mode"):
        jax.eval_shape(
            PeptideModel(dataclasses.replace(TINY, mode="ctc")).init, jax.random.key(0), *args
        )


def test_count_flops_grows_with_the_parts_of_each_mode():
    config = PeptideConfig()
    flops = {
        m: peptide.count_flops(dataclasses.replace(config, mode=m), 32, 150, 31)
        for m in ("ar", "nar", "hybrid")
    }
    assert 0 < flops["ar"] < flops["hybrid"] and 0 < flops["nar"] < flops["hybrid"]
    # The encoder alone: 9 layers x 151 positions x (4 d^2 + 2 d f) multiply-adds, x2 x3.
    d, f = 512, 1024
    encoder = 3 * 2 * 32 * 9 * 151 * (4 * d * d + 2 * d * f)
    assert encoder < flops["ar"] < 3 * encoder
