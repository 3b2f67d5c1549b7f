"""`zoo compile`: AOT compilation of a recipe's train step for a Cloud TPU topology."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.train import runner

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install -e '.[tpu]'); it is what compiles for TPU",
)


@needs_libtpu
def test_compile_says_when_libtpu_is_held_by_another_process():
    # Placed first: later tests in this file load libtpu into the pytest process itself.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from zoo.train import aot; aot.tpu_topology('v5e:2x2'); print('held', flush=True); "
            "import time; time.sleep(120)",
        ],
        cwd=runner.REPO,
        env=runner.env_for(1),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = subprocess.run(
            [sys.executable, "-m", "zoo.cli", "compile", "--config", "recipes/smoke.py:tiny"]
            + ["--topology", "v5e:2x2"],
            cwd=runner.REPO,
            env=runner.env_for(1),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "libtpu is in use by another process" in proc.stderr
    assert "Traceback" not in proc.stderr


@needs_libtpu
@pytest.mark.parametrize("topology", ["v5e:2x4", "v4:2x2x1"])
def test_compile_smoke_recipe_for_tpu_topology(topology, tmp_path):
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo.cli",
            "compile",
            "--config",
            "recipes/smoke.py:tiny",
            "--topology",
            topology,
            "--config.mesh.data=2",
            "--config.mesh.fsdp=-1",
            "--json",
            str(report),
        ],
        cwd=runner.REPO,
        env=runner.env_for(1),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"topology {topology}:" in out
    assert "fits: the TPU compiler accepted it" in out
    assert "'data': 2, 'fsdp': 4, 'tensor': 1" in out or "'data': 2, 'fsdp': 2" in out
    flops = float(out.split("FLOPs per step: model ")[1].split()[0])
    assert flops > 0
    # --json: the same report, for tables (benchmarks/compile_table.py)
    saved = json.loads(report.read_text())
    assert saved["topology"] == topology and saved["fits"] is True
    assert saved["model_flops_per_step"] == pytest.approx(flops, rel=1e-3)
    assert saved["compile_seconds"] > 0


@needs_libtpu
def test_compile_reports_when_a_recipe_does_not_fit():
    from zoo import tasks
    from zoo.train import aot
    from zoo.train import config as zconfig

    c = zconfig.load("recipes/smoke.py:tiny")
    # ~2.1 B replicated parameters plus Adam moments cannot fit in a v5e chip's 16 GiB.
    zconfig.apply_overrides(
        c,
        [
            "--config.model.vocab_size=1000000",
            "--config.model.d_model=2048",
            "--config.model.num_heads=16",
            "--config.mesh.data=-1",
        ],
    )
    report = aot.compile_for_topology(c, tasks.get_task(c), "v5e:2x2")
    assert not report["fits"]
    assert report["total_bytes"] > report["hbm_bytes"]


def test_unknown_topology_is_a_clear_error():
    from zoo.train import aot

    if importlib.util.find_spec("libtpu") is None:
        with pytest.raises(RuntimeError, match="needs libtpu"):
            aot.tpu_topology("v9x:2x2")
    else:
        with pytest.raises(ValueError, match="chip 'v9x' is not one of"):
            aot.tpu_topology("v9x:2x2")
