"""`make demo`'s de novo part end to end on its tiny variant: four trainings at equal wall
time, every decoder on both test sets, mzTab, results.json's summary and the figures; a rerun
reuses every finished stage. (`--ablation`, the hybrid variants, runs the same train_stage and
scoring code per variant; it is left out here to keep the suite in its 15 minutes.)"""

from __future__ import annotations

import json
import runpy

from tests.train import runner


def test_denovo_demo_script_end_to_end(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(runner.REPO / "recipes"))  # as `python recipes/X.py`
    demo = runpy.run_path(str(runner.REPO / "recipes" / "denovo_demo.py"))
    workdir = tmp_path / "denovo_demo"
    args = ["--workdir", str(workdir), "--variant", "tiny", "--seconds", "1"]
    args += ["--beam", "2", "--test-spectra", "8"]
    assert demo["main"](args) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["summary"]) == {"ar", "nar", "nar_pmc", "hybrid"}
    for row in results["summary"].values():
        assert set(row) == {"aa_precision", "aa_recall", "peptide_recall"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
    splits = results["details"]["splits"]
    assert set(splits) == {"test", "test_digest"}  # the random pool and the real digest
    assert results["summary"]["ar"]["aa_precision"] == splits["test"]["ar"]["aa_precision"]
    details = results["details"]
    # Equal training time: AR and NAR 1 s of steps each, the hybrid's two stages 1 s
    # together (each run ends at its first step past its share).
    seconds = details["train_seconds"]
    assert 1 <= seconds["AR"] < 2 and 1 <= seconds["NAR"] < 2
    assert seconds["hybrid stage 1"] >= 0.7 and seconds["hybrid stage 2"] >= 0.3
    assert seconds["hybrid stage 1"] + seconds["hybrid stage 2"] < 2
    assert all(n >= 1 for n in details["updates"].values())
    assert "ablation" not in details  # `--ablation` (the hybrid variants) was not asked for
    for png in ("summary.png", "learning_curves.png", "ar/learning_curves.png"):
        assert (workdir / png).read_bytes()[:4] == b"\x89PNG", png
    assert (workdir / "hybrid_test.mztab").read_text().startswith("MTD")

    # Rerun: every stage is finished (its budget spent), so nothing trains again.
    assert demo["main"](args) == 0
    again = json.loads((workdir / "results.json").read_text())["details"]
    assert again["updates"] == details["updates"]
    assert again["train_seconds"] == details["train_seconds"]
