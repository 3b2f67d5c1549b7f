"""The hand-written LayerNorm backward equals jax.grad of the plain formula."""

import jax
import jax.numpy as jnp
import numpy as np

from zoo.nn import layers


def _plain(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def test_custom_vjp_layer_norm_matches_autodiff():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    x = jax.random.normal(k[0], (3, 5, 16)) * 3 + 1
    scale = jax.random.normal(k[1], (16,))
    bias = jax.random.normal(k[2], (16,))
    dy = jax.random.normal(k[3], (3, 5, 16))

    def vjp(f):
        y, pull = jax.vjp(lambda a, s, b: f(a, s, b, 1e-5), x, scale, bias)
        return (y, *pull(dy))

    for got, want in zip(vjp(layers.layer_norm), vjp(_plain)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
