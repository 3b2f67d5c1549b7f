"""Checkpoints that defend themselves: a damaged latest step (lost metadata, a truncated or
bit-flipped data file, an empty folder) is moved aside, the run resumes from the newest
complete, verified step and ends exactly where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorstore as ts
from flax import traverse_util

from tests.train import runner
from tests.train.test_distributed import start_processes
from zoo.io import modeldir

# A constant schedule: a run stopped at step 8 and continued to 12 takes the same steps as
# one run of 12 (a cosine schedule would depend on num_steps).
RUN = [
    "--config.checkpoint.every_steps=4",
    "--config.optim.schedule=constant",
    "--config.optim.warmup_steps=2",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tfds_dir):
    """An uninterrupted run of 12 steps: every loss and the final parameters."""
    workdir = tmp_path_factory.mktemp("reference")
    assert runner.train_in_process(workdir, tfds_dir, "--config.train.num_steps=12", *RUN) == 0
    return runner.losses(workdir), runner.load_params(workdir, 12)


@pytest.fixture(scope="module")
def stopped_at_8(tmp_path_factory, tfds_dir) -> Path:
    """A run of 8 steps with checkpoints 4 and 8 (copied, never changed, by each test)."""
    workdir = tmp_path_factory.mktemp("stopped_at_8")
    assert runner.train_in_process(workdir, tfds_dir, "--config.train.num_steps=8", *RUN) == 0
    assert runner.checkpoint_steps(workdir) == [4, 8]
    return workdir


def stored_chunk(step_dir: Path) -> tuple[Path, int, int]:
    """(data file, offset, length) of the largest array chunk orbax stored for the train state.

    Found with tensorstore's own index, not by file size: OCDBT keeps chunks of <= 1 KiB
    inside its zstd-compressed b-tree node (state/d/), the others as raw byte ranges of
    state/ocdbt.process_N/d/ files, and after the merge into state/ the per-process b-tree
    nodes (often the largest files) are no longer read at all."""
    state = step_dir / "state"
    kvstore = ts.KvStore.open(f"file://{state}/").result()
    version = ts.ocdbt.dump(kvstore).result()["versions"][-1]
    assert version["root_height"] == 0, "a one-node b-tree is expected of the tiny model"
    entries = ts.ocdbt.dump(kvstore, version["root"]["location"]).result()["entries"]
    chunks = []
    for e in entries:  # 'value:ocdbt.process_0/:d/FILE:OFFSET:LENGTH'
        if "indirect_value" in e:
            _, prefix, name, offset, length = e["indirect_value"].split(":")
            chunks.append((int(length), state / prefix / name, int(offset)))
    assert chunks, "every chunk is inline in the b-tree node"
    length, path, offset = max(chunks)
    return path, offset, length


def flip_byte(step_dir: Path) -> None:
    """XORs one bit in the middle of the largest stored chunk."""
    path, offset, length = stored_chunk(step_dir)
    data = bytearray(path.read_bytes())
    data[offset + length // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _missing_metadata(step_dir: Path) -> None:
    (step_dir / "state" / "_METADATA").unlink()


def _truncated(step_dir: Path) -> None:
    path, offset, length = stored_chunk(step_dir)  # cut in the middle of a chunk
    os.truncate(path, offset + length // 2)


def _empty(step_dir: Path) -> None:
    shutil.rmtree(step_dir)
    step_dir.mkdir()


DAMAGE = {
    "missing_metadata": (_missing_metadata, "missing state/_METADATA"),
    "truncated_data_file": (_truncated, "restore failed"),
    "empty_step_folder": (_empty, "empty step folder"),
    "flipped_byte": (flip_byte, "checksum mismatch in "),
}


def said(capsys, caplog) -> str:
    """What a `zoo train` in this process printed or logged since the last call."""
    text = capsys.readouterr().err + caplog.text
    caplog.clear()
    return text


def _flat(tree) -> dict[str, np.ndarray]:
    """Every leaf (parameters and optimizer state) by its key path."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_latest_step_is_moved_aside_and_the_run_resumes_from_the_previous_one(
    kind, tmp_path, tfds_dir, stopped_at_8, reference, capsys, caplog
):
    ref_losses, ref_params = reference
    workdir = tmp_path / "run"
    shutil.copytree(stopped_at_8, workdir)
    damage, reason = DAMAGE[kind]
    damage(workdir / "checkpoints" / "8")
    with open(workdir / "metrics.jsonl", "a") as f:  # as if killed mid-write at step 9
        f.write('{"step": 9, "loss": 3.4')
    # An earlier damaged step 8 already moved aside: the new one gets a suffix, both stay.
    (workdir / "checkpoints_damaged" / "8").mkdir(parents=True)
    if kind in ("missing_metadata", "empty_step_folder"):
        # Readers of a workdir's parameters (init_from, zoo translate) pass over it too.
        got = traverse_util.flatten_dict(modeldir.load_params(str(workdir)), sep="/")
        for k, v in runner.load_params(stopped_at_8, 4).items():
            np.testing.assert_array_equal(got[k], v, err_msg=k)
    said(capsys, caplog)

    assert runner.train_in_process(workdir, tfds_dir, "--config.train.num_steps=12", *RUN) == 0
    err = said(capsys, caplog)
    moved = workdir / "checkpoints_damaged" / "8.1"
    assert f"checkpoint step 8 is damaged ({reason}" in err, err[-3000:]
    assert f"moved to {moved}; resuming from step 4" in err
    assert f"resumed from {workdir}/checkpoints/4" in err
    assert moved.is_dir() and (workdir / "checkpoints_damaged" / "8").is_dir()
    assert runner.checkpoint_steps(workdir) == [4, 8, 12]  # step 8 saved again
    params = runner.load_params(workdir, 12)
    assert params.keys() == ref_params.keys()
    for k, v in ref_params.items():
        np.testing.assert_array_equal(params[k], v, err_msg=k)
    # Steps 5-8 ran twice; metrics.jsonl holds each step once, with the second run's loss,
    # and not the torn line.
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 13))
    assert runner.losses(workdir) == ref_losses


