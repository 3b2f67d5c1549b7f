"""The mBART tasks train through the loop on (generated) gettext catalogs."""

from __future__ import annotations

import math

import numpy as np
import pytest

import zoo.mbart
from tests.data.test_gettext import catalog, write_locale
from tests.train import runner
from zoo import cli

SPM = runner.REPO / "tests" / "fixtures" / "tokenizer" / "spm300.model"

WORDS = ["file", "open", "save", "close", "the", "window", "new", "print", "copy", "folder"]
GERMAN = [
    "Datei",
    "öffnen",
    "speichern",
    "schließen",
    "das",
    "Fenster",
    "neu",
    "drucken",
    "kopieren",
    "Ordner",
]


@pytest.fixture(scope="module")
def locale_dir(tmp_path_factory):
    """Five small catalogs (so every split gets one) of word-for-word phrase pairs."""
    root = tmp_path_factory.mktemp("locale")
    domains = {}
    for d in range(5):
        pairs = {}
        for i in range(60):
            idx = [(d * 7 + i * 3 + j) % len(WORDS) for j in range(2 + i % 4)]
            pairs[f"{' '.join(WORDS[k] for k in idx)} {d}-{i}"] = (
                f"{' '.join(GERMAN[k] for k in idx)} {d}-{i}"
            )
        domains[f"domain{d}"] = catalog(pairs)
    write_locale(root, "ro", domains)  # the WMT16 recipe's tiny variant reads en->ro
    return write_locale(root, "de", domains)


@pytest.mark.parametrize("task", ["translation", "csr", "denoising"])
def test_mbart_task_trains_through_the_loop(task, tmp_path, tfds_dir, locale_dir):
    workdir = tmp_path / task
    code = cli.main(
        [
            "train",
            "--config",
            "recipes/mbart_demo.py:tiny",
            "--workdir",
            str(workdir),
            f"--config.task.name={task}",
            f"--config.task.spm_model={SPM}",
            f"--config.task.locale_dir={locale_dir}",
            f"--config.task.data_dir={tfds_dir}",
        ]
    )
    assert code == 0
    rows = runner.metrics(workdir)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert any("eval_loss" in r for r in rows)


def test_csr_stage_two_starts_from_stage_one(tmp_path, tfds_dir, locale_dir):
    common = [
        f"--config.task.spm_model={SPM}",
        f"--config.task.locale_dir={locale_dir}",
        f"--config.task.data_dir={tfds_dir}",
    ]
    stage1, stage2 = tmp_path / "csr", tmp_path / "mt"
    assert (
        cli.main(
            [
                "train",
                "--config",
                "recipes/mbart_demo.py:tiny",
                "--workdir",
                str(stage1),
                "--config.task.name=csr",
                *common,
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "train",
                "--config",
                "recipes/mbart_demo.py:tiny",
                "--workdir",
                str(stage2),
                f"--config.train.init_from={stage1}",
                *common,
            ]
        )
        == 0
    )
    assert runner.checkpoint_steps(stage2) == [3]


def test_translate_command_reads_stdin_and_writes_one_line_each(
    tmp_path, tfds_dir, locale_dir, monkeypatch, capsys
):
    import io

    workdir = tmp_path / "mt"
    assert (
        cli.main(
            [
                "train",
                "--config",
                "recipes/mbart_demo.py:tiny",
                "--workdir",
                str(workdir),
                f"--config.task.spm_model={SPM}",
                f"--config.task.locale_dir={locale_dir}",
                f"--config.task.data_dir={tfds_dir}",
            ]
        )
        == 0
    )
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("open the file\nsave the window\nnew\n"))
    code = cli.main(
        [
            "translate",
            "--checkpoint",
            str(workdir),
            "--src-lang",
            "en_XX",
            "--tgt-lang",
            "de_DE",
            "--beam",
            "2",
        ]
    )
    assert code == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    # The Python face reads the same workdir: its latest params, vocabulary from the params.
    model, params = zoo.mbart.load(str(workdir))
    ids = np.array([[5, 6, 2, 250]], np.int32) % model.config.vocab_size
    logits = model.apply({"params": params}, ids, np.ones_like(ids), ids)
    assert logits.shape == (1, 4, model.config.vocab_size)

    code = cli.main(
        ["translate", "--checkpoint", str(workdir), "--src-lang", "en_XX", "--tgt-lang", "xx_YY"]
    )
    assert code == 2
    assert "xx_YY" in capsys.readouterr().err


def test_convert_writes_a_model_dir_with_the_checkpoint_params(tmp_path):
    import numpy as np
    from flax import traverse_util

    from zoo.io import modeldir
    from zoo.mbart import convert as pmbart

    src = runner.REPO / "tests" / "fixtures" / "mbart" / "cc25"
    out = tmp_path / "converted"
    assert cli.main(["convert", "mbart", str(src), str(out), "--spm", str(SPM)]) == 0
    meta = modeldir.read_meta(str(out))
    assert meta["family"] == "mbart" and meta["tokenizer"]["style"] == "cc25"
    assert (out / "sentencepiece.bpe.model").exists()
    _, want = pmbart.load_mbart(src)
    got = traverse_util.flatten_dict(modeldir.load_params(str(out)), sep="/")
    want = traverse_util.flatten_dict(want, sep="/")
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    # Converting into a directory that already holds a model is refused.
    assert cli.main(["convert", "mbart", str(src), str(out)]) == 2


