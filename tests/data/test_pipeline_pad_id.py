"""Padding with a model's own pad id (mBART pads with 1, not 0)."""

import numpy as np

from zoo.data import BatchingConfig, make_dataset


def _source():
    return [
        {"inputs": np.array([5, 6, 2], np.int32), "targets": np.array([7, 2], np.int32)},
        {"inputs": np.array([8, 2], np.int32), "targets": np.array([9, 9, 9, 2], np.int32)},
    ]


def test_pad_id_fills_padding_in_every_mode():
    for mode, kw in [
        ("pad", dict(global_batch_size=2, max_length=6)),
        ("bucket", dict(tokens_per_batch=12, bucket_boundaries=(6,))),
        ("pack", dict(global_batch_size=2, max_length=8)),
    ]:
        cfg = BatchingConfig(mode=mode, pad_id=1, **kw)
        batch = next(
            iter(make_dataset(_source(), ["inputs", "targets"], cfg, seed=0, shuffle=False))
        )
        inputs = batch["inputs"]
        real = sum(len(e["inputs"]) for e in _source())
        assert (inputs != 1).sum() == real, mode
        assert 0 not in inputs, mode
