"""The denovo task through the real loop: annealing, stage-2 freeze, warm start, `zoo denovo`.

One tiny hybrid run (recipes/denovo_demo.py:tiny, simulated spectra) is trained once per
module; the stage-2, warm-start and CLI tests start from it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.train import runner
from zoo import cli
from zoo.data.sources import load_source
from zoo.peptide import mztab, spectra
from zoo.peptide import simulated_tfds as st
from zoo.peptide import task as td
from zoo.peptide.features import text_field
from zoo.train import config as zconfig

TINY = "recipes/denovo_demo.py:tiny"


def _train(workdir, data_dir, *overrides) -> int:
    return cli.main(
        ["train", "--config", TINY, "--workdir", str(workdir),
         f"--config.task.data_dir={data_dir}", *overrides]
    )  # fmt: skip


def _rows(workdir) -> list[dict]:
    return [r for r in runner.metrics(workdir) if "lambda" in r]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("denovo_tfds")


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The runs here share shapes: a persistent cache spares recompiling the same steps."""
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    old = [getattr(jax.config, k) for k in keys]
    jax.config.update(keys[0], str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update(keys[1], 0.5)
    yield
    for k, v in zip(keys, old):
        jax.config.update(k, v)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("denovo") / "stage1"
    assert _train(workdir, data_dir, "--config.train.num_steps=4") == 0
    return workdir


# --- pure pieces -----------------------------------------------------------------------------
def test_annealing_endpoints_and_midpoint():
    assert float(td.anneal_weight(0, 100)) == 0.0
    assert float(td.anneal_weight(50, 100)) == 0.5
    assert float(td.anneal_weight(100, 100)) == 1.0
    assert float(td.anneal_weight(250, 100)) == 1.0  # clipped after the annealing horizon


def test_ar_targets_reverse_each_peptide_and_append_stop():
    tokens = jnp.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]])
    inputs, targets = td.ar_targets(tokens, stop_id=9, reverse=True)
    np.testing.assert_array_equal(inputs, [[3, 2, 1, 0, 0], [5, 4, 0, 0, 0]])
    np.testing.assert_array_equal(targets, [[3, 2, 1, 9, 0, 0], [5, 4, 9, 0, 0, 0]])
    inputs, targets = td.ar_targets(tokens, stop_id=9, reverse=False)
    np.testing.assert_array_equal(targets, [[1, 2, 3, 9, 0, 0], [4, 5, 9, 0, 0, 0]])


def test_ctc_loss_zeroes_and_reports_peptides_longer_than_the_slots():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 5))
    tokens = jnp.array([[1, 2, 0, 0, 0, 0], [1, 1, 1, 2, 3, 4]])  # 6 residues > 4 slots
    loss, fits = td.ctc_loss_per_residue(logits, tokens)
    assert bool(fits[0]) and not bool(fits[1])
    assert float(loss[0]) > 0 and float(loss[1]) == 0.0


