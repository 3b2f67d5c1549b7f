"""train.init_from: start from another run's parameters with a fresh optimizer."""

import numpy as np

from tests.train import runner


def test_init_from_a_workdir_starts_from_its_params_with_a_fresh_optimizer(tmp_path, tfds_dir):
    first, second = tmp_path / "first", tmp_path / "second"
    assert runner.train_in_process(first, tfds_dir, "--config.train.num_steps=5") == 0
    # The warmup's first learning rate is 0, so one step of a fresh optimizer leaves the
    # parameters exactly as loaded: the saved step-1 parameters are the first run's.
    code = runner.train_in_process(
        second,
        tfds_dir,
        f"--config.train.init_from={first}",
        "--config.train.num_steps=1",
        "--config.checkpoint.every_steps=1",
    )
    assert code == 0
    assert runner.losses(second).keys() == {1}  # the step counter restarted
    loaded, original = runner.load_params(second, 1), runner.load_params(first, 5)
    assert loaded.keys() == original.keys()
    for k in loaded:
        np.testing.assert_array_equal(loaded[k], original[k], err_msg=k)


def test_init_from_params_of_another_shape_is_a_clear_error(tmp_path, tfds_dir, capsys):
    first = tmp_path / "first"
    assert runner.train_in_process(first, tfds_dir, "--config.train.num_steps=2") == 0
    code = runner.train_in_process(
        tmp_path / "second",
        tfds_dir,
        f"--config.train.init_from={first}",
        "--config.model.mlp_dim=128",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "do not fit this model" in err and "fc1/bias is [64] there but [128] here" in err


def test_init_from_patterns_that_select_nothing_or_a_misfit_are_clear_errors(
    tmp_path, tfds_dir, capsys
):
    first = tmp_path / "first"
    assert runner.train_in_process(first, tfds_dir, "--config.train.num_steps=2") == 0
    code = runner.train_in_process(
        tmp_path / "none",
        tfds_dir,
        f"--config.train.init_from={first}",
        "--config.train.init_from_patterns=('^no_such_param',)",
    )
    assert code == 2
    assert "match no parameter of this model" in capsys.readouterr().err
    code = runner.train_in_process(
        tmp_path / "misfit",
        tfds_dir,
        f"--config.train.init_from={first}",
        "--config.train.init_from_patterns=('fc1',)",
        "--config.model.mlp_dim=128",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "init_from_patterns selects" in err and "fc1/bias" in err and "[64]" in err
