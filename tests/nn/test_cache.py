"""zoo.nn.cache: the row layout every decoding cache and search shares."""

import jax.numpy as jnp
import numpy as np

from zoo.nn.cache import BEAM_SHARED, gather_rows, repeat_rows


def test_repeat_rows_puts_copy_k_of_row_b_at_b_times_n_plus_k():
    x = jnp.arange(6).reshape(3, 2)
    out = np.asarray(repeat_rows({"a": x}, 2)["a"])
    np.testing.assert_array_equal(out, np.asarray(x)[[0, 0, 1, 1, 2, 2]])


def test_gather_rows_reorders_beams_within_each_item_and_leaves_shared_rows_alone():
    batch, k = 2, 3
    rows = jnp.arange(batch * k) * 10  # beam k of item b holds 10 * (b*K + k)
    shared = {"memory": jnp.arange(batch * k)}
    parents = jnp.asarray([[2, 2, 0], [1, 0, 0]])
    out = gather_rows({"rows": rows, BEAM_SHARED: shared}, parents)
    np.testing.assert_array_equal(out["rows"], [20, 20, 0, 40, 30, 30])
    assert out[BEAM_SHARED] is shared  # same beam count: never copied


def test_gather_rows_gathers_shared_rows_when_the_beam_count_changes():
    shared = {"memory": jnp.asarray([5, 6])}  # one beam per item, 2 items
    parents = jnp.zeros((2, 3), jnp.int32)  # each item now has 3 beams, copies of beam 0
    out = gather_rows({"rows": jnp.asarray([1, 2]), BEAM_SHARED: shared}, parents)
    np.testing.assert_array_equal(out["rows"], [1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(out[BEAM_SHARED]["memory"], [5, 5, 5, 6, 6, 6])
