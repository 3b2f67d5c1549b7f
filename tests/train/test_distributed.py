"""The same training on 1 device, 8 forced host devices, and 2 processes gives the same losses."""

from __future__ import annotations

import socket
import subprocess

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


def test_two_processes_match_one_process(tmp_path, tfds_dir):
    runner.run_train(tmp_path / "single", tfds_dir, *STEPS, devices=2)
    port = _free_port()
    procs = []
    for pid in range(2):
        procs.append(
            runner.start_train(
                tmp_path / "multi",
                tfds_dir,
                *STEPS,
                devices=1,
                ZOO_COORDINATOR=f"127.0.0.1:{port}",
                ZOO_NUM_PROCESSES="2",
                ZOO_PROCESS_ID=str(pid),
            )
        )
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    single, multi = runner.losses(tmp_path / "single"), runner.losses(tmp_path / "multi")
    assert sorted(multi) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(
        [multi[s] for s in single], [single[s] for s in single], rtol=0, atol=1e-5
    )
