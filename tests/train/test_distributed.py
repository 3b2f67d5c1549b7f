"""The same training on 1 device, 8 forced host devices, and 2 processes gives the same losses."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import numpy as np

from tests.train import runner

STEPS = ["--config.train.num_steps=5", "--config.checkpoint.every_steps=0"]


def test_eight_device_mesh_matches_one_device(tmp_path, tfds_dir):
    runner.run_train(tmp_path / "one", tfds_dir, *STEPS, devices=1)
    runner.run_train(
        tmp_path / "eight",
        tfds_dir,
        *STEPS,
        "--config.mesh.data=2",
        "--config.mesh.fsdp=2",
        "--config.mesh.tensor=2",
        devices=8,
    )
    one, eight = runner.losses(tmp_path / "one"), runner.losses(tmp_path / "eight")
    assert sorted(one) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([eight[s] for s in one], [one[s] for s in one], rtol=0, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(workdir, tfds_dir, *overrides: str, n: int = 2) -> list[subprocess.Popen]:
    """`zoo train` as n processes of one CPU device each, joined by jax.distributed on localhost."""
    port = _free_port()
    return [
        runner.start_train(
            workdir,
            tfds_dir,
            *overrides,
            devices=1,
            ZOO_COORDINATOR=f"127.0.0.1:{port}",
            ZOO_NUM_PROCESSES=str(n),
            ZOO_PROCESS_ID=str(pid),
        )
        for pid in range(n)
    ]


def finish(procs: list[subprocess.Popen], expect: int = 0) -> None:
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == expect, err[-4000:]


def run_processes(workdir, tfds_dir, *overrides: str, n: int = 2) -> None:
    finish(start_processes(workdir, tfds_dir, *overrides, n=n))


def test_two_processes_match_one_process(tmp_path, tfds_dir):
    runner.run_train(tmp_path / "single", tfds_dir, *STEPS, devices=2)
    run_processes(tmp_path / "multi", tfds_dir, *STEPS)
    single, multi = runner.losses(tmp_path / "single"), runner.losses(tmp_path / "multi")
    assert sorted(multi) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(
        [multi[s] for s in single], [single[s] for s in single], rtol=0, atol=1e-5
    )


def test_resume_on_a_different_process_count(tmp_path, tfds_dir):
    """A checkpoint written by 2 processes resumes in 1 process (and back) on the same batches.

    The iterator state is global ({epoch, batch_in_epoch}) and each process takes its rows of
    the same global batch, so with the same global batch size the data order is unchanged.
    """
    every = ["--config.checkpoint.every_steps=0"]
    runner.run_train(tmp_path / "ref", tfds_dir, "--config.train.num_steps=6", *every, devices=2)
    work = tmp_path / "moved"
    run_processes(work, tfds_dir, "--config.train.num_steps=2", *every)  # orbax, 2 hosts
    assert runner.checkpoint_steps(work) == [2]
    runner.run_train(work, tfds_dir, "--config.train.num_steps=4", *every, devices=2)
    run_processes(work, tfds_dir, "--config.train.num_steps=6", *every)
    assert runner.checkpoint_steps(work) == [2, 4, 6]
    ref, moved = runner.losses(tmp_path / "ref"), runner.losses(work)
    assert sorted(moved) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([moved[s] for s in ref], [ref[s] for s in ref], rtol=0, atol=1e-5)
    moved_params, ref_params = runner.load_params(work, 6), runner.load_params(tmp_path / "ref", 6)
    assert moved_params.keys() == ref_params.keys()
    for k, v in ref_params.items():
        np.testing.assert_allclose(moved_params[k], v, rtol=0, atol=1e-5, err_msg=k)


def test_unknown_zoo_distributed_value_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_DISTRIBUTED", "yes")
    assert runner.train_in_process(tmp_path / "w", tmp_path) == 2
    assert "ZOO_DISTRIBUTED='yes': use 'auto'" in capsys.readouterr().err


def test_sigterm_to_one_process_saves_all_at_the_same_step(tmp_path, tfds_dir):
    """A preemption notice reaching one host: every process saves the same step, exits 75,
    and the rerun ends where an uninterrupted run does."""
    run = ["--config.train.num_steps=40", "--config.checkpoint.every_steps=0"]
    runner.run_train(tmp_path / "ref", tfds_dir, *run, devices=2)
    work = tmp_path / "run"
    procs = start_processes(work, tfds_dir, *run)
    deadline = time.time() + 240
    while len(runner.metrics(work)) < 5:
        assert all(p.poll() is None for p in procs), "a process ended early"
        assert time.time() < deadline, "no progress"
        time.sleep(0.01)
    procs[1].send_signal(signal.SIGTERM)
    finish(procs, expect=75)
    saved = runner.checkpoint_steps(work)
    assert len(saved) == 1 and 5 <= saved[0] < 40
    run_processes(work, tfds_dir, *run)
    ref, got = runner.losses(tmp_path / "ref"), runner.losses(work)
    assert sorted(got) == list(range(1, 41))
    np.testing.assert_allclose([got[s] for s in ref], [ref[s] for s in ref], rtol=0, atol=1e-5)