def test_convert_from_the_hub_offline_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = cli.main(
        [
            "convert",
            "mbart",
            "facebook/mbart-large-cc25",
            str(tmp_path / "out"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "network" in err and "facebook/mbart-large-cc25" in err


@pytest.mark.parametrize("task", ["csr", "translation"])
def test_wmt16_recipe_tiny_variant_runs_both_stages(task, tmp_path, tfds_dir, locale_dir):
    code = cli.main(
        [
            "train",
            "--config",
            "recipes/mbart_csr_wmt16_enro.py:tiny",
            "--workdir",
            str(tmp_path / task),
            f"--config.task.name={task}",
            f"--config.task.spm_model={SPM}",
            f"--config.task.locale_dir={locale_dir}",
            f"--config.task.data_dir={tfds_dir}",
        ]
    )
    assert code == 0
    assert runner.checkpoint_steps(tmp_path / task) == [3]


def test_tfds_catalog_corpus_without_tensorflow_is_a_clear_error(tmp_path, tfds_dir, capsys):
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip(
            "TensorFlow is installed (the tfds-catalog extra), so the catalog builders exist; "
            "test_tfds_catalog_corpus_trains_on_mock_data covers that install"
        )
    assert cli.main(_wmt16_args(tmp_path, tfds_dir)) == 2
    assert "pip install -e '.[tfds-catalog]'" in capsys.readouterr().err


def _wmt16_args(workdir, tfds_dir, *extra):
    return [
        "train",
        "--config",
        "recipes/mbart_csr_wmt16_enro.py:tiny",
        "--workdir",
        str(workdir),
        f"--config.task.spm_model={SPM}",
        f"--config.task.data_dir={tfds_dir}",
        "--config.task.corpus=tfds:wmt16_translate/ro-en",
        *extra,
    ]


@pytest.mark.parametrize(
    "task,corpus,langs",
    [
        ("translation", "wmt16_translate/ro-en", ("en", "ro", "en_XX", "ro_RO")),
        ("csr", "wmt14_translate/de-en", ("en", "de", "en_XX", "de_DE")),
    ],
)
def test_tfds_catalog_corpus_trains_on_mock_data(task, corpus, langs, tmp_path):
    from tensorflow_datasets import testing as tfds  # a core dependency of zoo

    pytest.importorskip(
        "tensorflow", reason="catalog builders need the tfds-catalog extra (TensorFlow)"
    )
    src_text, tgt_text, src_lang, tgt_lang = langs
    # mock_data replaces download_and_prepare and fills every split with random strings of
    # the builder's own features (no network); the task must read them like the real data.
    with tfds.mock_data(num_examples=24):
        code = cli.main(
            _wmt16_args(
                tmp_path,
                tmp_path / "tfds",
                f"--config.task.corpus=tfds:{corpus}",
                f"--config.task.name={task}",
                f"--config.task.src_text_lang={src_text}",
                f"--config.task.tgt_text_lang={tgt_text}",
                f"--config.task.src_lang={src_lang}",
                f"--config.task.tgt_lang={tgt_lang}",
            )
        )
    assert code == 0
    rows = runner.metrics(tmp_path)
    assert len([r for r in rows if "loss" in r]) == 3
    assert any("eval_loss" in r for r in rows)


def test_mbart_demo_script_trains_both_models_and_scores_them(tmp_path, locale_dir, monkeypatch):
    """`make demo`'s orchestration end to end, on the generated catalogs and tiny models."""
    import json
    import runpy

    monkeypatch.syspath_prepend(str(runner.REPO / "recipes"))  # as `python recipes/X.py`
    demo = runpy.run_path(str(runner.REPO / "recipes" / "mbart_demo.py"))
    workdir = tmp_path / "demo"
    args = ["--workdir", str(workdir), "--locale-dir", str(locale_dir), "--variant", "tiny"]
    args += ["--vocab-size", "60", "--mt-steps", "3", "--csr-steps", "1"]
    args += ["--test-sentences", "6", "--beam", "2", "--seeds", "0,1"]
    assert demo["main"](args) == 0
    results = json.loads((workdir / "results.json").read_text())
    summary, per_seed = results["summary"], results["details"]["per_seed"]
    assert set(summary) == set(per_seed) == {"translation", "csr_translation"}
    for name, r in summary.items():
        assert 0.0 <= r["bleu"] <= 100.0 and 0.0 <= r["chrf"] <= 100.0
        assert set(per_seed[name]) == {"0", "1"}
        chrfs = [per_seed[name][s]["chrf"] for s in ("0", "1")]
        assert r["chrf"] == pytest.approx(sum(chrfs) / 2)
        assert r["chrf_std"] == pytest.approx(abs(chrfs[0] - chrfs[1]) / 2)
        assert all(len(per_seed[name][s]["samples"]) == 3 for s in ("0", "1"))
    assert runner.checkpoint_steps(workdir / "csr_stage1") == [1]
    assert runner.checkpoint_steps(workdir / "csr_translation_seed1") == [2]
    for png in ("learning_curves.png", "summary.png", "translation/learning_curves.png"):
        assert (workdir / png).read_bytes()[:4] == b"\x89PNG", png
