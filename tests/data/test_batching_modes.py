"""Shapes, padding and content of each batching mode; drop counting; configuration errors."""

import collections
import itertools
import logging

import numpy as np
import pytest

from zoo.data import BatchingConfig, bucket_batch_sizes, dropped_examples, make_dataset

FEATURES = ["inputs", "targets"]


def _key(inputs, targets):
    return (tuple(int(t) for t in inputs), tuple(int(t) for t in targets))


def _source_multiset(source):
    return collections.Counter(
        _key(source[i]["inputs"], source[i]["targets"]) for i in range(len(source))
    )


def _unpadded_rows(batch):
    """Examples of a pad/bucket batch: content never contains the pad id 0, so strip zeros."""
    return [
        _key(inputs[inputs != 0], targets[targets != 0])
        for inputs, targets in zip(batch["inputs"], batch["targets"])
        if inputs.any()
    ]


def _unpack_rows(batch):
    """Examples of a packed batch, checking segment ids and positions on the way."""
    examples = []
    for r in range(len(batch["inputs"])):
        segments = {}
        for f in FEATURES:
            tokens, ids, positions = (
                batch[f][r],
                batch[f"{f}_segment_ids"][r],
                batch[f"{f}_positions"][r],
            )
            np.testing.assert_array_equal(tokens[ids == 0], 0)
            np.testing.assert_array_equal(positions[ids == 0], 0)
            used = ids[ids != 0]
            # Segments are laid out contiguously as 1, 2, ..., k.
            np.testing.assert_array_equal(np.unique(used), np.arange(1, len(np.unique(used)) + 1))
            assert (np.diff(used) >= 0).all() and (ids[len(used) :] == 0).all()
            for s in np.unique(used):
                np.testing.assert_array_equal(positions[ids == s], np.arange((ids == s).sum()))
            segments[f] = [tokens[ids == s] for s in np.unique(used)]
        assert len(segments["inputs"]) == len(segments["targets"])
        examples += [_key(i, t) for i, t in zip(segments["inputs"], segments["targets"])]
    return examples


def _one_epoch(source, batching, **kwargs):
    return list(make_dataset(source, FEATURES, batching, seed=0, num_epochs=1, **kwargs))


def test_one_epoch_holds_every_example_exactly_once(train_source, batching):
    batches = _one_epoch(train_source, batching)
    unpack = _unpack_rows if batching.mode == "pack" else _unpadded_rows
    seen = collections.Counter(example for batch in batches for example in unpack(batch))
    assert seen == _source_multiset(train_source)


def test_pad_batches_have_fixed_shape_and_zero_padding(train_source):
    batching = BatchingConfig("pad", global_batch_size=8, max_length=16)
    for batch in _one_epoch(train_source, batching):
        assert set(batch) == set(FEATURES)
        for f in FEATURES:
            assert batch[f].shape == (8, 16) and batch[f].dtype == np.int32
            lengths = (batch[f] != 0).sum(axis=1)
            # Padding is a suffix: no token after the first pad.
            for row, n in zip(batch[f], lengths):
                assert (row[n:] == 0).all()


def test_bucket_batches_stay_within_token_budget_with_multiple_batch_sizes(train_source):
    batching = BatchingConfig(
        "bucket", tokens_per_batch=100, bucket_boundaries=(4, 8, 12), batch_multiple=4
    )
    assert bucket_batch_sizes(batching) == (24, 12, 8)
    shapes = []
    for batch in _one_epoch(train_source, batching):
        size, length = batch["inputs"].shape
        assert batch["targets"].shape == (size, length)
        assert length in batching.bucket_boundaries
        assert size * length <= batching.tokens_per_batch and size % 4 == 0
        # Each example sits in the smallest bucket that holds it.
        example_lengths = np.maximum((batch["inputs"] != 0).sum(1), (batch["targets"] != 0).sum(1))
        real = example_lengths[example_lengths > 0]
        lower = max([b for b in batching.bucket_boundaries if b < length], default=0)
        assert ((real > lower) & (real <= length)).all()
        shapes.append((size, length))
    assert set(shapes) == {(24, 4), (12, 8), (8, 12)}
    # Buckets are interleaved in a shuffled order, not emitted bucket by bucket.
    runs = sum(1 for a, b in itertools.pairwise(shapes) if a != b)
    assert runs > len(set(shapes))


def test_bucket_batch_size_never_drops_below_the_required_multiple():
    batching = BatchingConfig(
        "bucket", tokens_per_batch=10, bucket_boundaries=(4, 64), batch_multiple=2
    )
    assert bucket_batch_sizes(batching) == (2, 2)
    assert bucket_batch_sizes(batching, process_count=4) == (4, 4)


def test_pack_rows_hold_several_examples_with_restarting_positions(train_source):
    batching = BatchingConfig("pack", global_batch_size=4, max_length=24)
    batches = _one_epoch(train_source, batching)
    expected_keys = {
        f"{f}{suffix}" for f in FEATURES for suffix in ("", "_segment_ids", "_positions")
    }
    for batch in batches:
        assert set(batch) == expected_keys
        for array in batch.values():
            assert array.shape == (4, 24) and array.dtype == np.int32
    segments_per_row = [b["inputs_segment_ids"].max(axis=1) for b in batches]
    assert np.concatenate(segments_per_row).mean() > 2
    # First-fit fills rows well: most of the inputs budget holds tokens.
    fill = np.mean([(b["inputs"] != 0).mean() for b in batches[:-1]])
    assert fill > 0.8


