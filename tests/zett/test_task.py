"""ZeTT end to end: a tiny mBART, a hypernetwork trained for it, transfer to a German tokenizer.

One module fixture trains a small base translation model on generated word-for-word catalogs
and a hypernetwork for it (fixed German target tokenizer, gradient accumulation over the
shared-vocabulary batch features); the tests compare the transfer methods on the held-out
split and drive `zoo transfer` / `zoo translate`.
"""

from __future__ import annotations

import io
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo.zett
from tests.mbart.test_tasks import SPM, locale_dir  # noqa: F401  (fixture)
from zoo import cli
from zoo.io import modeldir
from zoo.mbart import tokenizer as ztok
from zoo.mbart.metrics import heldout_loss
from zoo.mbart.tasks import translation_config
from zoo.tasks import get_task
from zoo.zett import hypernet as zett
from zoo.zett import task as tt
from zoo.zett import vocab as vocab_transfer
from zoo.zett.transfer import load_hypernet, transfer_embeddings


@pytest.fixture(scope="module")
def trained(tmp_path_factory, locale_dir):  # noqa: F811
    root = tmp_path_factory.mktemp("zett")
    data_dir = str(root / "tfds")
    base = root / "base"
    common = [
        f"--config.task.locale_dir={locale_dir}",
        f"--config.task.data_dir={data_dir}",
    ]
    code = cli.main(
        [
            "train", "--config", "recipes/mbart_demo.py:tiny", "--workdir", str(base),
            f"--config.task.spm_model={SPM}", "--config.model.d_model=32",
            "--config.model.mlp_dim=64", "--config.train.num_steps=150",
            "--config.optim.learning_rate=1e-2", "--config.optim.warmup_steps=10",
            "--config.model.dropout=0.0", "--config.eval.every_steps=150",
            "--config.checkpoint.every_steps=150", *common,
        ]
    )  # fmt: skip
    assert code == 0
    mt = get_task(translation_config(str(base), "en_XX", "de_DE"))
    for key, value in (("locale_dir", str(locale_dir)), ("data_dir", data_dir)):
        mt.config.task[key] = value
    for key in ("corpus", "src_text_lang", "tgt_text_lang"):
        mt.config.task[key] = {"corpus": "gettext", "src_text_lang": "en", "tgt_text_lang": "de"}[
            key
        ]
    german = [d for _, d in mt.text_pairs("train")]
    de_model = ztok.train_sentencepiece(root / "de", 60, sentences=german)
    hn = root / "hypernet"
    code = cli.main(
        [
            "train", "--config", "recipes/zett_demo.py:tiny", "--workdir", str(hn),
            f"--config.task.base={base}", f"--config.task.target_tokenizer={de_model}",
            "--config.train.num_steps=80", "--config.task.identity_steps=10",
            "--config.optim.learning_rate=3e-3", "--config.optim.warmup_steps=10",
            "--config.data.global_batch_size=16", "--config.optim.grad_accum_steps=2",
            "--config.eval.every_steps=80", "--config.checkpoint.every_steps=80", *common,
        ]
    )  # fmt: skip
    assert code == 0
    return {"root": root, "base": base, "hn": hn, "de": de_model, "test": mt.text_pairs("test")}


def _transfer(trained, method):
    out = trained["root"] / f"de_{method}"
    if not (out / "model.json").exists():  # through the family's Python face
        zoo.zett.transfer(
            str(trained["base"]), str(trained["de"]), str(out), method=method,
            hypernet_dir=str(trained["hn"]),
        )  # fmt: skip
    mt = get_task(translation_config(str(out), "en_XX", "de_DE"))
    return mt, modeldir.load_params(str(out))


@pytest.mark.slow
def test_trained_hypernet_beats_fvt_on_heldout_loss(trained):
    losses = {}
    for method in ("hypernet", "fvt", "lexical"):
        mt, params = _transfer(trained, method)
        losses[method] = heldout_loss(mt, params, trained["test"])["nats_per_char"]
    assert all(math.isfinite(v) for v in losses.values())
    assert losses["hypernet"] < losses["fvt"], losses


