"""The packed piece encoder equals the [V, max_len, H] one it replaced; chunked prediction
equals one pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from tests.zett.reference_hypernet import ReferenceHypernet
from zoo.zett import encoder
from zoo.zett import hypernet as zett


def _setup(V=13, S=60, seed=0, max_pieces=7, **fields):
    fields = {"num_layers": 2, **fields}
    config = zett.HypernetConfig(source_vocab_size=S, embed_dim=16, **fields)
    rng = np.random.default_rng(seed)
    E = rng.normal(0.3, 2.0, (S, 16)).astype(np.float32)
    E_out = rng.normal(0.0, 1.0, (S, 16)).astype(np.float32) if config.separate_out else None
    lengths = rng.integers(1, max_pieces + 1, V)
    surface = rng.integers(0, S + 300, (V, 7)).astype(np.int32)  # some fallback (byte) ids
    surface[np.arange(7)[None] >= lengths[:, None]] = config.pad_id
    surface[0, 0] = config.pad_id  # a first piece equal to pad still counts as a piece
    return config, surface, E, E_out


def _init(model, surface, E, E_out=None):
    init = jax.jit(lambda s, e, o: model.init(jax.random.PRNGKey(1), s, e, o)["params"])
    return init(surface[:2], E, E_out)  # two rows: the parameters do not depend on V


def _outputs_and_grads(model, params, surface, E, E_out):
    """(outputs, gradient of a loss on all of them w.r.t. params), in one jit."""

    def loss(p):
        out = model.apply({"params": p}, surface, E, E_out)
        return sum(jnp.sum(jnp.sin(v)) for v in out.values() if v is not None), out

    return jax.jit(jax.grad(loss, has_aux=True))(params)[::-1]


@pytest.mark.parametrize(
    "V, S, max_pieces, fields",
    [
        (13, 60, 2, {}),  # the first packed layout (a quarter of the slots) holds the pieces
        (13, 60, 7, {"packed_pieces": (0.1, 0.8), "num_layers": 1}),  # the second one does
        (13, 60, 7, {"packed_pieces": (0.05,)}),  # none does: the padded branch runs
        # Fewer table rows than pieces: each table row is projected once, then looked up.
        (40, 20, 3, {"separate_out": True, "num_fallback": 4}),
    ],
)
def test_packed_encoder_equals_the_padded_reference_with_the_same_params(V, S, max_pieces, fields):
    config, surface, E, E_out = _setup(V=V, S=S, max_pieces=max_pieces, **fields)
    new, old = zett.Hypernet(config), ReferenceHypernet(config)
    params = nn.unbox(_init(new, surface, E, E_out))
    old_params = nn.unbox(_init(old, surface, E, E_out))
    # The same tree (names, shapes) and, for one seed, the same initial values.
    assert jax.tree.structure(params) == jax.tree.structure(old_params)
    jax.tree.map(np.testing.assert_array_equal, params, old_params)
    if V == 40:
        assert S + config.num_fallback < config.packed_rows(V)[0]
    got, g_new = _outputs_and_grads(new, params, surface, E, E_out)
    want, g_old = _outputs_and_grads(old, params, surface, E, E_out)
    for key in want:
        if want[key] is None:
            assert got[key] is None
        else:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    for path, a, b in zip(
        jax.tree_util.tree_flatten_with_path(g_old)[0], *map(jax.tree.leaves, (g_new, g_old))
    ):
        # Sums in another order (scatter-adds onto table rows): tolerance relative to the leaf.
        atol = 1e-5 * float(np.abs(b).max()) + 1e-9
        np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=atol, err_msg=jax.tree_util.keystr(path[0])
        )


def test_packed_layout_round_trips_the_real_pieces():
    valid = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]], bool)
    layout = encoder.packed_layout(jnp.asarray(valid), rows=9)
    slots = np.arange(12).reshape(3, 4, 1) + 100
    pieces = layout.to_pieces(jnp.asarray(slots))
    np.testing.assert_array_equal(pieces[:7, 0], [100, 101, 104, 108, 109, 110, 111])
    np.testing.assert_array_equal(pieces[7:, 0], [100, 100])  # spare rows: a real piece
    back = np.asarray(layout.to_slots(pieces))
    np.testing.assert_array_equal(back[valid], slots[valid])
    np.testing.assert_array_equal(layout.first(pieces)[:, 0], [100, 104, 108])


def test_chunked_prediction_equals_one_pass():
    config, surface, E, _ = _setup(V=37, seed=3, max_pieces=3, num_layers=1)
    model = zett.Hypernet(config)
    params = nn.unbox(_init(model, surface, E))
    want = jax.jit(lambda p: model.apply({"params": p}, surface, E))(params)
    got = zett.predict_embeddings(model, params, surface, E, chunk=16)  # 16 + 16 + 5
    assert got["out"] is None and got["in"].shape == (37, 16) and got["bias"].shape == (37,)
    np.testing.assert_allclose(got["in"], want["in"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["bias"], want["bias"], rtol=1e-5, atol=1e-6)


def test_chunk_must_be_positive():
    config, surface, E, _ = _setup()
    with pytest.raises(ValueError, match="chunk=0"):
        zett.predict_embeddings(zett.Hypernet(config), None, surface, E, chunk=0)


def test_packed_pieces_must_be_fractions():
    with pytest.raises(ValueError, match="packed_pieces"):
        zett.HypernetConfig(source_vocab_size=60, embed_dim=16, packed_pieces=(1.5,)).validate()
    config = zett.HypernetConfig.from_dict(
        {"source_vocab_size": 60, "embed_dim": 16, "packed_pieces": [0.5, 0.25]}
    )
    assert config.packed_rows(10) == (18, 35)
