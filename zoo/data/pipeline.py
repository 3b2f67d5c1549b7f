"""grain input pipelines with pad / bucket / pack batching: deterministic, sharded, resumable.

Design (levanter-style). From the example lengths we compute, per epoch, a plan of global
batches (see plans.py): a pure function of (seed, epoch, lengths, config). Process p of P
collates only rows [p*B/P, (p+1)*B/P) of each global batch, so the global batches are the
same for any process count. The iterator state is {"epoch", "batch_in_epoch"}: resuming
recomputes that epoch's plan and starts at that batch, so it is exact and costs one plan.

    ds = make_dataset(source, ["inputs", "targets"],
                      BatchingConfig(mode="pack", global_batch_size=64, max_length=128), seed=0)
    it = iter(ds); batch = next(it); state = it.get_state()   # state is JSON
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from zoo.data import plans

log = logging.getLogger(__name__)

MODES = ("pad", "bucket", "pack")

# Modest read-ahead: batches are cheap to collate and several iterators may be alive at
# once (train + eval); grain's defaults (16 threads, 500 elements) suit remote storage.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """How examples become batches.

    mode: "pad" (fixed batch, pad to max_length), "bucket" (batch size per length bucket at
        about tokens_per_batch tokens) or "pack" (several examples per row, with segment ids).
    global_batch_size: pad/pack: rows per global batch, over all processes.
    max_length: pad/pack: every feature is padded / packed to this length.
    tokens_per_batch: bucket: about this many padded tokens per global batch.
    bucket_boundaries: bucket: ascending upper length bounds; the last one is the max length.
    batch_multiple: every global batch size is a multiple of this; set it to the global
        data-parallel size. lcm(batch_multiple, process_count) is what is enforced.
    pad_id: the id that fills padding (0 for the smoke task; mBART pads with 1).
    """

    mode: str
    global_batch_size: int = 0
    max_length: int = 0
    tokens_per_batch: int = 0
    bucket_boundaries: tuple[int, ...] = ()
    batch_multiple: int = 1
    pad_id: int = 0


def required_multiple(batching: BatchingConfig, process_count: int = 1) -> int:
    """Every global batch size must be a multiple of this (data-parallel size x processes)."""
    return math.lcm(batching.batch_multiple, process_count)


def bucket_batch_sizes(batching: BatchingConfig, process_count: int = 1) -> tuple[int, ...]:
    """Global batch size of each bucket: tokens_per_batch // boundary, rounded down to a
    multiple of `required_multiple` (and at least that multiple)."""
    multiple = required_multiple(batching, process_count)
    return tuple(
        max(multiple, batching.tokens_per_batch // boundary // multiple * multiple)
        for boundary in batching.bucket_boundaries
    )


def _length_limit(batching: BatchingConfig) -> int:
    if batching.mode == "bucket":
        return batching.bucket_boundaries[-1]
    return batching.max_length


def _validate(
    batching: BatchingConfig,
    features: Sequence[str],
    seed: int,
    process_index: int,
    process_count: int,
) -> None:
    if batching.mode not in MODES:
        raise ValueError(f"unknown batching mode {batching.mode!r}; use one of {MODES}")
    if not features:
        raise ValueError("features is empty; name the sequence features, e.g. ['inputs']")
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0 (numpy SeedSequence)")
    if batching.batch_multiple < 1:
        raise ValueError(f"batch_multiple={batching.batch_multiple} must be >= 1")
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"process_index={process_index} is outside [0, process_count={process_count})"
        )
    multiple = required_multiple(batching, process_count)
    if batching.mode == "bucket":
        bounds = batching.bucket_boundaries
        if not bounds or bounds[0] < 1 or any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(
                f"bucket_boundaries={bounds} must be non-empty, positive and strictly "
                "ascending, e.g. (16, 32, 64, 128)"
            )
        if batching.tokens_per_batch < 1:
            raise ValueError(
                f"tokens_per_batch={batching.tokens_per_batch}; bucket mode needs a positive "
                "token budget per global batch"
            )
        return
    if batching.max_length < 1:
        raise ValueError(f"max_length={batching.max_length}; {batching.mode} mode needs > 0")
    size = batching.global_batch_size
    if size < 1 or size % multiple:
        raise ValueError(
            f"global_batch_size={size} is not divisible by data-parallel size x processes = "
            f"{multiple}; use a multiple of {multiple}"
        )


@dataclasses.dataclass(frozen=True)
class DataStats:
    """num_examples: in the source; num_dropped: longer than max_length (never truncated)."""

    num_examples: int
    num_dropped: int
    max_length: int


class _Planner:
    """Computes (and caches the latest) epoch plan."""

    def __init__(
        self,
        lengths: np.ndarray,
        kept: np.ndarray,
        batching: BatchingConfig,
        *,
        seed: int,
        shuffle: bool,
        process_count: int,
    ):
        self._lengths = lengths  # [num_examples, num_features]
        self._kept = kept
        self._batching = batching
        self._seed = seed
        self._shuffle = shuffle
        self._process_count = process_count
        self._cached: tuple[int, list[plans.GlobalBatch]] | None = None

    def epoch(self, epoch: int) -> list[plans.GlobalBatch]:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self._plan(epoch))
        return self._cached[1]

    def _plan(self, epoch: int) -> list[plans.GlobalBatch]:
        b = self._batching
        order = plans.epoch_order(self._kept, seed=self._seed, epoch=epoch, shuffle=self._shuffle)
        if b.mode == "pad":
            return plans.plan_pad(order, batch_size=b.global_batch_size, length=b.max_length)
        if b.mode == "pack":
            return plans.plan_pack(
                order, self._lengths, batch_size=b.global_batch_size, max_length=b.max_length
            )
        # A stream separate from the example order's, so the two are independent.
        rng = np.random.default_rng([self._seed, epoch, 1]) if self._shuffle else None
        return plans.plan_bucket(
            order,
            self._lengths.max(axis=1),
            boundaries=b.bucket_boundaries,
            batch_sizes=bucket_batch_sizes(b, self._process_count),
            rng=rng,
        )


class PlannedDataset(grain.IterDataset):
    """IterDataset of process-local batch slices following a `_Planner`'s epoch plans."""

    def __init__(
        self,
        source: Sequence[Any],
        features: Sequence[str],
        planner: _Planner,
        *,
        packed: bool,
        num_epochs: int | None,
        process_index: int,
        process_count: int,
        stats: DataStats,
        pad_id: int = 0,
        collate_fn: Callable[[Sequence[Any], Sequence[plans.Row]], dict] | None = None,
    ):
        super().__init__()
        self._collate_fn = collate_fn
        self._source = source
        self._features = tuple(features)
        self._planner = planner
        self._packed = packed
        self._pad_id = pad_id
        self.num_epochs = num_epochs
        self._process_index = process_index
        self._process_count = process_count
        self.stats = stats

    def num_batches(self, epoch: int = 0) -> int:
        """Number of global batches in `epoch` (pack mode: varies a little with the epoch)."""
        return len(self._planner.epoch(epoch))

    def _collate_local(self, batch: plans.GlobalBatch) -> dict[str, np.ndarray]:
        rows_per_process = len(batch.rows) // self._process_count
        start = self._process_index * rows_per_process
        if self._collate_fn is not None:
            rows = batch.rows[start : start + rows_per_process]
            if batch.shape:
                return self._collate_fn(self._source, rows, batch.shape)
            return self._collate_fn(self._source, rows)
        return plans.collate(
            self._source,
            batch.rows[start : start + rows_per_process],
            batch.length,
            self._features,
            packed=self._packed,
            pad_id=self._pad_id,
        )

    def epoch_iterator(self, epoch: int, start: int) -> grain.DatasetIterator:
        """Iterator over this process's slices of `epoch`'s batches, from batch `start`."""
        batches = grain.MapDataset.source(self._planner.epoch(epoch))[start:]
        return iter(batches.map(self._collate_local).to_iter_dataset(_READ_OPTIONS))

    def __iter__(self) -> _PlannedIterator:
        return _PlannedIterator(self)

    def __str__(self) -> str:
        return f"PlannedDataset(features={self._features}, stats={self.stats})"