def test_special_rows_and_baselines_equal_a_numpy_reference(trained):
    src = get_task(translation_config(str(trained["base"]), "en_XX", "de_DE")).tokenizer()
    tgt = ztok.MBartTokenizer(trained["de"])
    params = modeldir.load_params(str(trained["base"]))
    E, bias = np.asarray(params["shared"]["embedding"]), np.asarray(params["final_logits_bias"])
    dec = vocab_transfer.Decomposer(src)
    src_index = {p: i for i, p in enumerate(src.pieces())}
    specials = {"<s>", "<pad>", "</s>", "<unk>", "<mask>", *src.languages}
    ref_fvt, ref_lex = [], []
    for piece in tgt.pieces():
        if piece in specials:
            ref_fvt.append(E[src_index[piece]])
            ref_lex.append(E[src_index[piece]])
            continue
        ids = [i if i < len(E) else src.unk_id for i in dec.decompose(piece)]
        ref_fvt.append(E[ids[0]] if len(ids) == 1 else E[ids].mean(0))
        ref_lex.append(E[src_index.get(piece, src.unk_id)])
    for method, ref in (("fvt", ref_fvt), ("lexical", ref_lex)):
        got, got_bias = transfer_embeddings(method, src, tgt, E, bias)
        np.testing.assert_array_equal(got, np.stack(ref))
        assert got_bias.shape == (tgt.vocab_size,)
    hn = load_hypernet(str(trained["hn"]), E, True)
    got, got_bias = transfer_embeddings("hypernet", src, tgt, E, bias, hypernet=hn)
    for name in specials:
        t_id = tgt.pieces().index(name)
        np.testing.assert_array_equal(got[t_id], E[src_index[name]])
        assert got_bias[t_id] == bias[src_index[name]]
    assert np.isfinite(got).all() and not np.array_equal(got, np.stack(ref_fvt))


def test_transferred_model_translates_with_the_new_tokenizer(trained, monkeypatch, capsys):
    out = trained["root"] / "cli_fvt"
    code = cli.main(
        [
            "transfer", "--checkpoint", str(trained["base"]), "--tokenizer", str(trained["de"]),
            "--out", str(out), "--method", "fvt",
        ]
    )  # fmt: skip
    assert code == 0
    meta = modeldir.read_meta(str(out))
    assert meta["config"]["vocab_size"] == ztok.MBartTokenizer(trained["de"]).vocab_size
    assert "wrote" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO("file open\nthe window\n"))
    code = cli.main(
        ["translate", "--checkpoint", str(out), "--src-lang", "en_XX", "--tgt-lang", "de_DE",
         "--beam", "2"]
    )  # fmt: skip
    assert code == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    again = cli.main(
        ["transfer", "--checkpoint", str(trained["base"]), "--tokenizer", str(trained["de"]),
         "--out", str(out), "--method", "fvt"]
    )  # fmt: skip
    assert again == 2  # the output dir holds a model: a clear error, nothing overwritten


def test_hypernet_method_without_a_hypernet_is_a_clear_error(trained, capsys):
    code = cli.main(
        ["transfer", "--checkpoint", str(trained["base"]), "--tokenizer", str(trained["de"]),
         "--out", str(trained["root"] / "nohn")]
    )  # fmt: skip
    assert code == 2 and "--hypernet" in capsys.readouterr().err


# --------------------------------------------------------------------------- the module


def _hypernet(num_layers=2):
    config = zett.HypernetConfig(source_vocab_size=60, embed_dim=16, num_layers=num_layers)
    model = zett.Hypernet(config)
    rng = np.random.default_rng(0)
    E = rng.normal(0.3, 2.0, (60, 16)).astype(np.float32)
    bias = rng.normal(0, 1, (60,)).astype(np.float32)
    surface = np.full((12, 7), 1, np.int32)
    surface[:, 0] = rng.integers(4, 60, 12)
    surface[3, 1:4] = [5, 6, 7]
    surface[4, :7] = rng.integers(4, 60, 7)
    surface[5, 0:2] = [61, 200]  # fallback (byte) rows
    from flax import linen as nn

    params = nn.unbox(model.init(jax.random.PRNGKey(1), surface, E)["params"])
    return model, params, E, bias, surface


