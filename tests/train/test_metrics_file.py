"""metrics.jsonl never keeps a torn line, and a step that runs again replaces its rows."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest

from tests.train import runner
from zoo.train import metrics as zmetrics

# The flags of test_checkpoint_faults (a constant schedule compiles the same for any
# num_steps, so in-process runs reuse its cached executables).
RUN = [
    "--config.checkpoint.every_steps=4",
    "--config.optim.schedule=constant",
    "--config.optim.warmup_steps=2",
]


def test_resume_drops_a_torn_line_and_the_rows_after_the_checkpoint(tmp_path, tfds_dir):
    workdir = tmp_path / "run"
    assert runner.train_in_process(workdir, tfds_dir, "--config.train.num_steps=6", *RUN) == 0
    # As if killed at step 7 mid-write: rows 5-6 are past the last checkpoint (4), and the
    # last line is half written.
    shutil.rmtree(workdir / "checkpoints" / "6")
    with open(workdir / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 3.4')
    assert runner.train_in_process(workdir, tfds_dir, "--config.train.num_steps=8", *RUN) == 0
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line is whole JSON
    assert [r["step"] for r in rows] == list(range(1, 9))


def test_complete_rows_keeps_whole_rows_up_to_the_step():
    text = '{"step": 1}\n{"step": 2, "eval_loss": 1.0}\n{"step": 3}\nnot json\n{"step": 2}\n{"st'
    assert (
        zmetrics.complete_rows(text, 2)
        == '{"step": 1}\n{"step": 2, "eval_loss": 1.0}\n{"step": 2}\n'
    )
    assert zmetrics.complete_rows(text, 0) == ""


def test_failed_write_leaves_no_torn_line(tmp_path, monkeypatch):
    """Disk full half-way through a row: the half row is cut off and the error is raised."""
    writer = zmetrics.MetricsWriter(str(tmp_path), start_step=0)
    writer.write(1, {"loss": 1.0})
    path = os.path.realpath(tmp_path / "metrics.jsonl")
    real_write = os.write

    def write_half_then_fail(fd, data):
        if os.path.realpath(f"/proc/self/fd/{fd}") != path:
            return real_write(fd, data)
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        writer.write(2, {"loss": 0.5, "learning_rate": 1e-3})
    monkeypatch.undo()
    assert [_no_clock(r) for r in runner.metrics(tmp_path)] == [{"step": 1, "loss": 1.0}]
    writer.write(2, {"loss": 0.5})  # space again: the next row lands whole
    writer.close()
    assert [r["step"] for r in runner.metrics(tmp_path)] == [1, 2]
    assert (tmp_path / "metrics.jsonl").read_text().endswith("\n")


def _no_clock(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "wall_time"}


def test_wall_time_counts_on_when_a_run_resumes(tmp_path):
    """Each row's wall_time grows; a resumed writer starts from the last kept row's."""
    first = zmetrics.MetricsWriter(str(tmp_path), start_step=0)
    first.write(1, {"loss": 1.0})
    first.write(2, {"loss": 0.9})
    first.close()
    rows = runner.metrics(tmp_path)
    assert 0 <= rows[0]["wall_time"] <= rows[1]["wall_time"]
    # Pretend the first run had trained for an hour by step 1 (the row kept on resume).
    text = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "loss": 1.0, "wall_time": 3600.0}\n' + text[1] + "\n"
    )
    resumed = zmetrics.MetricsWriter(str(tmp_path), start_step=1)  # step 2 is redone
    resumed.write(2, {"loss": 0.8})
    resumed.close()
    rows = runner.metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert 3600.0 <= rows[1]["wall_time"] < 3600.0 + 60
