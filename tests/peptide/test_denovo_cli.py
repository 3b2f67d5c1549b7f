"""`zoo denovo` as a lab runs it, on the converted tiny Casanovo model (tests/fixtures/
casanovo) and the peak-file fixtures (tests/fixtures/make_peakfile_fixtures.py): no run
stops for one spectrum, every format gives the same peptides, Casanovo 5's rules by default,
the mzTab records its settings, --evaluate, and one ms_run per input path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from zoo import cli
from zoo.peptide import casanovo, denovo_cli, mztab, peakfiles
from zoo.peptide.metrics import evaluate

pytest.importorskip("pyteomics.mzml", reason="pyteomics reads mzML / mzXML")

TESTS = Path(__file__).resolve().parents[1]
PEAKS = TESTS / "fixtures" / "peakfiles"
# The fixture model is tiny; its peptides are short, so no minimum length hides them.
CONF = mztab.CONFIDENCE_COLUMN
PROFORMA = "opt_global_cv_MS:1003169_proforma_peptidoform_sequence"
FAST = ["--min-length", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("casanovo") / "model"
    casanovo.convert(TESTS / "fixtures" / "casanovo" / "tiny_casanovo.ckpt", out)
    return out


def _run(model, out, *spectra, extra=()):
    args = ["denovo", "--checkpoint", str(model), "--out", str(out), "--spectra"]
    return cli.main([*args, *map(str, spectra), *FAST, *extra])


def _peptides(path) -> list[tuple]:
    return [(r["sequence"], r["search_engine_score[1]"], r["opt_global_aa_scores"])
            for r in mztab.read_mztab(path)]  # fmt: skip


def _settings(path) -> dict:
    lines = [v for k, v in mztab.read_mztab_metadata(path) if k.startswith("software[1]-setting")]
    return dict(line.split(" = ", 1) for line in lines)


def test_rejected_spectra_are_counted_and_the_rest_unchanged(model, tmp_path, capsys):
    """mixed.mgf: 8 good spectra around one too-few-peaks, one charge-5 and one empty-range
    spectrum. The run finishes; the good spectra's PSMs equal those of the good-only file."""
    assert _run(model, tmp_path / "mixed.mztab", PEAKS / "mixed.mgf") == 0
    err = capsys.readouterr().err
    assert "11 MS2 spectra read, 8 sequenced; 3 dropped by preprocessing" in err
    assert "charge_out_of_range: 1, no_peaks_in_range: 1, too_few_peaks: 1" in err
    good = tmp_path / "good.mgf"
    spectra, _ = peakfiles.read_spectra(PEAKS / "spectra.mgf")
    from zoo.peptide.spectra import write_mgf

    write_mgf(good, spectra[:8])
    assert _run(model, tmp_path / "good.mztab", good) == 0
    assert _peptides(tmp_path / "mixed.mztab") == _peptides(tmp_path / "good.mztab")
    refs = [r["spectra_ref"] for r in mztab.read_mztab(tmp_path / "mixed.mztab")]
    assert "ms_run[1]:index=4" not in refs  # the rejected spectra have no PSM


def test_mgf_mzml_mzxml_give_identical_predictions(model, tmp_path):
    outs = {}
    for name in ("spectra.mgf", "spectra.mzML", "spectra.mzXML"):
        outs[name] = tmp_path / f"{name}.mztab"
        assert _run(model, outs[name], PEAKS / name) == 0
    first = _peptides(outs["spectra.mgf"])
    assert len(first) > 0
    assert _peptides(outs["spectra.mzML"]) == first == _peptides(outs["spectra.mzXML"])
    refs = [r["spectra_ref"] for r in mztab.read_mztab(outs["spectra.mzML"])]
    assert refs[0] == "ms_run[1]:controllerType=0 controllerNumber=1 scan=2"
    assert mztab.read_mztab(outs["spectra.mzXML"])[0]["spectra_ref"] == "ms_run[1]:scan=2"


def test_converted_casanovo_model_defaults_to_casanovo_rules_and_records_settings(model, tmp_path):
    default, explicit = tmp_path / "default.mztab", tmp_path / "explicit.mztab"
    assert _run(model, default, PEAKS / "spectra.mgf") == 0
    assert _run(model, explicit, PEAKS / "spectra.mgf", extra=["--rules", "casanovo"]) == 0
    assert _peptides(default) == _peptides(explicit)
    zoo_rules = tmp_path / "zoo.mztab"
    assert _run(model, zoo_rules, PEAKS / "spectra.mgf", extra=["--rules", "zoo"]) == 0
    assert _peptides(zoo_rules) != _peptides(default)  # the rules matter on this model
    s = _settings(default)
    assert s["rules"] == "casanovo" and s["precursor_filter"] == "False"
    for key, value in {"beam": "1", "min_length": "1", "n_peaks": "150", "min_peaks": "20",
                       "min_mz": "50.0", "max_mz": "2500.0", "tolerance_ppm": "50.0",
                       "remove_precursor_tol": "2.0", "max_charge": "4", "top_match": "1",
                       "min_intensity": "0.01"}.items():  # fmt: skip
        assert s[key] == value, key
    assert len(s["checkpoint_sha256"]) == 64 and s["zoo_version"]


