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
    """rows: B tuples of example indices (an empty tuple is a padding row); length: L.

    shape: grid buckets only (`plan_grid`): the padded length of each length column."""

    rows: tuple[Row, ...]
    length: int
    shape: tuple[int, ...] = ()


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


def histogram_boundaries(
    lengths: np.ndarray, num_buckets: int, limit: int, multiple: int = 8
) -> tuple[int, ...]:
    """Ascending bucket boundaries from a length histogram: the (k/num_buckets) quantiles for
    k = 1..num_buckets-1 and the longest length, each rounded up to `multiple` (fewer shapes,
    aligned tiles), then `limit`, which every example must fit (a split with longer examples
    than these `lengths` then costs one more shape, not an error)."""
    if num_buckets < 1 or limit < 1 or multiple < 1:
        raise ValueError(
            f"num_buckets={num_buckets}, limit={limit}, multiple={multiple} must be >= 1"
        )
    lengths = np.minimum(np.asarray(lengths, np.int64), limit)
    points = [np.quantile(lengths, k / num_buckets) for k in range(1, num_buckets)]
    points += [lengths.max()] if len(lengths) else []
    bounds = {limit} | {
        min(limit, max(multiple, -(-int(np.ceil(q)) // multiple) * multiple))
        for q in (points if len(lengths) else [])
    }
    return tuple(sorted(bounds))


def plan_grid(
    order: np.ndarray,
    lengths: np.ndarray,
    *,
    boundaries: Sequence[Sequence[int]],
    batch_size: int,
    rng: np.random.Generator | None,
) -> list[GlobalBatch]:
    """Buckets over several length columns at one batch size (e.g. peaks x residues).

    lengths: [num_examples, F]; boundaries: F ascending tuples, the last of each >= every
    length of its column. An example goes to the cell of the smallest boundary >= its length
    in every column; each cell is chunked in `order` into batches of `batch_size`, with
    `shape` = the cell's boundaries. With `rng`, batches of all cells are interleaved in a
    random order; without, cells come in ascending order.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 2 or lengths.shape[1] != len(boundaries):
        raise ValueError(f"lengths {lengths.shape} do not match {len(boundaries)} boundary sets")
    cell_NxF = np.stack(
        [
            np.searchsorted(np.asarray(b), lengths[order, f], side="left")
            for f, b in enumerate(boundaries)
        ],
        axis=1,
    ).reshape(len(order), len(boundaries))
    for f, b in enumerate(boundaries):
        if len(order) and int(cell_NxF[:, f].max()) >= len(b):
            raise ValueError(f"a length in column {f} exceeds its last boundary {b[-1]}")
    batches = []
    for cell in sorted({tuple(int(x) for x in c) for c in cell_NxF}):
        members = order[(cell_NxF == np.asarray(cell)).all(axis=1)]
        shape = tuple(int(boundaries[f][k]) for f, k in enumerate(cell))
        batches += [
            GlobalBatch(b.rows, 0, shape)
            for b in plan_pad(members, batch_size=batch_size, length=0)
        ]
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
