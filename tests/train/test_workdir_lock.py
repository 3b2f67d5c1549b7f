"""One run per workdir: a second `zoo train` on a workdir in use is refused at start with
one line naming the holder; once the first ends (here: preempted), a rerun works."""

from __future__ import annotations

import signal
import socket
import time

from tests.train import runner


def test_second_run_on_a_busy_workdir_is_refused_then_rerun_works(tmp_path, tfds_dir, capsys):
    workdir = tmp_path / "run"
    steps = [
        "--config.checkpoint.every_steps=0",
        "--config.optim.schedule=constant",
        "--config.optim.warmup_steps=2",
    ]
    first = runner.start_train(workdir, tfds_dir, "--config.train.num_steps=100000", *steps)
    try:
        deadline = time.time() + 240
        while not runner.metrics(workdir):  # it is training, so it holds the lock
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.time() < deadline, "the first run made no progress"
            time.sleep(0.05)
        code = runner.train_in_process(workdir, tfds_dir, "--config.train.num_steps=4", *steps)
        err = capsys.readouterr().err
        assert code == 2
        assert (
            f"zoo: error: --workdir {workdir} is in use by another `zoo train` (pid {first.pid} "
            f"on host {socket.gethostname()}" in err
        ), err[-2000:]
        assert "wait for it to finish or use another --workdir" in err
        assert len([line for line in err.splitlines() if "zoo: error" in line]) == 1
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 75
    saved = runner.checkpoint_steps(workdir)[-1]
    code = runner.train_in_process(
        workdir, tfds_dir, f"--config.train.num_steps={saved + 2}", *steps
    )
    assert code == 0
    assert runner.checkpoint_steps(workdir)[-1] == saved + 2
