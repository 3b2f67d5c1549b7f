"""The train step's pieces: schedules, loss, accumulation, remat, precision, frozen masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from zoo import tasks
from zoo.train import config as zconfig
from zoo.train import mesh as zmesh
from zoo.train import optim as zoptim
from zoo.train import step as zstep
from zoo.train.losses import label_smoothed_cross_entropy


def tiny_config(tfds_dir, **overrides):
    c = zconfig.load("recipes/smoke.py:tiny")
    zconfig.apply_overrides(
        c,
        [f"--config.task.data_dir={tfds_dir}"]
        + [f"--config.{k}={v}" for k, v in overrides.items()],
    )
    return c


def _setup(config, mesh_shape=(8, 1, 1)):
    mesh_cfg = dict(zip(zmesh.MESH_AXES, mesh_shape))
    mesh = zmesh.make_mesh(mesh_cfg)
    task = tasks.get_task(config)
    tx, schedule = zoptim.make_optimizer(config.optim, config.train.num_steps)
    return task, zstep.build(task, config, mesh, tx, schedule)


def _batch(task, setup, seed=0):
    ds = task.dataset(
        "train", seed=seed, process_index=0, process_count=1, batch_multiple=8, train=True
    )
    local = next(iter(ds))
    return {
        k: jax.make_array_from_process_local_data(setup.batch_sharding[k], v)
        for k, v in local.items()
    }


def _optim_config(**kw):
    c = ml_collections.ConfigDict(
        dict(
            learning_rate=1.0,
            schedule="cosine",
            warmup_steps=10,
            end_learning_rate_ratio=0.1,
            power=2.0,
            b1=0.9,
            b2=0.98,
            eps=1e-9,
            weight_decay=0.0,
            clip_norm=0.0,
            grad_accum_steps=1,
            frozen=(),
        )
    )
    c.update(kw)
    return c


@pytest.mark.parametrize("name", zoptim.SCHEDULES)
def test_schedules_warm_up_linearly_then_follow_their_shape(name):
    s = zoptim.make_schedule(_optim_config(schedule=name), total_steps=110)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    end = float(s(110))
    expected_end = {
        "constant": 1.0,
        "cosine": 0.1,
        "linear": 0.1,
        "polynomial": 0.1,
        "inverse_sqrt": (10 / 110) ** 0.5,
    }[name]
    assert end == pytest.approx(expected_end, rel=1e-5)


def test_label_smoothing_matches_fairseq_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(2, 3))
    weights = np.array([[1, 1, 0], [1, 1, 1]])
    eps = 0.2
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    smooth = -logp.sum(-1)
    eps_i = eps / 6
    want = (((1 - eps - eps_i) * nll + eps_i * smooth) * weights).sum()
    loss, nll_sum = label_smoothed_cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), eps
    )
    assert float(loss) == pytest.approx(want, rel=1e-5)
    assert float(nll_sum) == pytest.approx((nll * weights).sum(), rel=1e-5)


def _one_step(config, mesh_shape=(8, 1, 1)):
    task, setup = _setup(config, mesh_shape)
    state = setup.init(jax.random.PRNGKey(0))
    batch = _batch(task, setup)
    new_state, m = setup.train_step(state, batch, jax.random.PRNGKey(1))
    return jax.device_get(new_state.params), jax.device_get(m)


def test_gradient_accumulation_equals_the_full_batch(tfds_dir):
    full_params, full = _one_step(tiny_config(tfds_dir))
    acc_params, acc = _one_step(tiny_config(tfds_dir, **{"optim.grad_accum_steps": 2}))
    assert float(acc["loss"]) == pytest.approx(float(full["loss"]), abs=1e-6)
    assert float(acc["grad_norm"]) == pytest.approx(float(full["grad_norm"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(acc_params), jax.tree.leaves(full_params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_remat_changes_memory_not_numbers(tfds_dir):
    plain_params, plain = _one_step(tiny_config(tfds_dir))
    remat_params, remat = _one_step(tiny_config(tfds_dir, **{"model.remat": "full"}))
    assert float(remat["loss"]) == pytest.approx(float(plain["loss"]), abs=1e-6)
    for a, b in zip(jax.tree.leaves(remat_params), jax.tree.leaves(plain_params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bf16_compute_keeps_f32_params_and_close_loss(tfds_dir):
    f32_params, f32 = _one_step(tiny_config(tfds_dir))
    bf_params, bf = _one_step(tiny_config(tfds_dir, **{"model.dtype": "bfloat16"}))
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(bf_params))
    assert float(bf["loss"]) == pytest.approx(float(f32["loss"]), abs=0.05)
    assert float(bf["loss"]) != float(f32["loss"])  # the compute dtype really changed


def test_frozen_parameters_do_not_move(tfds_dir):
    config = tiny_config(
        tfds_dir, **{"optim.frozen": "('^encoder_', '^shared/')", "optim.warmup_steps": 0}
    )
    task, setup = _setup(config)
    state = setup.init(jax.random.PRNGKey(0))
    before = jax.device_get(state.params)
    new_state, _ = setup.train_step(state, _batch(task, setup), jax.random.PRNGKey(1))
    after = jax.device_get(new_state.params)
    moved = {
        k
        for k in after
        if not np.array_equal(
            np.concatenate([x.ravel() for x in jax.tree.leaves(after[k])]),
            np.concatenate([x.ravel() for x in jax.tree.leaves(before[k])]),
        )
    }
    assert moved and all(not k.startswith(("encoder_", "shared")) for k in moved)
    assert "decoder_layer_0" in moved


def test_frozen_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match="matches no parameter"):
        zoptim.param_labels({"a": {"kernel": np.zeros(2)}}, ["^decoder"])


def test_parameters_are_created_sharded_by_the_rules(tfds_dir):
    task, setup = _setup(tiny_config(tfds_dir), mesh_shape=(2, 2, 2))
    state = setup.init(jax.random.PRNGKey(0))
    fc1 = state.params["encoder_layer_0"]["ffn"]["fc1"]["kernel"]  # ('embed', 'mlp')
    assert fc1.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    emb = state.params["shared"]["embedding"]  # ('vocab', 'embed')
    assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    # Adam moments follow their parameters.
    mu = jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
    assert any(getattr(x, "mu", None) is not None for x in mu)


def test_remat_with_dropout_trains(tfds_dir):
    # Dropout needs `deterministic` static inside nn.remat; a traced flag fails to trace.
    config = tiny_config(
        tfds_dir, **{"model.remat": "full", "model.dropout": 0.1, "model.attention_dropout": 0.1}
    )
    _, metrics = _one_step(config)
    assert np.isfinite(float(metrics["loss"]))
