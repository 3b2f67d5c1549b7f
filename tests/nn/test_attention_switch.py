"""zoo.nn.layers.ATTENTION="dot_product_attention" (the benchmark's variant) computes the
same attention as the written-out einsums."""

import jax
import jax.numpy as jnp
import numpy as np

from zoo.nn import layers


def test_dot_product_attention_switch_equals_the_einsum_path(monkeypatch):
    mha = layers.MultiHeadAttention(num_heads=2, head_dim=8)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 16))
    kv = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 16))
    keys = jnp.array([[1] * 7, [1] * 4 + [0] * 3], bool)  # the second row pads 3 keys
    mask = jnp.broadcast_to(keys[:, None, None, :], (2, 1, 5, 7))
    params = mha.init(jax.random.PRNGKey(2), x, kv, mask)

    def run():  # traced afresh each call, so the switch's value at call time counts
        return np.asarray(jax.jit(lambda p: mha.apply(p, x, kv, mask))(params))

    want = run()
    monkeypatch.setattr(layers, "ATTENTION", "dot_product_attention")
    got = run()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
