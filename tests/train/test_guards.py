"""Clear errors for bad configs, and the NaN guard. Nothing already saved is overwritten."""

from __future__ import annotations

import os

import pytest

from tests.train import runner
from zoo import cli
from zoo.train import mesh as zmesh


def _snapshot(workdir) -> dict[str, float]:
    out = {}
    for root, _, files in os.walk(workdir / "checkpoints"):
        for f in files:
            p = os.path.join(root, f)
            out[p] = os.path.getmtime(p)
    return out


def test_unknown_config_key_names_the_key_and_suggests(tmp_path, tfds_dir, capsys):
    code = cli.main(
        [
            "train",
            "--config",
            "recipes/smoke.py:tiny",
            "--workdir",
            str(tmp_path),
            "--config.optim.learnin_rate=1e-3",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown config key 'optim.learnin_rate'" in err
    assert "optim.learning_rate" in err
    assert not (tmp_path / "checkpoints").exists()


def test_wrongly_typed_override_is_rejected(tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "--config",
            "recipes/smoke.py:tiny",
            "--workdir",
            str(tmp_path),
            "--config.train.num_steps=many",
        ]
    )
    assert code == 2
    assert "train.num_steps" in capsys.readouterr().err


@pytest.mark.parametrize(
    "mesh, message",
    [
        ({"data": 3, "fsdp": -1, "tensor": 1}, "does not divide the 8 devices"),
        ({"data": 2, "fsdp": 2, "tensor": 1}, "needs 4 devices but 8 are available"),
        ({"data": -1, "fsdp": -1, "tensor": 1}, "at most one axis may be -1"),
    ],
)
def test_mesh_that_does_not_fit_the_devices(mesh, message):
    with pytest.raises(ValueError, match=message):
        zmesh.mesh_shape(mesh, 8)


def test_mesh_error_from_the_command_line(tmp_path, tfds_dir, capsys):
    code = runner.train_in_process(
        tmp_path, tfds_dir, "--config.mesh.data=3", "--config.mesh.fsdp=-1"
    )
    assert code == 2
    assert "--config.mesh" in capsys.readouterr().err


def test_batch_not_divisible_by_data_parallel_size(tmp_path, tfds_dir, capsys):
    # 8 host devices in this process: data=-1 fills 8, and 12 is not a multiple of 8.
    code = runner.train_in_process(tmp_path, tfds_dir, "--config.data.global_batch_size=12")
    err = capsys.readouterr().err
    assert code == 2
    assert "data.global_batch_size=12 is not divisible by the data-parallel size 8" in err
    assert "--config.data.global_batch_size=8" in err


def test_workdir_from_an_incompatible_config_is_refused_untouched(tmp_path, tfds_dir):
    workdir = tmp_path / "run"
    runner.run_train(workdir, tfds_dir, "--config.train.num_steps=5")
    before = _snapshot(workdir)
    proc = runner.run_train(
        workdir, tfds_dir, "--config.train.num_steps=10", "--config.model.d_model=64", check=False
    )
    assert proc.returncode == 2
    assert "holds a checkpoint of a different model" in proc.stderr
    assert "model.d_model: 32 (saved) vs 64 (now)" in proc.stderr
    assert "nothing was overwritten" in proc.stderr
    assert _snapshot(workdir) == before


def test_nan_loss_stops_without_saving_the_bad_state(tmp_path, tfds_dir):
    workdir = tmp_path / "run"
    # An absurd learning rate without clipping blows the parameters up within a few steps.
    proc = runner.run_train(
        workdir,
        tfds_dir,
        "--config.optim.learning_rate=1e30",
        "--config.optim.warmup_steps=0",
        "--config.optim.clip_norm=0",
        "--config.optim.schedule=constant",
        "--config.checkpoint.every_steps=1",
        "--config.checkpoint.async_save=false",
        check=False,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "was not saved" in proc.stderr
    rows = runner.losses(workdir)
    bad_step = int(proc.stderr.split(" at step ")[1].split(":")[0])
    steps = runner.checkpoint_steps(workdir)
    assert all(s < bad_step for s in steps)
    assert all(s < bad_step for s in rows)
    if steps:  # what was saved is finite
        import numpy as np

        params = runner.load_params(workdir, steps[-1])
        assert all(np.isfinite(v).all() for v in params.values())
