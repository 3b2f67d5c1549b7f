"""`zoo convert lm` + `zoo generate` end to end, in-process (zoo.cli.main, captured stdout).

The fixture llama3_gqa carries a byte-level BPE tokenizer.json and transformers' greedy
continuation of a prompt (tests/fixtures/make_lm_fixtures.py).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import tokenizers

import zoo.lm
from zoo import cli
from zoo.lm.generate import TextStream, generate

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "lm")
EXPECTED = dict(np.load(os.path.join(FIXTURES, "llama3_gqa.npz")))
PROMPT, TEXT = str(EXPECTED["cli_prompt"]), str(EXPECTED["cli_text"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("lm") / "model")
    assert cli.main(["convert", "lm", os.path.join(FIXTURES, "llama3_gqa"), out]) == 0
    return out


def zoo_generate(monkeypatch, capsys, stdin: str, *flags: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    rc = cli.main(["generate", *flags])
    out, err = capsys.readouterr()
    return rc, out, err


def test_convert_then_greedy_generate_prints_transformers_continuation(
    converted, monkeypatch, capsys
):
    rc, out, _ = zoo_generate(
        monkeypatch, capsys, f"{PROMPT}\n{PROMPT}\n", "--checkpoint", converted,
        "--max-new-tokens", "6",
    )  # fmt: skip
    assert rc == 0
    assert out == f"{TEXT}\n{TEXT}\n"  # one continuation per prompt line


def test_sampling_streams_what_sample_search_draws(converted, monkeypatch, capsys):
    flags = ("--temperature", "1.3", "--top-k", "20", "--top-p", "0.9", "--seed", "5")
    rc, out, _ = zoo_generate(
        monkeypatch, capsys, PROMPT + "\n", "--checkpoint", converted, "--max-new-tokens", "7",
        *flags,
    )  # fmt: skip
    assert rc == 0
    model, params = zoo.lm.load(converted)
    tok = tokenizers.Tokenizer.from_file(os.path.join(converted, "tokenizer.json"))
    ids = [tok.encode(PROMPT).ids]
    tokens = generate(
        model, params, ids, max_new_tokens=7, method="sample", temperature=1.3, top_k=20,
        top_p=0.9, seed=5,
    ).tokens[0]  # fmt: skip
    eos = model.config.eos_token_id
    kept = list(tokens[: list(tokens).index(eos)] if eos in tokens else tokens)
    assert out == tok.decode(kept, skip_special_tokens=True) + "\n"


def test_beam_prints_the_best_beam(converted, monkeypatch, capsys):
    rc, out, _ = zoo_generate(
        monkeypatch, capsys, PROMPT + "\n", "--checkpoint", converted, "--beam", "3",
        "--max-new-tokens", "5",
    )  # fmt: skip
    assert rc == 0 and out.endswith("\n") and out.count("\n") == 1


def test_a_checkpoint_without_tokenizer_json_says_which_file_and_what_to_pass(
    monkeypatch, capsys
):
    rc, out, err = zoo_generate(
        monkeypatch, capsys, "hi\n", "--checkpoint", os.path.join(FIXTURES, "llama_linear")
    )
    assert rc == 2 and out == ""
    assert "tokenizer.json" in err and "--tokenizer FILE" in err and err.count("\n") == 1


def test_bad_flags_are_one_line_errors(converted, monkeypatch, capsys):
    flags = ("--checkpoint", converted, "--top-p", "0")
    rc, _, err = zoo_generate(monkeypatch, capsys, "hi\n", *flags)
    assert rc == 2 and "--top-p 0.0 must be in (0, 1]" in err


def test_text_stream_holds_back_a_split_utf8_character():
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.decoder = tokenizers.decoders.ByteLevel()
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    tok.add_tokens(sorted(alphabet))
    byte_to_char = {b: c for b, c in enumerate(_bytes_to_unicode())}
    ids = [tok.token_to_id(byte_to_char[b]) for b in "aé".encode()]
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids]
    assert pieces == ["a", "", "é"] and stream.finish() == ""


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table (what ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]
