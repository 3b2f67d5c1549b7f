"""Grid buckets (several length columns at one batch size) and histogram boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.data import pipeline, plans


def test_histogram_boundaries_follow_the_quantiles_and_end_at_the_limit():
    lengths = np.arange(1, 101)  # 1..100
    assert plans.histogram_boundaries(lengths, 4, limit=150, multiple=8) == (32, 56, 80, 104, 150)
    assert plans.histogram_boundaries(lengths, 1, limit=150) == (104, 150)
    assert plans.histogram_boundaries(np.full(10, 7), 3, limit=30, multiple=4) == (8, 30)
    assert plans.histogram_boundaries(np.full(10, 40), 3, limit=30, multiple=4) == (30,)
    with pytest.raises(ValueError, match="num_buckets=0"):
        plans.histogram_boundaries(lengths, 0, limit=10)


def test_plan_grid_puts_each_example_once_in_the_smallest_cell_that_fits():
    rng = np.random.default_rng(0)
    lengths = np.stack([rng.integers(1, 151, 500), rng.integers(1, 31, 500)], axis=1)
    bounds = ((50, 100, 150), (10, 30))
    order = rng.permutation(500)
    batches = plans.plan_grid(order, lengths, boundaries=bounds, batch_size=16, rng=None)
    seen = [i for b in batches for row in b.rows for i in row]
    assert sorted(seen) == list(range(500))
    assert {b.shape for b in batches} <= {(p, t) for p in bounds[0] for t in bounds[1]}
    for b in batches:
        assert len(b.rows) == 16
        for (i,) in (r for r in b.rows if r):
            for f, bound in enumerate(b.shape):
                smaller = [x for x in bounds[f] if x < bound]
                assert lengths[i, f] <= bound and all(lengths[i, f] > x for x in smaller)
    shuffled = plans.plan_grid(
        order, lengths, boundaries=bounds, batch_size=16, rng=np.random.default_rng(1)
    )
    assert sorted(shuffled, key=str) == sorted(batches, key=str)
    with pytest.raises(ValueError, match="exceeds its last boundary 100"):
        plans.plan_grid(order, lengths, boundaries=((100,), (30,)), batch_size=16, rng=None)


def test_fixed_dataset_crops_to_the_cell_and_refuses_to_cut_real_values():
    n = 40
    lengths = np.stack([np.arange(n) % 20 + 1, np.ones(n, int)], axis=1)
    source = [{"x": np.pad(np.ones(k, np.float32), (0, 20 - k))} for k in lengths[:, 0]]

    def build(lengths):
        return pipeline.make_fixed_dataset(
            source,
            lambda e: {"x": e["x"]},
            global_batch_size=8,
            seed=0,
            shuffle=True,
            num_epochs=1,
            buckets=((8, 20), (1,)),
            lengths=lengths,
            crop={"x": 0},
        )

    batches = list(build(lengths))
    assert sorted({b["x"].shape for b in batches}) == [(8, 8), (8, 20)]
    assert sum(float(b["x"].sum()) for b in batches) == float(lengths[:, 0].sum())
    lying = lengths.copy()
    lying[:, 0] = 1  # says every example fits 8 positions: cropping would lose values
    with pytest.raises(ValueError, match="past its bucket boundary 8"):
        list(build(lying))