def test_casanovo_yaml_config_sets_what_it_names_and_flags_win(model, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("n_beams: 2\nmin_peaks: 30\nn_peaks: 100\ndim_model: 512\n")
    out = tmp_path / "c.mztab"
    extra = ["--config", str(config), "--n-peaks", "120"]
    assert _run(model, out, PEAKS / "spectra.mgf", extra=extra) == 0
    s = _settings(out)
    assert (s["beam"], s["min_peaks"], s["n_peaks"]) == ("2", "30", "120")
    config.write_text("n_beams: two\n")
    assert _run(model, out, PEAKS / "spectra.mgf", extra=["--config", str(config)]) == 2


def test_same_file_names_in_two_folders_are_two_ms_runs(model, tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(PEAKS / "spectra.mgf", tmp_path / d / "run.mgf")
    out = tmp_path / "two.mztab"
    assert _run(model, out, tmp_path / "a" / "run.mgf", tmp_path / "b" / "run.mgf") == 0
    meta = dict(mztab.read_mztab_metadata(out))
    assert meta["ms_run[1]-location"].endswith("/a/run.mgf")
    assert meta["ms_run[2]-location"].endswith("/b/run.mgf")
    runs = {r["spectra_ref"].split(":")[0] for r in mztab.read_mztab(out)}
    assert runs == {"ms_run[1]", "ms_run[2]"}


def test_evaluate_numbers_equal_zoo_metrics(model, tmp_path, capsys):
    out = tmp_path / "e.mztab"
    assert _run(model, out, PEAKS / "spectra.mgf", PEAKS / "mixed.mgf", extra=["--evaluate"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "e.metrics.json").read_text())
    assert "overall" in printed and result["overall"]["spectra"] == 12 + 8
    # Recompute from the mzTab: a spectrum without a PSM is a miss.
    truth, guess = [], []
    rows = mztab.read_mztab(out)
    for k, path in enumerate((PEAKS / "spectra.mgf", PEAKS / "mixed.mgf"), 1):
        by_ref = {r["spectra_ref"]: r[PROFORMA] for r in rows
                  if r["spectra_ref"].startswith(f"ms_run[{k}]:")}  # fmt: skip
        spectra, _ = peakfiles.read_spectra(path)
        kept = [s for s in spectra if s.title not in (
            "too_few_peaks", "charge_out_of_range", "no_peaks_in_range")]  # fmt: skip
        file_truth = [s.peptide for s in kept]
        file_guess = [by_ref.get(f"ms_run[{k}]:index={s.index}") for s in kept]
        want = evaluate(file_truth, file_guess)
        got = result["files"][str(path)]
        for m in ("aa_precision", "aa_recall", "peptide_recall"):
            assert got[m] == pytest.approx(want[m], abs=1e-12), (path.name, m)
        truth += file_truth
        guess += file_guess
    want = evaluate(truth, guess)
    for m in ("aa_precision", "aa_recall", "peptide_recall"):
        assert result["overall"][m] == pytest.approx(want[m], abs=1e-12), m


def test_missing_charge_names_the_record_and_the_flag(model, tmp_path, capsys):
    path = tmp_path / "broken.mgf"
    path.write_text((PEAKS / "spectra.mgf").read_text().replace("CHARGE=2+\n", "", 1))
    assert _run(model, tmp_path / "x.mztab", path) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("zoo: error:"))
    assert "broken.mgf: spectrum 0" in line and "CHARGE" in line and "--skip-bad" in line
    assert _run(model, tmp_path / "x.mztab", path, extra=["--skip-bad"]) == 0
    assert "missing_charge: 1" in capsys.readouterr().err


def test_calibrate_then_denovo_writes_confidence_and_evaluate_plots(model, tmp_path):
    """`zoo calibrate` on annotated spectra stores calibration.json with the model; `zoo
    denovo` then writes a confidence per PSM (monotone in the score) and records it; with
    --evaluate it plots precision vs coverage."""
    work = tmp_path / "model"
    shutil.copytree(model, work)
    sha_before = denovo_cli.model_checksum(str(work))
    args = ["calibrate", "--checkpoint", str(work), "--spectra", str(PEAKS / "spectra.mgf")]
    assert cli.main([*args, *FAST]) == 0
    assert (work / "calibration.json").is_file()
    assert denovo_cli.model_checksum(str(work)) == sha_before  # not part of the model
    out = tmp_path / "c.mztab"
    assert _run(work, out, PEAKS / "spectra.mgf", extra=["--evaluate"]) == 0
    rows = mztab.read_mztab(out)
    pairs = sorted((float(r["search_engine_score[1]"]), float(r[CONF])) for r in rows)
    assert all(0.0 <= c <= 1.0 for _, c in pairs)
    assert all(a[1] <= b[1] for a, b in zip(pairs, pairs[1:]))  # monotone in the score
    assert _settings(out)["calibration"].startswith("calibration.json (isotonic, ")
    png = tmp_path / "c.precision_coverage.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "fpr_thresholds" in json.loads((tmp_path / "c.metrics.json").read_text())


def test_top_match_writes_ranked_psms_per_spectrum(model, tmp_path):
    one, three = tmp_path / "one.mztab", tmp_path / "three.mztab"
    assert _run(model, one, PEAKS / "spectra.mgf", extra=["--beam", "3"]) == 0
    extra = ["--beam", "3", "--top-match", "3"]
    assert _run(model, three, PEAKS / "spectra.mgf", extra=extra) == 0
    rows = mztab.read_mztab(three)
    by_ref: dict[str, list[float]] = {}
    for r in rows:
        by_ref.setdefault(r["spectra_ref"], []).append(float(r["search_engine_score[1]"]))
    assert max(len(v) for v in by_ref.values()) > 1 and all(len(v) <= 3 for v in by_ref.values())
    assert all(v == sorted(v, reverse=True) for v in by_ref.values())  # best first
    firsts = {}
    for r in rows:
        firsts.setdefault(r["spectra_ref"], (r["sequence"], r["search_engine_score[1]"]))
    assert list(firsts.values()) == [(r["sequence"], r["search_engine_score[1]"])
                                     for r in mztab.read_mztab(one)]  # fmt: skip
    assert _settings(three)["top_match"] == "3"
