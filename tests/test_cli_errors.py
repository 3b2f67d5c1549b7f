"""`zoo train` on a bad recipe or a bad value: exit 2 and one line that names the file or the
flag, never a traceback; nothing is written to the workdir."""

from __future__ import annotations

import pytest

from zoo import cli


def _train(tmp_path, config: str, *overrides: str) -> int:
    return cli.main(["train", "--config", config, "--workdir", str(tmp_path / "run"), *overrides])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("zoo: error:")]
    assert len(lines) == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return lines[0]


def test_recipe_that_raises_names_the_recipe_and_its_line(tmp_path, capsys):
    recipe = tmp_path / "broken.py"
    recipe.write_text("def get_config(variant):\n    return {}['model']\n")
    assert _train(tmp_path, f"{recipe}:tiny") == 2
    line = _one_error_line(capsys)
    assert str(recipe) in line and "KeyError" in line and "line 2" in line
    assert not (tmp_path / "run").exists()


def test_recipe_that_fails_at_import_names_the_line(tmp_path, capsys):
    recipe = tmp_path / "broken.py"
    recipe.write_text("import math\nx = 1 / 0\n\ndef get_config(variant):\n    pass\n")
    assert _train(tmp_path, f"{recipe}:tiny") == 2
    line = _one_error_line(capsys)
    assert "ZeroDivisionError" in line and "line 2" in line


def test_recipe_with_a_syntax_error(tmp_path, capsys):
    recipe = tmp_path / "broken.py"
    recipe.write_text("def get_config(variant):\n    return (\n")
    assert _train(tmp_path, f"{recipe}:tiny") == 2
    line = _one_error_line(capsys)
    assert f"recipe {recipe}, line" in line and "syntax error" in line


def test_recipe_without_get_config(tmp_path, capsys):
    recipe = tmp_path / "empty.py"
    recipe.write_text("X = 1\n")
    assert _train(tmp_path, f"{recipe}:tiny") == 2
    assert "has no get_config(variant) function" in _one_error_line(capsys)


def test_config_that_is_a_directory(tmp_path, capsys):
    assert _train(tmp_path, f"{tmp_path}:tiny") == 2
    assert "directory" in _one_error_line(capsys)


def test_config_that_does_not_exist(tmp_path, capsys):
    assert _train(tmp_path, "recipes/smok.py:tiny") == 2
    assert "recipes/smok.py" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.optim.learning_rate=-1", "optim.learning_rate"),
        ("--config.model.dropout=2.0", "dropout"),
        ("--config.train.num_steps=-5", "train.num_steps=-5 must be >= 1"),
        ("--config.train.log_every=0", "train.log_every=0 must be >= 1"),
        ("--config.data.global_batch_size=0", "data.global_batch_size=0 must be >= 1"),
    ],
)
def test_out_of_range_values_are_refused_before_anything_is_written(
    override, message, tmp_path, tfds_dir, capsys
):
    code = _train(tmp_path, "recipes/smoke.py:tiny", f"--config.task.data_dir={tfds_dir}", override)
    assert code == 2
    line = _one_error_line(capsys)
    assert message in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()