def _toy_source(lengths):
    """In-memory source (a plain list, no __getitems__) with examples of the given lengths."""
    return [
        {"inputs": np.full(n, 3 + i % 7, np.int32), "targets": np.full(max(n - 1, 1), 5, np.int32)}
        for i, n in enumerate(lengths)
    ]


@pytest.mark.parametrize(
    "batching",
    [
        BatchingConfig("pad", global_batch_size=2, max_length=8),
        BatchingConfig("bucket", tokens_per_batch=16, bucket_boundaries=(4, 8)),
        BatchingConfig("pack", global_batch_size=2, max_length=8),
    ],
    ids=lambda b: b.mode,
)
def test_too_long_examples_are_dropped_counted_and_logged(batching, caplog):
    source = _toy_source([3, 9, 5, 12, 8, 2, 20])
    with caplog.at_level(logging.WARNING, logger="zoo.data.pipeline"):
        ds = make_dataset(source, FEATURES, batching, seed=0, num_epochs=1)
    assert dropped_examples(ds) == 3 and ds.stats.num_dropped == 3
    assert dropped_examples(ds.map(lambda batch: batch)) == 3
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "dropped 3 of 7" in warning and "longer than 8" in warning
    assert ("bucket boundary" if batching.mode == "bucket" else "raise max_length") in warning
    kept_lengths = []
    for batch in ds:
        if batching.mode == "pack":
            for ids in batch["inputs_segment_ids"]:
                kept_lengths += list(np.bincount(ids)[1:])
        else:
            kept_lengths += [int(n) for n in (batch["inputs"] != 0).sum(axis=1) if n]
    assert sorted(kept_lengths) == [2, 3, 5, 8]


def test_nothing_logged_when_nothing_is_dropped(caplog):
    with caplog.at_level(logging.WARNING, logger="zoo.data.pipeline"):
        ds = make_dataset(
            _toy_source([3, 4]),
            FEATURES,
            BatchingConfig("pad", global_batch_size=2, max_length=8),
            seed=0,
        )
    assert dropped_examples(ds) == 0 and not caplog.records


def test_all_examples_too_long_raises():
    with pytest.raises(ValueError, match="dropped 2 of 2 examples longer than 4.*raise max_length"):
        make_dataset(
            _toy_source([9, 10]),
            FEATURES,
            BatchingConfig("pad", global_batch_size=2, max_length=4),
            seed=0,
        )


@pytest.mark.parametrize(
    "batching,kwargs,message",
    [
        (
            BatchingConfig("sorted", global_batch_size=2, max_length=8),
            {},
            "unknown batching mode 'sorted'",
        ),
        (
            BatchingConfig("bucket", tokens_per_batch=64, bucket_boundaries=(8, 4)),
            {},
            r"bucket_boundaries=\(8, 4\) must be .* ascending",
        ),
        (
            BatchingConfig("bucket", tokens_per_batch=64, bucket_boundaries=(4, 4)),
            {},
            "strictly ascending",
        ),
        (BatchingConfig("bucket", bucket_boundaries=(4, 8)), {}, "tokens_per_batch=0"),
        (
            BatchingConfig("pad", global_batch_size=12, max_length=8, batch_multiple=8),
            {},
            (
                "global_batch_size=12 is not divisible by data-parallel size x processes = 8; "
                "use a multiple of 8"
            ),
        ),
        (
            BatchingConfig("pack", global_batch_size=12, max_length=8, batch_multiple=4),
            {"process_count": 8, "process_index": 0},
            "global_batch_size=12 is not divisible by .* = 8; use a multiple of 8",
        ),
        (BatchingConfig("pad", global_batch_size=4, max_length=0), {}, "max_length=0"),
        (
            BatchingConfig("pad", global_batch_size=4, max_length=8),
            {"process_count": 2, "process_index": 2},
            "process_index=2",
        ),
    ],
)
def test_bad_configuration_raises_naming_value_and_fix(batching, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(_toy_source([3, 4]), FEATURES, batching, seed=0, **kwargs)


def test_missing_feature_raises_naming_it():
    with pytest.raises(KeyError, match="'labels'"):
        make_dataset(
            _toy_source([3, 4]),
            ["inputs", "labels"],
            BatchingConfig("pad", global_batch_size=2, max_length=8),
            seed=0,
        )


def test_pack_places_inputs_and_targets_of_an_example_in_the_same_row():
    # Targets much longer than inputs: a row is full when either feature is full.
    source = [
        {"inputs": np.full(2, 3 + i, np.int32), "targets": np.full(6, 3 + i, np.int32)}
        for i in range(10)
    ]
    batching = BatchingConfig("pack", global_batch_size=2, max_length=8)
    batches = list(make_dataset(source, FEATURES, batching, seed=0, num_epochs=1))
    for batch in batches:
        # One example per row: a second one would overflow targets (6 + 6 > 8).
        np.testing.assert_array_equal(
            batch["targets_segment_ids"].max(axis=1), batch["inputs_segment_ids"].max(axis=1)
        )
        assert batch["targets_segment_ids"].max() <= 1
        for r in range(2):
            np.testing.assert_array_equal(batch["inputs"][r, :2], batch["targets"][r, :2])
    assert sum(int(b["inputs_segment_ids"].max(axis=1).sum()) for b in batches) == 10