def test_every_process_skips_the_same_damaged_step(tmp_path, tfds_dir, stopped_at_8, reference):
    """Two processes (one device each) resuming the 8-device run: both find step 8 damaged,
    it is moved once, and both resume from step 4."""
    workdir = tmp_path / "run"
    shutil.copytree(stopped_at_8, workdir)
    flip_byte(workdir / "checkpoints" / "8")
    procs = start_processes(workdir, tfds_dir, "--config.train.num_steps=12", *RUN)
    try:
        errs = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()  # a no-op once they have exited
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err[-3000:]
        assert "checkpoint step 8 is damaged (checksum mismatch in " in err, err[-3000:]
        assert f"resumed from {workdir}/checkpoints/4" in err
    assert sorted(p.name for p in (workdir / "checkpoints_damaged").iterdir()) == ["8"]
    assert runner.checkpoint_steps(workdir) == [4, 8, 12]
    params = runner.load_params(workdir, 12)
    for k, v in reference[1].items():  # other devices, other reduction order: not bit-exact
        np.testing.assert_allclose(params[k], v, rtol=0, atol=1e-5, err_msg=k)


def test_orbax_alone_restores_a_flipped_byte_silently(tmp_path, stopped_at_8):
    """Why zoo keeps checksums: tensorstore's OCDBT/zarr chunks carry none, so orbax returns
    a changed value without an error (if this starts failing, orbax checks them itself)."""
    step_dir = tmp_path / "8"
    shutil.copytree(stopped_at_8 / "checkpoints" / "8", step_dir)
    flip_byte(step_dir)
    good = _flat(modeldir.restore_numpy(stopped_at_8 / "checkpoints" / "8" / "state"))
    bad = _flat(modeldir.restore_numpy(step_dir / "state"))
    changed = [k for k in good if not np.array_equal(good[k], bad[k])]
    assert len(changed) == 1, changed


def test_every_step_damaged_is_an_error_not_a_fresh_start(tmp_path, tfds_dir, stopped_at_8, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(stopped_at_8, workdir)
    flip_byte(workdir / "checkpoints" / "8")
    _missing_metadata(workdir / "checkpoints" / "4")
    code = runner.train_in_process(workdir, tfds_dir, "--config.train.num_steps=12", *RUN)
    err = capsys.readouterr().err
    assert code == 2
    assert f"every checkpoint in {workdir}/checkpoints is damaged" in err
    assert "step 8: checksum mismatch in " in err and "step 4: missing state/_METADATA" in err
    assert "use another --workdir" in err
    assert runner.checkpoint_steps(workdir) == [4, 8]  # nothing moved, nothing trained
    assert not (workdir / "checkpoints_damaged").exists()
    assert max(r["step"] for r in runner.metrics(workdir)) == 8


def test_checkpoint_without_checksums_still_restores_unverified(
    tmp_path, tfds_dir, stopped_at_8, reference, capsys, caplog
):
    """A step saved before zoo wrote checksums (no checksums/ item) resumes, with a warning."""
    workdir = tmp_path / "run"
    shutil.copytree(stopped_at_8, workdir)
    shutil.rmtree(workdir / "checkpoints" / "8" / "checksums")
    said(capsys, caplog)
    assert runner.train_in_process(workdir, tfds_dir, "--config.train.num_steps=12", *RUN) == 0
    err = said(capsys, caplog)
    assert "checkpoint step 8 has no checksums" in err and "unverified" in err
    assert f"resumed from {workdir}/checkpoints/8" in err
    params = runner.load_params(workdir, 12)
    for k, v in reference[1].items():
        np.testing.assert_array_equal(params[k], v, err_msg=k)


def test_checksums_are_saved_with_each_step(stopped_at_8):
    saved = json.loads((stopped_at_8 / "checkpoints" / "8" / "checksums" / "metadata").read_text())
    assert "params/encoder_layer_0/self_attn/query/kernel" in saved["state"]
    assert all(0 <= v < 2**32 for v in saved["state"].values())
    assert isinstance(saved["data"], int)
