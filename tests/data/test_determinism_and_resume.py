"""Determinism, per-process slicing and exact resume: the promises the training loop relies on."""

import itertools
import json

import grain
import numpy as np
import pytest

from zoo.data import BatchingConfig, make_dataset, plans

FEATURES = ["inputs", "targets"]


def _take(iterator, n):
    return list(itertools.islice(iterator, n))


def _assert_same_batches(expected, actual):
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _differs(a, b):
    return any(
        x["inputs"].shape != y["inputs"].shape or (x["inputs"] != y["inputs"]).any()
        for x, y in zip(a, b)
    )


def test_same_seed_gives_same_batches_and_another_seed_does_not(train_source, batching):
    def first(seed):
        return _take(iter(make_dataset(train_source, FEATURES, batching, seed=seed)), 10)

    _assert_same_batches(first(3), first(3))
    assert _differs(first(3), first(4))


def test_each_epoch_is_reshuffled_and_unshuffled_epochs_repeat(train_source, batching):
    ds = make_dataset(train_source, FEATURES, batching, seed=0, num_epochs=2)
    n = ds.num_batches(0)
    batches = list(ds)
    assert len(batches) == n + ds.num_batches(1)
    assert _differs(batches[:n], batches[n:])

    ordered = make_dataset(train_source, FEATURES, batching, seed=0, shuffle=False, num_epochs=2)
    batches = list(ordered)
    _assert_same_batches(batches[: len(batches) // 2], batches[len(batches) // 2 :])


def test_unshuffled_pad_batches_follow_source_order(train_source):
    pad = BatchingConfig("pad", global_batch_size=8, max_length=12)
    batch = next(iter(make_dataset(train_source, FEATURES, pad, seed=0, shuffle=False)))
    for r, row in enumerate(batch["inputs"]):
        np.testing.assert_array_equal(
            row[: len(train_source[r]["inputs"])], train_source[r]["inputs"]
        )


def test_num_epochs_none_repeats_forever(train_source, batching):
    ds = make_dataset(train_source, FEATURES, batching, seed=0)
    assert len(_take(iter(ds), 3 * ds.num_batches(0) + 5)) == 3 * ds.num_batches(0) + 5


def test_process_slices_concatenate_to_the_single_process_batches(train_source, batching):
    # 2 epochs' worth (num_epochs=2) so the equality also holds across an epoch boundary.
    single = list(make_dataset(train_source, FEATURES, batching, seed=1, num_epochs=2))
    slices = [
        list(
            make_dataset(
                train_source,
                FEATURES,
                batching,
                seed=1,
                num_epochs=2,
                process_index=p,
                process_count=2,
            )
        )
        for p in range(2)
    ]
    assert len(slices[0]) == len(slices[1]) == len(single)
    for whole, first, second in zip(single, *slices):
        assert first["inputs"].shape[0] * 2 == whole["inputs"].shape[0]
        _assert_same_batches([whole], [{k: np.concatenate([first[k], second[k]]) for k in whole}])


class _CountingSource:
    """A source that remembers which examples were read."""

    def __init__(self, examples):
        self.examples, self.read = examples, set()

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        self.read.add(int(i))
        return self.examples[i]


def test_each_process_reads_only_its_share_of_the_source(train_source, batching):
    """Lengths: a block per process (exchanged by tasks.base.scan_shared); batches: own rows."""
    examples = [train_source[i] for i in range(len(train_source))]
    n, block = len(examples), -(-len(examples) // 2)
    full = plans.feature_lengths(examples, FEATURES)
    reads = []
    for p in range(2):
        src = _CountingSource(examples)
        rows = range(p * block, min(n, (p + 1) * block))
        np.testing.assert_array_equal(
            plans.feature_lengths(src, FEATURES, rows), full[rows.start : rows.stop]
        )
        assert src.read == set(rows)
        src.read.clear()
        ds = make_dataset(
            src,
            FEATURES,
            batching,
            seed=1,
            num_epochs=1,
            process_index=p,
            process_count=2,
            lengths=full,
        )
        assert len(list(ds)) > 0
        reads.append(src.read)
    assert reads[0] and reads[1] and reads[0].isdisjoint(reads[1])


def test_lengths_of_the_wrong_shape_are_refused(train_source, batching):
    with pytest.raises(ValueError, match=r"lengths has shape \(3, 2\), not \(examples"):
        make_dataset(train_source, FEATURES, batching, seed=1, lengths=np.zeros((3, 2)))


def test_scan_shared_wants_rows_of_columns():
    from zoo.train.task import scan_shared

    with pytest.raises(ValueError, match=r"scan must return \[examples, K\] rows"):
        scan_shared(10, lambda rows: np.zeros(len(rows)), process_index=0, process_count=2)


@pytest.mark.parametrize("skip", [7, 0, "epoch_end"])
def test_resume_from_saved_state_yields_exactly_the_same_batches(train_source, batching, skip):
    ds = make_dataset(train_source, FEATURES, batching, seed=5)
    if skip == "epoch_end":
        skip = ds.num_batches(0) - 2  # The 5 batches after the state span two epochs.
    it = iter(ds)
    _take(it, skip)
    state = json.loads(json.dumps(it.get_state()))  # The loop saves it with ocp JsonSave.
    expected = _take(it, 5)

    resumed = iter(make_dataset(train_source, FEATURES, batching, seed=5))
    _take(resumed, 2)  # set_state must also work on an iterator that has already started.
    resumed.set_state(state)
    _assert_same_batches(expected, _take(resumed, 5))
    assert resumed.get_state() == it.get_state()


def test_finite_dataset_resumes_to_its_end(train_source, batching):
    ds = make_dataset(train_source, FEATURES, batching, seed=0, num_epochs=1)
    it = iter(ds)
    _take(it, 3)
    state = it.get_state()
    rest = list(it)
    resumed = iter(ds)
    resumed.set_state(state)
    _assert_same_batches(rest, list(resumed))
    assert len(rest) == ds.num_batches(0) - 3


def test_set_state_rejects_a_foreign_state(train_source, batching):
    it = iter(make_dataset(train_source, FEATURES, batching, seed=0))
    with pytest.raises(ValueError, match="not from a zoo.data pipeline"):
        it.set_state({"next_index": 3})


def test_resume_is_exact_through_grain_wrappers_the_loop_may_add(train_source, batching):
    ds = make_dataset(train_source, FEATURES, batching, seed=2)
    wrapped = grain.experimental.ThreadPrefetchIterDataset(
        ds.map(lambda batch: {k: v + 0 for k, v in batch.items()}), prefetch_buffer_size=2
    )
    it = iter(wrapped)
    _take(it, 7)
    state = json.loads(json.dumps(it.get_state()))
    expected = _take(it, 5)
    resumed = iter(wrapped)
    resumed.set_state(state)
    _assert_same_batches(expected, _take(resumed, 5))
    it.close()
    resumed.close()
