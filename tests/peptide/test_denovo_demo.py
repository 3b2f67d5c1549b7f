"""`make demo`'s de novo part end to end on its tiny variant: four trainings, every decoder
on both test sets, mzTab, results.json's summary and the figures."""

from __future__ import annotations

import json
import runpy

from tests.train import runner


def test_denovo_demo_script_end_to_end(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(runner.REPO / "recipes"))  # as `python recipes/X.py`
    demo = runpy.run_path(str(runner.REPO / "recipes" / "denovo_demo.py"))
    workdir = tmp_path / "denovo_demo"
    args = ["--workdir", str(workdir), "--variant", "tiny", "--steps", "4"]
    args += ["--stage2-steps", "2", "--beam", "2", "--test-spectra", "8"]
    assert demo["main"](args) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["summary"]) == {"ar", "nar", "nar_pmc", "hybrid"}
    for row in results["summary"].values():
        assert set(row) == {"aa_precision", "aa_recall", "peptide_recall"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    splits = results["details"]["splits"]
    assert set(splits) == {"test", "test_digest"}  # the random pool and the real digest
    assert results["summary"]["ar"]["aa_precision"] == splits["test"]["ar"]["aa_precision"]
    assert all(v > 0 for v in results["details"]["train_seconds"].values())
    for png in ("summary.png", "learning_curves.png", "ar/learning_curves.png"):
        assert (workdir / png).read_bytes()[:4] == b"\x89PNG", png
    assert (workdir / "hybrid_test.mztab").read_text().startswith("MTD")
