"""Where examples come from: random-access sources, and one read of a source shared by hosts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils


def load_source(builder: tfds.core.DatasetBuilder, split: str) -> Sequence[dict[str, np.ndarray]]:
    """Random-access source of a prepared ArrayRecord TFDS builder's `split`: source[i] -> dict
    of NumPy arrays (no TensorFlow needed)."""
    return builder.as_data_source(split=split)


def scan_shared(
    num_examples: int,
    scan: Callable[[range], np.ndarray],
    process_index: int,
    process_count: int,
) -> np.ndarray:
    """scan(range of example indices) -> [len, K] ints, over the whole source, read once.

    With several processes each scans one contiguous block and the blocks are exchanged
    (an allgather), so every process gets the full result having read only 1/P of the
    source. Values must fit in int32 (lengths, flags)."""
    if process_count == 1:
        return np.asarray(scan(range(num_examples)))
    block = -(-num_examples // process_count)
    start = min(process_index * block, num_examples)
    rows = range(start, min(start + block, num_examples))
    part = np.asarray(scan(rows))
    if part.ndim != 2:
        raise ValueError(f"scan must return [examples, K] rows, got shape {part.shape}")
    local = np.zeros((block, part.shape[1]), np.int32)
    local[: len(rows)] = part
    gathered = np.asarray(multihost_utils.process_allgather(local, tiled=False))
    return gathered.reshape(process_count * block, -1)[:num_examples].astype(part.dtype)
