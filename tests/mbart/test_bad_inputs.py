"""`zoo convert mbart` / `zoo translate` / `zoo spm` on bad input: one clear line, exit 2.

A converted copy of the tiny cc25 fixture (vocabulary 99, 32 positions) with a sentencepiece
model trained to fit it is the model; it translates nonsense, which is all these tests need.
"""

from __future__ import annotations

import io
import itertools
import json
import shutil

import pytest

from tests.train import runner
from zoo import cli
from zoo.mbart.tokenizer import train_sentencepiece

CC25 = runner.REPO / "tests" / "fixtures" / "mbart" / "cc25"
WORDS = ["".join(p) for p in itertools.product("abcdefgh", repeat=3)][:300]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate_errors")
    lines = [" ".join(WORDS[i : i + 6]) for i in range(0, 300, 3)]
    spm = train_sentencepiece(root / "spm", 72, sentences=lines)  # 99 ids, as the fixture
    out = root / "model"
    assert cli.main(["convert", "mbart", str(CC25), str(out), "--spm", str(spm)]) == 0
    return out


def _translate(monkeypatch, capsys, model, text: bytes, *flags: str):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text), encoding="utf-8"))
    capsys.readouterr()
    args = ["translate", "--checkpoint", str(model), "--src-lang", "en_XX", "--tgt-lang", "de_DE"]
    code = cli.main([*args, "--beam", "1", *flags])
    return code, capsys.readouterr()


def test_long_lines_are_cut_with_a_warning_that_counts_and_names_them(
    model_dir, monkeypatch, capsys, caplog
):
    text = ("aaa bbb\n" + " ".join(WORDS[:40]) + "\nccc\n").encode()
    with caplog.at_level("WARNING", logger="zoo.mbart.translate"):
        code, out = _translate(monkeypatch, capsys, model_dir, text)
    assert code == 0
    assert len(out.out.splitlines()) == 3
    assert "1 input lines are longer than the model's 32 positions" in caplog.text
    assert "(lines 2)" in caplog.text


def test_non_utf8_input_names_the_line_and_byte(model_dir, monkeypatch, capsys):
    code, out = _translate(monkeypatch, capsys, model_dir, b"aaa bbb\n\xff\xfe ccc\n")
    assert code == 2
    assert out.err.strip() == (
        "zoo: error: stdin, line 2: byte 0xff at column 1 is not UTF-8 text; convert the input "
        "to UTF-8 (e.g. iconv -t UTF-8)"
    )


def test_input_that_is_a_directory(model_dir, monkeypatch, capsys, tmp_path):
    code, out = _translate(monkeypatch, capsys, model_dir, b"", "--input", str(tmp_path))
    assert code == 2 and f"--input {tmp_path} is a directory" in out.err


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--max-len-b", "-3"), "--max-len-b -3 must be an integer >= 0"),
        (("--beam", "0"), "--beam 0 must be an integer >= 1"),
        (("--diverse-groups", "3"), "--diverse-groups 3 must divide --beam 1"),
    ],
)
def test_out_of_range_flags_name_the_flag(model_dir, monkeypatch, capsys, flags, message):
    monkeypatch.setattr("sys.stdin", io.StringIO("aaa\n"))
    capsys.readouterr()
    args = ["translate", "--checkpoint", str(model_dir), "--src-lang", "en_XX"]
    code = cli.main([*args, "--tgt-lang", "de_DE", "--beam", "1", *flags])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_model_json_that_no_longer_fits_params(model_dir, monkeypatch, capsys, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(model_dir, edited)
    meta = json.loads((edited / "model.json").read_text())
    meta["config"]["encoder_layers"] += 1
    (edited / "model.json").write_text(json.dumps(meta))
    code, out = _translate(monkeypatch, capsys, edited, b"aaa\n")
    assert code == 2
    assert "parameter encoder_layer_2/" in out.err and "absent in params/" in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_garbage_sentencepiece_model_in_a_model_dir(model_dir, monkeypatch, capsys, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "sentencepiece.bpe.model").write_bytes(b"garbage")
    code, out = _translate(monkeypatch, capsys, broken, b"aaa\n")
    assert code == 2 and "is not a sentencepiece model" in out.err
    assert len(out.err.strip().splitlines()) == 1


def test_a_mistyped_local_path_is_no_such_file_not_a_hub_name(monkeypatch, capsys, tmp_path):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["convert", "mbart", "runs/mbrat", str(tmp_path / "out")]) == 2
    assert "runs/mbrat does not exist (no such file or directory)" in capsys.readouterr().err


def test_spm_with_too_small_a_vocabulary_is_one_clear_line(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("hello world\nanother line of text\n")
    args = ["spm", "--input", str(corpus), "--model-prefix", str(tmp_path / "s")]
    assert cli.main([*args, "--vocab-size", "1000"]) == 2
    err = capsys.readouterr().err
    assert "sentencepiece refused --vocab-size 1000" in err and len(err.splitlines()) == 1
