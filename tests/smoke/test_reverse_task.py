"""The smoke task's own pieces: positions counted from the end, shifted decoder inputs."""

import jax.numpy as jnp
import numpy as np

from zoo.smoke.task import positions_from_end, shift_right


def test_positions_count_down_to_zero_at_each_sequence_end():
    ids = jnp.array([[5, 6, 7, 2, 0, 0], [4, 2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(positions_from_end(ids), [[3, 2, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])


def test_positions_count_down_within_each_packed_segment():
    ids = jnp.array([[5, 6, 2, 7, 8, 9, 2, 0]])
    segments = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]])
    np.testing.assert_array_equal(positions_from_end(ids, segments), [[2, 1, 0, 3, 2, 1, 0, 0]])


def test_shift_right_starts_every_packed_segment_with_bos():
    targets = jnp.array([[7, 8, 2, 9, 2, 0]])
    positions = jnp.array([[0, 1, 2, 0, 1, 0]])
    np.testing.assert_array_equal(shift_right(targets, 1), [[1, 7, 8, 2, 9, 2]])
    np.testing.assert_array_equal(shift_right(targets, 1, positions), [[1, 7, 8, 1, 9, 1]])
