"""The causal-LM task: packing is exact, documents become `[bos] text [eos]` pieces, bad
corpus settings are one clear error."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import linen as nn

from zoo.lm.task import CausalLMTask, corpus_texts
from zoo.train.config import load as load_recipe

REPO = Path(__file__).resolve().parents[2]


def tiny_config(tmp_path, **task):
    c = load_recipe(str(REPO / "recipes" / "lm.py") + ":tiny")
    c.task.data_dir = str(tmp_path / "data")
    for k, v in task.items():
        c.task[k] = v
    return c


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    words = "the cat sat on a mat while der Hund lief über die Straße".split()
    rng = np.random.default_rng(0)
    for name, n in (("train.txt", 300), ("valid.txt", 20)):
        lines = [" ".join(rng.choice(words, rng.integers(3, 12))) for _ in range(n)]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def files_task(tmp_path, text_files, mode="pack"):
    c = tiny_config(
        tmp_path, corpus="files", train_files=str(text_files / "train.txt"),
        validation_files=str(text_files / "valid.txt"),
    )  # fmt: skip
    c.data.mode = mode
    return CausalLMTask(c)


def test_packed_loss_equals_separate_sequences(tmp_path, text_files):
    """Two documents packed in one row give exactly the loss of each alone: no attention and
    no next-token target crosses the segment boundary."""
    task = files_task(tmp_path, text_files, "pack")
    a, b = (ex["tokens"] for ex in task.examples("train")[:2])
    L = task.config.data.max_length
    assert len(a) + len(b) <= L
    packed = np.zeros((1, L), np.int32)
    seg = np.zeros((1, L), np.int32)
    pos = np.zeros((1, L), np.int32)
    packed[0, : len(a)], packed[0, len(a) : len(a) + len(b)] = a, b
    seg[0, : len(a)], seg[0, len(a) : len(a) + len(b)] = 1, 2
    pos[0, : len(a)], pos[0, len(a) : len(a) + len(b)] = np.arange(len(a)), np.arange(len(b))
    batch = {"tokens": packed, "tokens_segment_ids": seg, "tokens_positions": pos}
    params = nn.unbox(task.init_variables(jax.random.PRNGKey(0), batch))["params"]
    loss, aux = task.loss(params, batch, jax.random.PRNGKey(1), train=False)
    assert int(aux["weight"]) == len(a) - 1 + len(b) - 1

    pad_task = files_task(tmp_path, text_files, "pad")
    total, weight = 0.0, 0
    for seq in (a, b):
        row = np.zeros((1, L), np.int32)
        real = np.zeros((1, L), np.int32)
        row[0, : len(seq)], real[0, : len(seq)] = seq, 1
        l1, aux1 = pad_task.loss(params, {"tokens": row, "real": real}, None, train=False)
        total, weight = total + float(l1), weight + int(aux1["weight"])
    assert weight == int(aux["weight"])
    np.testing.assert_allclose(float(loss), total, rtol=1e-5)


def test_examples_are_bos_text_eos_pieces(tmp_path, text_files):
    task = files_task(tmp_path, text_files)
    tok = task.tokenizer()
    texts = corpus_texts(task.config.task, "validation")
    ex = task.examples("validation")[0]["tokens"]
    assert ex[0] == tok.token_to_id("<s>")
    assert tok.decode(ex.tolist(), skip_special_tokens=True) == texts[0][: len(tok.decode(
        ex.tolist(), skip_special_tokens=True))]  # fmt: skip
    assert all(len(e["tokens"]) <= task.config.data.max_length for e in task.examples("train"))


def test_bad_corpus_settings_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="--config.task.train_files"):
        CausalLMTask(tiny_config(tmp_path, corpus="files", train_files=str(tmp_path / "none*")))
    with pytest.raises(FileNotFoundError, match="--config.task.tokenizer"):
        CausalLMTask(tiny_config(tmp_path, tokenizer=str(tmp_path / "missing.json")))


# `zoo train` of recipes/lm.py:tiny end to end: tests/zett/test_lm_transfer.py, whose fixture
# trains that LM (the loss falls, evals run) before moving it to a new tokenizer.