class _PlannedIterator(grain.DatasetIterator):
    """State: {"epoch": int, "batch_in_epoch": int}, the next batch to yield."""

    def __init__(self, dataset: PlannedDataset):
        super().__init__()
        self._dataset = dataset
        self._epoch = 0
        self._batch_in_epoch = 0
        self._inner: grain.DatasetIterator | None = None

    def __next__(self) -> dict[str, np.ndarray]:
        self._assert_not_closed()
        num_epochs = self._dataset.num_epochs
        while num_epochs is None or self._epoch < num_epochs:
            if self._inner is None:
                self._inner = self._dataset.epoch_iterator(self._epoch, self._batch_in_epoch)
            try:
                element = next(self._inner)
            except StopIteration:
                self._drop_inner()
                self._epoch += 1
                self._batch_in_epoch = 0
                continue
            self._batch_in_epoch += 1
            return element
        raise StopIteration

    def _drop_inner(self) -> None:
        if self._inner is not None:
            self._inner.close()  # Stops its read-ahead threads.
            self._inner = None

    def get_state(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batch_in_epoch": self._batch_in_epoch}

    def set_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"epoch", "batch_in_epoch"}:
            raise ValueError(
                f"iterator state {state} is not from a zoo.data pipeline; expected keys "
                "'epoch' and 'batch_in_epoch'"
            )
        self._drop_inner()
        self._epoch = int(state["epoch"])
        self._batch_in_epoch = int(state["batch_in_epoch"])

    def close(self) -> None:
        self._drop_inner()
        super().close()


