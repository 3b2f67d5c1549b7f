"""Preemption and crashes: SIGTERM saves and resumes bit-exactly; SIGKILL resumes from the
last complete checkpoint. Each interrupted run is compared with an uninterrupted one."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

from tests.train import runner

PREEMPTED_EXIT_CODE = 75
RUN = ["--config.train.num_steps=60", "--config.optim.warmup_steps=10"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tfds_dir):
    """An uninterrupted run: every step's loss and the final parameters."""
    workdir = tmp_path_factory.mktemp("reference")
    runner.run_train(workdir, tfds_dir, *RUN, "--config.checkpoint.every_steps=20")
    return runner.losses(workdir), runner.load_params(workdir, 60)


def _wait_for_steps(workdir, proc, n: int, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while len(runner.metrics(workdir)) < n:
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
            )
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("run made no progress")
        time.sleep(0.01)


def _assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sigterm_saves_then_resume_is_bit_exact(tmp_path, tfds_dir, reference):
    ref_losses, ref_params = reference
    workdir = tmp_path / "run"
    # Slow steps down (tiny batches, a checkpoint every step) so SIGTERM lands mid-run.
    proc = runner.start_train(workdir, tfds_dir, *RUN, "--config.checkpoint.every_steps=7")
    _wait_for_steps(workdir, proc, 12)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err[-3000:]
    assert "rerun the same command" in err
    saved = runner.checkpoint_steps(workdir)[-1]
    assert 12 <= saved < 60
    # The step it stopped at was logged and saved: nothing computed was lost.
    assert max(runner.losses(workdir)) == saved

    runner.run_train(workdir, tfds_dir, *RUN, "--config.checkpoint.every_steps=7")
    losses = runner.losses(workdir)
    assert sorted(losses) == list(range(1, 61))
    assert losses == ref_losses  # exact float equality, step by step
    _assert_same_params(runner.load_params(workdir, 60), ref_params)


def test_sigkill_mid_run_resumes_from_last_complete_checkpoint(tmp_path, tfds_dir, reference):
    ref_losses, ref_params = reference
    workdir = tmp_path / "run"
    # A checkpoint every step, saved asynchronously: the kill very likely lands mid-save.
    proc = runner.start_train(workdir, tfds_dir, *RUN, "--config.checkpoint.every_steps=1")
    _wait_for_steps(workdir, proc, 15)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    complete = runner.checkpoint_steps(workdir)
    assert complete, "no checkpoint was completed before the kill"

    proc2 = runner.run_train(workdir, tfds_dir, *RUN, "--config.checkpoint.every_steps=1")
    assert f"resumed from {workdir}/checkpoints/{complete[-1]}" in proc2.stderr
    losses = runner.losses(workdir)
    for step in range(complete[-1] + 1, 61):
        assert losses[step] == ref_losses[step], step
    _assert_same_params(runner.load_params(workdir, 60), ref_params)
