"""Runs `zoo train` as a real subprocess and reads what it leaves in the workdir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def env_for(devices: int = 1, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def train_cmd(workdir, tfds_dir, *overrides: str, variant: str = "tiny") -> list[str]:
    return [
        sys.executable,
        "-m",
        "zoo.cli",
        "train",
        "--config",
        f"recipes/smoke.py:{variant}",
        "--workdir",
        str(workdir),
        f"--config.task.data_dir={tfds_dir}",
        *overrides,
    ]


def run_train(
    workdir,
    tfds_dir,
    *overrides: str,
    devices: int = 1,
    variant: str = "tiny",
    check: bool = True,
    **env,
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        train_cmd(workdir, tfds_dir, *overrides, variant=variant),
        cwd=REPO,
        env=env_for(devices, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"zoo train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def train_in_process(workdir, tfds_dir, *overrides: str) -> int:
    """`zoo train` on the tiny recipe in this process (8 host devices); returns the exit status."""
    from zoo import cli

    return cli.main(
        [
            "train",
            "--config",
            "recipes/smoke.py:tiny",
            "--workdir",
            str(workdir),
            f"--config.task.data_dir={tfds_dir}",
            *overrides,
        ]
    )


def start_train(workdir, tfds_dir, *overrides: str, devices: int = 1, **env) -> subprocess.Popen:
    return subprocess.Popen(
        train_cmd(workdir, tfds_dir, *overrides),
        cwd=REPO,
        env=env_for(devices, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def metrics(workdir) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def losses(workdir) -> dict[int, float]:
    """step -> loss (the last row wins if a step was logged twice)."""
    return {m["step"]: m["loss"] for m in metrics(workdir) if "loss" in m}


def checkpoint_steps(workdir) -> list[int]:
    d = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.exists() else []


def load_params(workdir, step: int) -> dict[str, np.ndarray]:
    """Parameters saved at `step`, flattened to 'a/b/c' -> array (read with orbax)."""
    from flax import traverse_util

    from zoo.io import modeldir

    tree = modeldir.restore_numpy(Path(workdir).resolve() / "checkpoints" / str(step) / "state")
    return {
        k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree["params"], sep="/").items()
    }
