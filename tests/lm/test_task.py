"""The causal-LM task: packing is exact, documents become `[bos] text [eos]` pieces, bad
corpus settings are one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import linen as nn

from zoo.io import modeldir
from zoo.lm.convert import convert
from zoo.lm.task import CausalLMTask, corpus_texts, load_tokenizer
from zoo.train import loop
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


def test_continues_a_converted_checkpoint(tmp_path, text_files):
    """`train.init_from` = a `zoo convert lm` dir: the task takes its shapes and tokenizer and
    the loop starts from its weights (at learning rate 0 they stay exactly those)."""
    ckpt = Path(convert(REPO / "tests" / "fixtures" / "lm" / "llama3_gqa", tmp_path / "ckpt"))
    c = tiny_config(
        tmp_path, corpus="files", train_files=str(text_files / "train.txt"),
        validation_files=str(text_files / "valid.txt"),
    )  # fmt: skip
    c.train.init_from = str(ckpt)
    c.optim.learning_rate = 0.0
    c.train.num_steps = 3
    c.eval.every_steps = 0
    c.checkpoint.every_steps = 3
    task = CausalLMTask(c)
    assert task.tokenizer_path == str(ckpt / "tokenizer.json")
    assert task.model_config.num_kv_heads == 2 and task.model_config.rope_scaling
    summary = loop.train(c, str(tmp_path / "run"), task)
    assert int(summary["state"].step) == 3
    # learning rate 0: after 3 steps the weights must still be exactly the converted ones
    got = jax.device_get(summary["state"].params)
    want = modeldir.load_params(str(ckpt))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert np.isfinite(json.loads(rows[-1])["loss"])


@pytest.mark.parametrize(
    "content", [b"\xff\xfe\x00garbage", b'{"version": "1.0", "model": {"type": "BPE", "vocab": {'],
    ids=["binary", "truncated"],
)  # fmt: skip
def test_a_damaged_tokenizer_json_is_one_line_naming_it(tmp_path, content):
    bad = tmp_path / "tokenizer.json"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=r"tokenizer.json is not a tokenizer.json") as e:
        load_tokenizer(str(bad))
    assert "\n" not in str(e.value)