def test_scalers_hit_their_target_statistics():
    model, params, E, bias, _ = _hypernet()
    anchors = np.full((40, 7), 1, np.int32)
    anchors[:, 0] = np.arange(4, 44)
    anchors[::5, 1] = 50  # some two-piece anchors
    fitted = zett.fit_scalers(model, params, E, anchors, np.arange(4, 44), source_bias=bias)
    scaled = E * fitted["in_scaler"]["scale"] + fitted["in_scaler"]["shift"]
    np.testing.assert_allclose(scaled.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(scaled.std(0), 0.02, rtol=1e-4)
    out = model.apply({"params": fitted}, anchors, E)
    np.testing.assert_allclose(out["in"].mean(0), E[4:44].mean(0), atol=1e-4)
    np.testing.assert_allclose(out["in"].std(0), E[4:44].std(0), rtol=1e-4)
    np.testing.assert_allclose(out["bias"].mean(), bias[4:44].mean(), atol=1e-5)
    np.testing.assert_allclose(out["bias"].std(), bias[4:44].std(), rtol=1e-4)


def test_prediction_depends_only_on_its_own_row():
    model, params, E, _, surface = _hypernet()
    full = np.asarray(model.apply({"params": params}, surface, E)["in"])
    rows = [0, 3, 5]
    alone = model.apply({"params": params}, surface[rows], E)["in"]
    np.testing.assert_allclose(alone, full[rows], rtol=1e-5, atol=1e-6)
    shuffled = surface[::-1].copy()
    np.testing.assert_allclose(
        model.apply({"params": params}, shuffled, E)["in"][::-1], full, rtol=1e-5, atol=1e-6
    )
    # The pad entries of a row are masked: what sits there is never read.
    other = surface.copy()
    other[0, 1:] = 1
    np.testing.assert_allclose(
        model.apply({"params": params}, other, E)["in"][0], full[0], rtol=1e-5, atol=1e-6
    )


def test_copy_special_rows_is_exact():
    model, params, E, _, surface = _hypernet()
    pred = model.apply({"params": params}, surface, E)["in"]
    special = np.full((12,), -1, np.int32)
    special[[1, 7]] = [2, 40]
    out = np.asarray(zett.copy_special_rows(pred, E, special))
    np.testing.assert_array_equal(out[[1, 7]], E[[2, 40]])
    np.testing.assert_array_equal(out[0], np.asarray(pred)[0])


def test_auxiliary_loss_is_zero_on_source_rows_and_counts_only_one_piece_tokens():
    rng = np.random.default_rng(0)
    E = jnp.asarray(rng.normal(size=(30, 8)).astype(np.float32))
    surface = np.full((6, 7), 1, np.int32)
    surface[:, 0] = [4, 5, 6, 7, 8, 40]  # row 5: a fallback id (not a source row)
    surface[2, 1] = 9  # row 2: two pieces
    special = np.array([-1, -1, -1, 2, -1, -1], np.int32)  # row 3: special
    valid = np.array([True, True, True, True, True, True])
    pred = np.asarray(E)[np.clip(surface[:, 0], 0, 29)].copy()
    pred[2] += 5.0  # a multi-piece token: not counted
    pred[3] += 5.0  # a special token: not counted
    pred[5] += 5.0  # a fallback token: not counted
    loss = tt.auxiliary_loss(jnp.asarray(pred), E, surface, special, valid, 1)
    assert float(loss) == 0.0
    pred[1, 0] += 1.0  # a one-piece token moves: counted
    loss = float(tt.auxiliary_loss(jnp.asarray(pred), E, surface, special, valid, 1))
    singles = np.asarray(E)[[4, 5, 8]]
    expected = (1.0 / 3) / np.linalg.norm(singles, axis=-1).mean()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_fvt_and_lexical_functions_match_numpy():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(20, 4)).astype(np.float32)
    decs = [[5], [5, 6, 7], [30], [4, 25, 8]]  # 30, 25: outside the source -> <unk> (3)
    got = zett.fvt_embeddings(E, decs, unk_id=3)
    np.testing.assert_array_equal(got[0], E[5])
    np.testing.assert_array_equal(got[1], E[[5, 6, 7]].mean(0))
    np.testing.assert_array_equal(got[2], E[3])
    np.testing.assert_array_equal(got[3], E[[4, 3, 8]].mean(0))
    lex = zett.lexical_embeddings(E, np.array([7, -1, 0]), unk_id=3)
    np.testing.assert_array_equal(lex, E[[7, 3, 0]])


def test_task_refuses_to_train_the_base_model(tmp_path, capsys):
    code = cli.main(
        [
            "train", "--config", "recipes/zett_demo.py:tiny", "--workdir", str(tmp_path / "w"),
            "--config.optim.frozen=()",
        ]
    )  # fmt: skip
    assert code == 2 and "optim.frozen" in capsys.readouterr().err


def test_zett_demo_script_end_to_end(trained, locale_dir, tmp_path, monkeypatch):  # noqa: F811
    """`make demo`'s ZeTT part on the tiny base: a new tokenizer, the hypernetwork, the three
    transfers, results.json's summary for every model, and the figures."""
    import json
    import runpy

    from tests.train import runner

    monkeypatch.syspath_prepend(str(runner.REPO / "recipes"))  # as `python recipes/X.py`
    demo = runpy.run_path(str(runner.REPO / "recipes" / "zett_demo.py"))
    workdir = tmp_path / "zett_demo"
    args = ["--workdir", str(workdir), "--base", str(trained["base"]), "--variant", "tiny"]
    args += ["--locale-dir", str(locale_dir), "--vocab-size", "64", "--steps", "2"]
    assert demo["main"](args + ["--test-sentences", "4"]) == 0
    summary = json.loads((workdir / "results.json").read_text())["summary"]
    assert set(summary) == {"original", "hypernet", "fvt", "lexical"}
    for row in summary.values():
        assert set(row) == {
            "nats_per_char", "tokens_per_sentence_src", "tokens_per_sentence_tgt", "chrf"
        }  # fmt: skip
        assert math.isfinite(row["nats_per_char"]) and row["nats_per_char"] > 0
        assert row["tokens_per_sentence_src"] > 0 and 0 <= row["chrf"] <= 100
    # Every transferred model shares one tokenizer: the same token counts.
    assert len({r["tokens_per_sentence_tgt"] for k, r in summary.items() if k != "original"}) == 1
    for png in ("summary.png", "learning_curves.png", "hypernet/learning_curves.png"):
        assert (workdir / png).read_bytes()[:4] == b"\x89PNG", png
