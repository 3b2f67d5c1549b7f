"""Out-of-range config values fail at start with one line naming the key, the value and the
flag that fixes it; nothing is written."""

from __future__ import annotations

import pytest

from tests.train import runner


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.num_steps=0", "train.num_steps=0 must be >= 1"),
        ("train.log_every=0", "train.log_every=0 must be >= 1"),
        ("eval.every_steps=-1", "eval.every_steps=-1 must be >= 0"),
        ("checkpoint.every_steps=-5", "checkpoint.every_steps=-5 must be >= 0"),
        ("optim.grad_accum_steps=0", "optim.grad_accum_steps=0 must be >= 1"),
        ("data.global_batch_size=0", "data.global_batch_size=0 must be >= 1"),
        ("train.max_seconds=-1", "train.max_seconds=-1.0 must be a number >= 0"),
    ],
)
def test_out_of_range_value_names_the_key_and_the_flag(
    override, message, tmp_path, tfds_dir, capsys
):
    code = runner.train_in_process(tmp_path / "run", tfds_dir, f"--config.{override}")
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert len(lines) == 1 and message in lines[0], err[-2000:]
    assert f"--config.{override.split('=')[0]}=" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_workdir_that_is_a_file_is_refused(tmp_path, tfds_dir, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not a run folder")
    assert runner.train_in_process(path, tfds_dir) == 2
    assert f"--workdir {path} is a file; pass a directory" in capsys.readouterr().err
    assert path.read_text() == "not a run folder"
