"""train.max_seconds: a run ends at the first step past its budget of training-step seconds
(compilation and evals not counted), saved and evaluated there, and a rerun of the same
command does not train on."""

from __future__ import annotations

from tests.train import runner

# Far more steps than a few seconds allow: the budget, not num_steps, ends the run.
RUN = (
    "--config.train.num_steps=100000",
    "--config.checkpoint.every_steps=100000",
    "--config.eval.every_steps=100000",
    "--config.eval.num_batches=1",
)


def test_budget_ends_the_run_saved_and_evaluated(tmp_path, tfds_dir):
    workdir = tmp_path / "run"
    assert runner.train_in_process(workdir, tfds_dir, *RUN, "--config.train.max_seconds=8") == 0
    rows = runner.metrics(workdir)
    last = max(runner.losses(workdir))
    assert 1 <= last < 100000
    assert runner.checkpoint_steps(workdir) == [last]  # saved where it stopped
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [last]  # and evaluated there
    # It stopped within a step of the budget (a row is written one step late, so the
    # last two rows may both show the budget spent).
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows[-1]["train_seconds"] >= 8.0
    assert train_rows[-3]["train_seconds"] < 8.0
    # Compilation is not counted: the first step's row shows none of its seconds.
    assert train_rows[0]["train_seconds"] == 0.0 and train_rows[0]["step_time"] > 0.1
    assert train_rows[-1]["wall_time"] > train_rows[-1]["train_seconds"]
    assert (workdir / "learning_curves.png").stat().st_size > 0

    # The same command again: the budget is spent (wall_time counts on), nothing trains.
    assert runner.train_in_process(workdir, tfds_dir, *RUN, "--config.train.max_seconds=8") == 0
    assert runner.checkpoint_steps(workdir) == [last]
    assert max(runner.losses(workdir)) == last

    # A larger budget continues the same run from where it stopped.
    assert runner.train_in_process(workdir, tfds_dir, *RUN, "--config.train.max_seconds=10") == 0
    assert max(runner.losses(workdir)) > last
    assert runner.checkpoint_steps(workdir)[-1] == max(runner.losses(workdir))
