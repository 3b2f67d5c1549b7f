"""A converted Casanovo checkpoint predicts what Casanovo 5.2.1 predicts, through `Sequencer`.

Fixtures: tests/fixtures/make_casanovo_fixtures.py (a small Casanovo model trained briefly so
that its beams stop, its checkpoint, and Casanovo's own beam-1 and beam-3 predictions).
Casanovo breaks ties between equal scores at random (a heap with random tie keys), so only
predictions whose score is not tied with another hypothesis of the same spectrum are
compared exactly; the top-1 peptide of every spectrum is compared for beam 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zoo.peptide import casanovo
from zoo.peptide.sequence import Sequencer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "casanovo"
DATA = dict(np.load(FIXTURES / "parity.npz"))
META = json.loads((FIXTURES / "parity.json").read_text())


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("casanovo") / "model"
    casanovo.convert(FIXTURES / "tiny_casanovo.ckpt", out)
    return casanovo.load_model_dir(out)


def _examples():
    return [
        {
            "mz": DATA["mz"][i],
            "intensity": DATA["intensity"][i],
            "precursor_mz": DATA["precursor_mz"][i],
            "precursor_charge": int(DATA["charge"][i]),
        }
        for i in range(len(DATA["mz"]))
    ]


@pytest.mark.parametrize("beam", [1, 3])
def test_converted_model_predicts_casanovos_peptides(converted, beam):
    config, params, residues = converted
    seq = Sequencer(
        config,
        params,
        residues,
        max_peaks=DATA["mz"].shape[1],
        beam=beam,
        precursor_filter=False,
        casanovo_compatible=True,
    )
    ours = seq.predict(_examples(), "ar")
    theirs = META["predictions"][f"beam{beam}"]
    compared = 0
    for i, (mine, hyps) in enumerate(zip(ours, theirs)):
        if not hyps:
            assert mine.peptide == "", f"spectrum {i}: Casanovo predicted nothing"
            continue
        best = hyps[0]
        tied = sum(h["score"] == best["score"] for h in hyps) > 1
        if tied:
            continue
        want = residues.parse(best["peptide"])
        assert list(mine.tokens) == want, f"spectrum {i}"
        assert mine.score == pytest.approx(best["score"], rel=1e-4, abs=1e-12)
        np.testing.assert_allclose(mine.aa_scores, best["aa_scores"], rtol=1e-4, atol=1e-7)
        compared += 1
    assert compared >= (6 if beam == 1 else 2), "too few untied predictions to compare"


def test_top_match_lists_equal_casanovos(converted):
    """Casanovo with n_beams = top_match = 3 reports its three best kept beams per spectrum
    (parity.json); top_match=3 gives the same lists, in the same order, where no two of a
    spectrum's hypotheses tie (Casanovo orders ties at random)."""
    config, params, residues = converted
    seq = Sequencer(
        config,
        params,
        residues,
        max_peaks=DATA["mz"].shape[1],
        beam=3,
        precursor_filter=False,
        casanovo_compatible=True,
        top_match=3,
    )
    ours = seq.predict_top(_examples(), "ar")
    best = seq.predict(_examples(), "ar")
    compared = 0
    for i, (mine, hyps) in enumerate(zip(ours, META["predictions"]["beam3"])):
        assert (mine[0].peptide if mine else "") == best[i].peptide  # rank 1 is predict's
        scores = [h["score"] for h in hyps]
        if len(set(scores)) < len(scores):
            continue
        assert [list(p.tokens) for p in mine] == [residues.parse(h["peptide"]) for h in hyps]
        for p, h in zip(mine, hyps):
            assert p.score == pytest.approx(h["score"], rel=1e-4, abs=1e-12)
        assert [p.score for p in mine] == sorted((p.score for p in mine), reverse=True)
        compared += 1
    assert compared >= 2, "too few untied spectra to compare"
