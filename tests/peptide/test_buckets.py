"""De novo batches bucketed by (peaks, residues): the same per-spectrum losses as one shape."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from zoo.peptide import task as td
from zoo.peptide.sequence import Sequencer
from zoo.train import config as zconfig


def _task(data_dir, mode="hybrid", **task):
    cfg = zconfig.load("recipes/denovo_demo.py:tiny")
    cfg.model.mode = mode
    cfg.task.data_dir = str(data_dir)
    cfg.task.max_peaks = 128  # the simulated spectra have 23-60 peaks: buckets pay here
    for k, v in task.items():
        cfg.task[k] = v
    return td.DenovoTask(cfg)


def _losses(task, params, split):
    """{example index: (loss, ar_loss, ctc_loss)} over one ordered pass of `split`."""
    ds = task.dataset(
        split, seed=0, process_index=0, process_count=1, batch_multiple=1, train=False
    )

    def one(row):
        batch = jax.tree.map(lambda x: x[None], row)
        total, aux = task.loss(params, batch, jax.random.PRNGKey(0), train=False)
        return total, aux["ar_loss"], aux["ctc_loss"]

    per_row = jax.jit(jax.vmap(one))
    out, shapes = {}, set()
    for batch, planned in zip(ds, ds._planner.epoch(0)):
        shapes.add((batch["mz"].shape[1], batch["tokens"].shape[1]))
        values = np.stack(jax.device_get(per_row(batch)), axis=1)
        for row, v in zip(planned.rows, values):
            if row:
                out[row[0]] = v
    return out, shapes


def test_bucketed_batches_give_the_same_per_spectrum_loss(tfds_dir):
    # hybrid: the AR loss (cross-attention over NAR states + peaks) and CTC in one model
    fixed = _task(tfds_dir, num_buckets=0)
    bucketed = _task(tfds_dir, num_buckets=3)
    params = fixed.init_variables(jax.random.PRNGKey(1), fixed.example_batch(2))["params"]
    want, one_shape = _losses(fixed, params, "train")
    got, shapes = _losses(bucketed, params, "train")
    assert one_shape == {(128, 9)}
    assert len(shapes) >= 3 and all(p < 128 for p, _ in shapes)  # several, all smaller
    assert sorted(got) == sorted(want) == list(fixed.kept_indices("train"))
    for i in want:
        np.testing.assert_allclose(got[i], want[i], rtol=2e-5, atol=2e-6, err_msg=f"spectrum {i}")


def test_boundaries_come_from_the_training_histogram_or_the_config(tfds_dir):
    peaks, residues = _task(tfds_dir, num_buckets=3).buckets()
    lengths = _task(tfds_dir).lengths("train")
    assert peaks[-1] == 128 and residues[-1] == 9
    assert peaks[-2] >= lengths[:, 0].max() > peaks[-3]  # the longest, rounded up to 8
    assert _task(tfds_dir, peak_buckets=(64, 128)).buckets()[0] == (64, 128)
    with pytest.raises(ValueError, match=r"task.peak_buckets=\(64, 100\) must .* end at 128"):
        _task(tfds_dir, peak_buckets=(64, 100)).buckets()
    assert _task(tfds_dir, num_buckets=0).buckets() is None


def test_padding_fraction_counts_peaks_and_residues(tfds_dir):
    task = _task(tfds_dir, num_buckets=0)
    batch = task.example_batch(2)
    batch["mz"][0, :3] = 1.0
    batch["tokens"][1, :4] = 5
    assert task.positions_in_batch(batch) == (7, 2 * 128 + 2 * 9)


@pytest.mark.parametrize("decoder", ["hybrid", "nar"])
def test_bucketed_sequencer_predicts_what_the_unbucketed_one_does(tfds_dir, decoder):
    task = _task(tfds_dir)
    params = task.init_variables(jax.random.PRNGKey(2), task.example_batch(2))["params"]
    src = task.source("train")
    examples = [src[i] for i in range(40)]

    def run(peak_bucket):
        seq = Sequencer(
            task.model.config,
            params,
            task.residues,
            max_peaks=128,
            beam=2,
            min_length=1,
            ctc_beam=2,
            peak_bucket=peak_bucket,
        )
        return seq.predict_all(examples, decoder, batch_size=8)

    want, got = run(0), run(16)
    assert [p.peptide for p in got] == [p.peptide for p in want]
    np.testing.assert_allclose([p.score for p in got], [p.score for p in want], rtol=1e-5)