def make_dataset(
    source: Sequence[Any],
    features: Sequence[str],
    batching: BatchingConfig,
    *,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    lengths: np.ndarray | None = None,
) -> grain.IterDataset:
    """Batches `source` (random access, dicts of 1-D int arrays) for training or eval.

    Each element is this process's slice, rows [p*B/P, (p+1)*B/P), of one global batch B:
      f: [B/P, L] int32 for f in features, 0-padded; L = max_length (pad/pack) or the bucket
        boundary (bucket). An example's length is the max over its features.
      pack only: f_segment_ids, f_positions: [B/P, L] int32 (see plans.collate).
    An epoch's last batch is completed with all-padding rows instead of being dropped.
    Examples longer than the limit are dropped, counted (`dropped_examples`) and logged.

    For 1- and P-process runs to see the same data in bucket mode, set batching.batch_multiple
    to a multiple of P (e.g. the data-parallel size): bucket batch sizes depend on it.
    `lengths`: plans.feature_lengths of the whole source, when the caller has it already
    (a multi-process run computes it a block per process); otherwise it is read here.
    """
    _validate(batching, features, seed, process_index, process_count)
    if lengths is None:
        lengths = plans.feature_lengths(source, features)
    elif np.shape(lengths) != (len(source), len(features)):
        raise ValueError(
            f"lengths has shape {np.shape(lengths)}, not (examples, features) = "
            f"({len(source)}, {len(features)})"
        )
    limit = _length_limit(batching)
    too_long = lengths.max(axis=1, initial=0) > limit
    num_dropped = int(too_long.sum())
    fix = (
        "add a bucket boundary >= the longest example"
        if batching.mode == "bucket"
        else "raise max_length"
    )
    message = (
        f"dropped {num_dropped} of {len(source)} examples longer than {limit} tokens "
        f"(mode={batching.mode!r}, features {list(features)}); {fix} to keep them"
    )
    if num_dropped == len(source):
        raise ValueError(f"no examples left: {message}")
    if num_dropped:
        log.warning(message)
    if batching.mode == "bucket":
        for boundary, size in zip(
            batching.bucket_boundaries, bucket_batch_sizes(batching, process_count)
        ):
            if size * boundary > batching.tokens_per_batch:
                log.warning(
                    "bucket %d: batch size %d x %d tokens exceeds tokens_per_batch=%d because "
                    "the batch size cannot go below data-parallel size x processes",
                    boundary,
                    size,
                    boundary,
                    batching.tokens_per_batch,
                )
    planner = _Planner(
        lengths,
        np.flatnonzero(~too_long),
        batching,
        seed=seed,
        shuffle=shuffle,
        process_count=process_count,
    )
    return PlannedDataset(
        source,
        features,
        planner,
        packed=batching.mode == "pack",
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
        stats=DataStats(num_examples=len(source), num_dropped=num_dropped, max_length=limit),
        pad_id=batching.pad_id,
    )