def test_mixing_weight_per_mode_and_stage():
    def task(mode, stage="joint", anneal=True):
        c = zconfig.load(TINY)
        c.model.mode, c.task.stage, c.task.anneal = mode, stage, anneal
        c.train.num_steps = 10
        return td.DenovoTask(c)

    assert float(task("ar").mixing_weight(0)) == 1.0
    assert float(task("nar").mixing_weight(9)) == 0.0
    hybrid = task("hybrid")
    assert [float(hybrid.mixing_weight(s)) for s in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert float(task("hybrid", stage="ar").mixing_weight(0)) == 1.0
    assert float(task("hybrid", anneal=False).mixing_weight(0)) == 0.5


# --- through the loop ------------------------------------------------------------------------
def test_hybrid_training_logs_both_losses_and_the_annealed_lambda(stage1):
    rows = {r["step"]: r for r in _rows(stage1)}
    assert set(rows) == {1, 2, 3, 4}
    # lambda = step / num_steps, with step the optimizer step being taken (0-based).
    assert [round(rows[s]["lambda"], 6) for s in (1, 2, 3, 4)] == [0.0, 0.25, 0.5, 0.75]
    for r in rows.values():
        assert np.isfinite(r["ar_loss"]) and np.isfinite(r["ctc_loss"])
        want = r["lambda"] * r["ar_loss"] + (1 - r["lambda"]) * r["ctc_loss"]
        assert r["loss"] == pytest.approx(want, rel=1e-5)


def test_stage2_freezes_encoder_and_nar_and_trains_the_ar_decoder(tmp_path, data_dir, stage1):
    stage2 = tmp_path / "stage2"
    code = _train(
        stage2, data_dir,
        "--config.task.stage=ar",
        f"--config.train.init_from={stage1}",
        "--config.optim.frozen=('^encoder_', '^nar_')",
        "--config.train.num_steps=3",
    )  # fmt: skip
    assert code == 0
    before, after = runner.load_params(stage1, 4), runner.load_params(stage2, 3)
    assert before.keys() == after.keys()
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    assert moved, "stage 2 changed nothing"
    assert all(k.startswith("ar_") for k in moved), sorted(moved)
    frozen = [k for k in before if k.startswith(("encoder_", "nar_"))]
    assert frozen and not (set(frozen) & moved)
    rows = _rows(stage2)
    assert all(r["lambda"] == 1.0 and "ctc_loss" in r for r in rows)


def test_warm_start_takes_only_the_selected_parameters(tmp_path, data_dir, stage1):
    ar_run = tmp_path / "ar_only"
    code = _train(
        ar_run, data_dir,
        "--config.model.mode=hybrid",
        f"--config.train.init_from={stage1}",
        "--config.train.init_from_patterns=('^encoder_',)",
        "--config.train.num_steps=4",  # stage 1's: same schedule, same compiled step
        "--config.checkpoint.every_steps=1",
    )  # fmt: skip
    assert code == 0
    # The first warmup step has learning rate 0: the step-1 params are the initial ones.
    loaded, source = runner.load_params(ar_run, 1), runner.load_params(stage1, 4)
    for k in loaded:
        if k.endswith("/terms"):  # sinusoid wavelengths: constants, equal in every model
            continue
        same = np.array_equal(loaded[k], source[k])
        assert same == k.startswith("encoder_"), k


def test_zoo_denovo_writes_mztab_and_counts_bad_records(tmp_path, data_dir, stage1, capsys):
    c = ml_collections.ConfigDict(
        {"num_train": 128, "num_validation": 16, "num_test": 16, "max_length": 8}
    )
    test = load_source(st.simulated_builder(data_dir, **c), "test")
    items = []
    for i in range(5):
        e = test[i]
        items.append(
            spectra.Spectrum(
                mz=np.asarray(e["mz"], np.float64),
                intensity=np.asarray(e["intensity"], np.float64),
                precursor_mz=float(e["precursor_mz"]),
                precursor_charge=int(e["precursor_charge"]),
                peptide=text_field(e["peptide"]),
                title=f"spectrum {i}",
                scans=str(100 + i),
            )
        )
    mgf = tmp_path / "in.mgf"
    spectra.write_mgf(mgf, items)
    with open(mgf, "a") as f:  # a record without CHARGE
        f.write("BEGIN IONS\nTITLE=broken\nPEPMASS=500.2\n100.0 1.0\nEND IONS\n")
    out = tmp_path / "out.mztab"
    args = ["denovo", "--checkpoint", str(stage1), "--mgf", str(mgf), "--out", str(out)]
    assert cli.main(args) == 2
    assert "CHARGE" in capsys.readouterr().err
    assert cli.main(args + ["--skip-bad", "--beam", "2", "--batch-size", "4"]) == 0
    err = capsys.readouterr().err
    assert "1" in err and "CHARGE" in err.upper()
    rows = mztab.read_mztab(out)
    assert 0 < len(rows) <= 5
    for r in rows:
        assert int(r["charge"]) in (2, 3)
        assert r["spectra_ref"].startswith("ms_run[1]:index=")
    for mode in ("nar", "nar_pmc"):
        out_m = tmp_path / f"{mode}.mztab"
        assert cli.main(args[:-1] + [str(out_m), "--skip-bad", "--mode", mode]) == 0
        assert len(mztab.read_mztab(out_m)) > 0


def test_nine_species_tiny_trains_leave_one_species_out_from_mgf_files(tmp_path, data_dir):
    """recipes/denovo_nine_species.py:tiny on a directory with one small MGF per species."""
    import importlib.util

    from zoo.peptide import simulate

    spec = importlib.util.spec_from_file_location(
        "denovo_nine_species", runner.REPO / "recipes" / "denovo_nine_species.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    peptides = simulate.fasta_digest(
        simulate.embedded_fasta(), missed_cleavages=0, min_length=6, max_length=8
    )
    rng = np.random.default_rng(0)
    manual = tmp_path / "nine_species"
    manual.mkdir()
    for k, species in enumerate(recipe.SPECIES):
        records = []
        for j in range(16):
            sim = simulate.simulate(peptides[(16 * k + j) % len(peptides)], rng)
            records.append(
                spectra.Spectrum(
                    mz=sim.mz, intensity=sim.intensity, precursor_mz=sim.precursor_mz,
                    precursor_charge=sim.precursor_charge, peptide="".join(sim.tokens),
                    title=f"{species}:{j}",
                )
            )  # fmt: skip
        spectra.write_mgf(manual / f"high.{species}.PXD00{k}.mgf", records)
    splits = recipe.species_splits("yeast")
    assert "*yeast*.mgf" in splits["test"] and "*mmazei*.mgf" in splits["validation"]
    assert not any("yeast" in p or "mmazei" in p for p in splits["train"])
    code = cli.main(
        ["train", "--config", "recipes/denovo_nine_species.py:tiny",
         "--workdir", str(tmp_path / "run"), f"--config.task.data_dir={data_dir}",
         f"--config.task.manual_dir={manual}", "--config.train.num_steps=4",
         # denovo_demo.py:tiny's optimizer, so the step compiled for stage 1 is reused
         "--config.optim.learning_rate=1e-3", "--config.optim.end_learning_rate_ratio=0.05",
         "--config.optim.b2=0.98", "--config.optim.eps=1e-9"]
    )  # fmt: skip
    assert code == 0
    assert [r["step"] for r in _rows(tmp_path / "run")] == [1, 2, 3, 4]
