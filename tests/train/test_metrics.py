"""What a run leaves to watch: metrics.jsonl rows, TensorBoard events, eval rows."""

from __future__ import annotations

import glob
import math

import pytest

from tests.train import runner


@pytest.fixture(scope="module")
def run(tmp_path_factory, tfds_dir):
    workdir = tmp_path_factory.mktemp("metrics_run")
    # In-process: 8 host devices, bucketed batches, eval at steps 4 and 8.
    code = runner.train_in_process(
        workdir,
        tfds_dir,
        "--config.train.num_steps=8",
        "--config.eval.every_steps=4",
        "--config.data.mode=bucket",
        "--config.train.log_every=2",
    )
    assert code == 0
    return workdir


def test_metrics_jsonl_has_the_promised_fields(run):
    rows = [r for r in runner.metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    for r in rows:
        for key in (
            "loss",
            "learning_rate",
            "grad_norm",
            "tokens_per_sec",
            "examples_per_sec",
            "mfu",
            "step_time",
            "padding_fraction",
        ):
            assert key in r and math.isfinite(r[key]), key
        assert 0 <= r["padding_fraction"] < 1
        assert 0 < r["mfu"] < 1
        assert r["tokens_per_sec"] > 0


def test_eval_rows_go_to_the_same_file(run):
    evals = [r for r in runner.metrics(run) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8]
    assert all(0 <= r["eval_accuracy"] <= 1 for r in evals)


def test_rows_carry_wall_time_and_the_run_ends_with_its_learning_curves(run):
    walls = [r["wall_time"] for r in runner.metrics(run)]
    assert walls == sorted(walls) and walls[0] >= 0
    png = run / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zoo_plot_overlays_runs_and_names_a_missing_workdir(run, tmp_path, capsys):
    from zoo import cli

    out = tmp_path / "both.png"
    assert cli.main(["plot", str(run), str(run), "--labels", "a,b", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["plot", str(run), "--labels", "a,b", "--out", str(out)]) == 2
    assert "2 labels for 1 workdirs" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing/metrics.jsonl: no metrics.jsonl" in err[0]


def test_tensorboard_event_files_are_written(run):
    assert glob.glob(str(run / "tensorboard" / "events.out.tfevents.*"))


def test_rerunning_a_finished_run_changes_nothing(run, tfds_dir):
    before = runner.metrics(run)
    code = runner.train_in_process(
        run,
        tfds_dir,
        "--config.train.num_steps=8",
        "--config.eval.every_steps=4",
        "--config.data.mode=bucket",
        "--config.train.log_every=2",
    )
    assert code == 0
    assert runner.metrics(run) == before


def test_packed_batches_train(tmp_path, tfds_dir):
    code = runner.train_in_process(
        tmp_path,
        tfds_dir,
        "--config.train.num_steps=6",
        "--config.data.mode=pack",
        "--config.data.global_batch_size=8",
    )
    assert code == 0
    losses = runner.losses(tmp_path)
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses.values())