def dropped_examples(ds: grain.IterDataset | grain.MapDataset) -> int:
    """Examples dropped as too long by the `make_dataset` pipeline under `ds`."""
    pending = [ds]
    while pending:
        node = pending.pop()
        if isinstance(node, PlannedDataset):
            return node.stats.num_dropped
        pending.extend(getattr(node, "parents", ()))
    raise ValueError(f"{ds} was not built by zoo.data.make_dataset")


class _GridPlanner(_Planner):
    """Fixed batch size, batches bucketed over length columns (`plans.plan_grid`)."""

    def __init__(self, lengths, kept, boundaries, batch_size, *, seed, shuffle):
        super().__init__(
            lengths,
            kept,
            BatchingConfig(mode="bucket", global_batch_size=batch_size),
            seed=seed,
            shuffle=shuffle,
            process_count=1,
        )
        self._boundaries = tuple(tuple(int(x) for x in b) for b in boundaries)

    def _plan(self, epoch: int) -> list[plans.GlobalBatch]:
        order = plans.epoch_order(self._kept, seed=self._seed, epoch=epoch, shuffle=self._shuffle)
        rng = np.random.default_rng([self._seed, epoch, 1]) if self._shuffle else None
        return plans.plan_grid(
            order,
            self._lengths,
            boundaries=self._boundaries,
            batch_size=self._batching.global_batch_size,
            rng=rng,
        )


def make_fixed_dataset(
    source: Sequence[Any],
    featurize: Callable[[Any], dict[str, np.ndarray]],
    *,
    global_batch_size: int,
    keep: np.ndarray | None = None,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    buckets: Sequence[Sequence[int]] | None = None,
    lengths: np.ndarray | None = None,
    crop: Mapping[str, int] | None = None,
) -> grain.IterDataset:
    """Batches of fixed-shape examples (e.g. spectra padded to a peak count), same guarantees
    as `make_dataset`: deterministic plans, process slices of one global batch, exact resume.

    `featurize(example)` returns a dict of arrays of one shape per feature; rows that only
    complete an epoch's last batch are all zeros (a task gives them weight 0). `keep`: indices
    of the examples to use (the caller counts and reports what it left out).

    Bucketed (`buckets`): `lengths` [num_examples, F] holds F length columns of every example
    (e.g. peaks, residues), `buckets` F ascending boundary tuples and `crop` maps a feature to
    the column that sets its last axis. Each batch holds examples of one bucket cell and its
    cropped features end at the cell's boundaries (a few shapes, so a few compiles); what is
    cut off must be padding (zeros), or collate raises.
    """
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by {process_count} processes"
        )
    kept = np.arange(len(source)) if keep is None else np.asarray(keep, np.int64)
    if not len(kept):
        raise ValueError("no examples to batch (all were left out)")
    template = featurize(source[int(kept[0])])
    crop = dict(crop or {})

    def collate(src, rows, shape=()):
        out = {
            k: np.zeros((len(rows),) + np.shape(v), np.asarray(v).dtype)
            for k, v in template.items()
        }
        for r, row in enumerate(rows):
            for i in row:
                for k, v in featurize(src[int(i)]).items():
                    out[k][r] = v
        for k, column in crop.items() if shape else ():
            bound = shape[column]
            if np.any(out[k][..., bound:]):
                raise ValueError(
                    f"feature {k!r} has non-padding values past its bucket boundary {bound}: "
                    "the lengths given to make_fixed_dataset are not upper bounds"
                )
            out[k] = np.ascontiguousarray(out[k][..., :bound])
        return out

    if buckets is None:
        batching = BatchingConfig(mode="pad", global_batch_size=global_batch_size, max_length=1)
        planner = _Planner(
            np.ones((len(source), 1), np.int64),
            kept,
            batching,
            seed=seed,
            shuffle=shuffle,
            process_count=process_count,
        )
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (len(source), len(buckets)):
            raise ValueError(
                f"lengths has shape {lengths.shape}, not (examples, bucket columns) = "
                f"({len(source)}, {len(buckets)})"
            )
        planner = _GridPlanner(
            lengths, kept, buckets, global_batch_size, seed=seed, shuffle=shuffle
        )
    return PlannedDataset(
        source,
        tuple(template),
        planner,
        packed=False,
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
        stats=DataStats(
            num_examples=len(source), num_dropped=len(source) - len(kept), max_length=1
        ),
        collate_fn=collate,
    )
