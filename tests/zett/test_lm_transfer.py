"""ZeTT on a decoder-only LM: a small hypernetwork, trained with the causal-LM objective on
sampled tokenizers for a tiny LM trained here (`zoo train` of recipes/lm.py:tiny on packed
gettext text, whose learning the first test checks), moves it to a German byte-level BPE
better than FVT does (held-out nats per character; at 150 and 250 hypernetwork steps 2.445
and 2.435 vs FVT's 2.473 when written, AMD EPYC);
`zoo transfer` writes an LM dir that `zoo generate` runs; FVT onto the model's own tokenizer
changes nothing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from tests.train import runner
from zoo import cli
from zoo.io import modeldir
from zoo.lm.metrics import heldout_nats_per_char
from zoo.lm.model import LM, LMConfig
from zoo.lm.task import corpus_texts, load_tokenizer, train_bytelevel_bpe
from zoo.zett.lm_task import base_lm
from zoo.zett.transfer import transfer_lm

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # two short training runs (~1.5 minutes on 2 cores)


def train(recipe: str, workdir: Path, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "zoo.cli", "train", "--config", recipe, "--workdir",
           str(workdir), *overrides]  # fmt: skip
    # One CPU device (the suite's conftest forces 8 for in-process mesh tests).
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=runner.env_for(1)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tfds_dir):
    tmp = tmp_path_factory.mktemp("lm_zett")
    lm, hn = tmp / "lm", tmp / "hn"
    common = [f"--config.task.data_dir={tfds_dir}", "--config.train.log_every=100"]
    train("recipes/lm.py:tiny", lm, *common, "--config.train.num_steps=200",
          "--config.eval.every_steps=100", "--config.checkpoint.every_steps=200")  # fmt: skip
    train(
        "recipes/zett_lm.py:tiny", hn, *common, f"--config.task.base={lm}",
        "--config.train.num_steps=200", "--config.task.identity_steps=30",
        "--config.task.sample_vocab_size=800", "--config.model.num_layers=2",
        "--config.optim.learning_rate=2e-3", "--config.optim.warmup_steps=10",
        "--config.eval.every_steps=200", "--config.checkpoint.every_steps=200",
    )  # fmt: skip
    cfg = modeldir.read_run_config(str(lm), ["causal_lm"])
    german = corpus_texts(cfg.task, "train")[1::2]  # pairs are (en, de)
    target = tmp / "de.json"
    train_bytelevel_bpe(german, 800).save(str(target))
    heldout = corpus_texts(cfg.task, "validation")[1::2][:200]
    return {"lm": lm, "hn": hn, "target": target, "heldout": heldout, "tmp": tmp}


def test_the_lm_trained_on_packed_text(runs):
    """The causal_lm run of the fixture: loss falls, evals ran, packed rows are mostly full."""
    rows = [json.loads(line) for line in (runs["lm"] / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert train_rows[-1]["loss"] < 0.75 * np.log(320)  # from ln(vocab) at the start
    assert len(evals) == 2 and evals[-1] < evals[0]
    assert all(r["padding_fraction"] < 0.3 for r in train_rows)


def score(model_dir: Path, texts) -> float:
    meta = modeldir.read_meta(str(model_dir))
    model = LM(LMConfig.from_dict(meta["config"]))
    tok = load_tokenizer(str(model_dir / "tokenizer.json"))
    out = heldout_nats_per_char(
        model, modeldir.load_params(str(model_dir)), tok, texts, max_length=256
    )
    assert out["truncated"] == 0
    return out["nats_per_char"]


def test_hypernet_beats_fvt_on_heldout_german(runs):
    scores = {}
    for method in ("hypernet", "fvt"):
        out = runs["tmp"] / f"de_{method}"
        transfer_lm(str(runs["lm"]), str(runs["target"]), str(out), method=method,
                    hypernet_dir=str(runs["hn"]))  # fmt: skip
        scores[method] = score(out, runs["heldout"])
    assert scores["hypernet"] < scores["fvt"], scores


def test_fvt_onto_its_own_tokenizer_changes_nothing(runs):
    _, own = base_lm(str(runs["lm"]))
    out = runs["tmp"] / "self_fvt"
    transfer_lm(str(runs["lm"]), own, str(out), method="fvt")
    before, after = modeldir.load_params(str(runs["lm"])), modeldir.load_params(str(out))
    for key in ("embed_tokens", "lm_head"):
        name = "embedding" if key == "embed_tokens" else "kernel"
        np.testing.assert_array_equal(after[key][name], before[key][name])


def test_zoo_transfer_then_generate(runs, monkeypatch):
    out = runs["tmp"] / "de_lexical_cli"
    argv = ["transfer", "--checkpoint", str(runs["lm"]), "--tokenizer", str(runs["target"]),
            "--out", str(out), "--method", "lexical"]  # fmt: skip
    with redirect_stdout(io.StringIO()) as printed:
        assert cli.main(argv) == 0
    assert "zoo generate --checkpoint" in printed.getvalue()
    meta = modeldir.read_meta(str(out))
    assert meta["family"] == "lm" and meta["config"]["vocab_size"] == 800
    argv = ["generate", "--checkpoint", str(out), "--max-new-tokens", "8"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("Datei\n"))
    with redirect_stdout(io.StringIO()) as generated:
        assert cli.main(argv) == 0
    assert generated.getvalue().strip()


def test_transfer_refuses_a_sentencepiece_target_for_an_lm(runs, tmp_path):
    bad = tmp_path / "x.model"
    bad.write_bytes(b"\x0a\x03abc")
    with pytest.raises(ValueError, match="tokenizer.json"):
        transfer_lm(str(runs["lm"]), str(bad), str(tmp_path / "out"), method="fvt")
