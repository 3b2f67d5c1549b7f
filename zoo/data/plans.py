"""Batch plans: pure functions from example lengths to global batches, and the collate step.

A global batch is `rows` (one tuple of example indices per row of the batch) plus the padded
`length` of every row. Pad and bucket rows hold at most one example; pack rows hold several.
An empty row is all padding: it keeps the batch shape fixed when an epoch's last batch is not
full, so no example is lost and jit sees no new shape. Plans depend only on their arguments,
so any process can recompute any epoch's plan, which is what makes resuming exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

Row = tuple[int, ...]

# Examples are read in chunks when measuring lengths: one batched read per chunk is much
# faster than one read per example for ArrayRecord sources.
_LENGTH_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class GlobalBatch:
    """rows: B tuples of example indices (an empty tuple is a padding row); length: L."""

    rows: tuple[Row, ...]
    length: int


def read_examples(source: Sequence[Any], indices: Sequence[int]) -> list[dict[str, Any]]:
    """Reads examples by index, batched when the source supports `__getitems__`."""
    indices = [int(i) for i in indices]
    if not indices:
        return []
    if hasattr(source, "__getitems__"):
        return list(source.__getitems__(indices))
    return [source[i] for i in indices]


def feature_lengths(
    source: Sequence[Any], features: Sequence[str], rows: range | None = None
) -> np.ndarray:
    """Length of every feature of each example in `rows` (default: all): [len(rows), F] int64.

    Reads those examples once. A multi-process run gives each process its block of rows and
    exchanges the results (zoo.data.sources.scan_shared), so no process reads the whole source.
    """
    rows = range(len(source)) if rows is None else rows
    lengths = np.zeros((len(rows), len(features)), dtype=np.int64)
    for start in range(0, len(rows), _LENGTH_CHUNK):
        chunk = rows[start : start + _LENGTH_CHUNK]
        for i, (row, example) in enumerate(zip(chunk, read_examples(source, chunk))):
            for column, feature in enumerate(features):
                if feature not in example:
                    raise KeyError(
                        f"feature {feature!r} is not in example {row} of the source (it has "
                        f"{sorted(example)}); fix the `features` argument"
                    )
                lengths[start + i, column] = len(example[feature])
    return lengths


def epoch_order(kept: np.ndarray, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's example order: a seeded permutation of `kept`, or `kept` itself."""
    if not shuffle:
        return kept
    return np.random.default_rng([seed, epoch]).permutation(kept)


def _padded_rows(indices: np.ndarray, batch_size: int) -> tuple[Row, ...]:
    rows = tuple((int(i),) for i in indices)
    return rows + ((),) * (batch_size - len(rows))


def plan_pad(order: np.ndarray, *, batch_size: int, length: int) -> list[GlobalBatch]:
    """Consecutive chunks of `batch_size` examples, each row padded to `length`."""
    return [
        GlobalBatch(_padded_rows(order[start : start + batch_size], batch_size), length)
        for start in range(0, len(order), batch_size)
    ]


def plan_bucket(
    order: np.ndarray,
    lengths: np.ndarray,
    *,
    boundaries: Sequence[int],
    batch_sizes: Sequence[int],
    rng: np.random.Generator | None,
) -> list[GlobalBatch]:
    """Dataset-Decomposition-style buckets (Pouransari et al. 2024, arXiv:2405.13226).

    An example of length n goes to the smallest boundary >= n (all lengths must fit); each
    bucket is chunked in `order` into batches of its own size, padded to its boundary. With
    `rng`, batches of all buckets are then interleaved in a random order.
    """
    bucket_of = np.searchsorted(np.asarray(boundaries), lengths[order], side="left")
    batches = []
    for bucket, (boundary, batch_size) in enumerate(zip(boundaries, batch_sizes)):
        batches += plan_pad(order[bucket_of == bucket], batch_size=batch_size, length=boundary)
    if rng is not None:
        batches = [batches[k] for k in rng.permutation(len(batches))]
    return batches


def plan_pack(
    order: np.ndarray, lengths: np.ndarray, *, batch_size: int, max_length: int
) -> list[GlobalBatch]:
    """First-fit packing into a pool of `batch_size` rows of `max_length` tokens per feature.

    lengths: [num_examples, num_features]; an example fits a row only if every one of its
    features fits, so inputs and targets of an example share a row (as flax wmt's
    pack_dataset). When an example fits no row, the pool is emitted as one global batch (all
    its rows are then non-empty) and a fresh pool starts, as in grain's FirstFitPack.
    """
    num_features = lengths.shape[1]
    batches = []
    rows: list[list[int]] = [[] for _ in range(batch_size)]
    room = np.full((batch_size, num_features), max_length, dtype=np.int64)
    for index in order:
        need = lengths[index]
        fits = np.flatnonzero((room >= need).all(axis=1))
        if fits.size:
            row = int(fits[0])
        else:
            batches.append(GlobalBatch(tuple(map(tuple, rows)), max_length))
            rows = [[] for _ in range(batch_size)]
            room[:] = max_length
            row = 0
        rows[row].append(int(index))
        room[row] -= need
    if rows[0]:
        batches.append(GlobalBatch(tuple(map(tuple, rows)), max_length))
    return batches


def collate(
    source: Sequence[Any],
    rows: Sequence[Row],
    length: int,
    features: Sequence[str],
    *,
    packed: bool,
    pad_id: int = 0,
) -> dict[str, np.ndarray]:
    """Reads and lays out the examples of `rows`.

    Returns, for each feature f: f [len(rows), length] int32, padded with `pad_id`. With `packed`,
    also f_segment_ids (1, 2, ... per example in the row, 0 on padding) and f_positions
    (0, 1, ... within each example, 0 on padding), both [len(rows), length] int32.
    """
    examples = iter(read_examples(source, [i for row in rows for i in row]))
    shape = (len(rows), length)
    out = {f: np.full(shape, pad_id, dtype=np.int32) for f in features}
    if packed:
        for f in features:
            out[f"{f}_segment_ids"] = np.zeros(shape, dtype=np.int32)
            out[f"{f}_positions"] = np.zeros(shape, dtype=np.int32)
    for r, row in enumerate(rows):
        cursor = dict.fromkeys(features, 0)
        for segment, _ in enumerate(row, start=1):
            example = next(examples)
            for f in features:
                tokens = np.asarray(example[f])
                start, stop = cursor[f], cursor[f] + len(tokens)
                out[f][r, start:stop] = tokens
                if packed:
                    out[f"{f}_segment_ids"][r, start:stop] = segment
                    out[f"{f}_positions"][r, start:stop] = np.arange(len(tokens))
                cursor[f] = stop
    return out
