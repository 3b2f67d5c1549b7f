"""Peptide metrics: equal to Casanovo 5.2.1's `evaluate` on ~2,800 random and adversarial
pairs (fixture from tests/fixtures/make_evaluate_fixtures.py), plus hand-worked cases."""

import json
import os

import numpy as np
import pytest

from zoo.peptide import evaluate  # the family's Python face
from zoo.peptide.metrics import aa_match, aa_match_batch, aa_match_metrics, split_peptide
from zoo.peptide.residues import CASANOVO, Residues

FIXTURE = os.path.join(
    os.path.dirname(__file__), "..", "fixtures", "peptide", "evaluate_casanovo.json"
)


@pytest.fixture(scope="module")
def casanovo():
    with open(FIXTURE) as f:
        return json.load(f)


def _flags(result):
    flags, pep = result
    return ["".join("1" if f else "0" for f in flags), int(pep)]


def test_mass_table_is_casanovos(casanovo):
    assert dict(CASANOVO.masses) == casanovo["masses"]


def test_per_pair_matches_equal_casanovo(casanovo):
    true = [t for t, _, _ in casanovo["pairs"]]
    pred = [p for _, p, _ in casanovo["pairs"]]
    batch, n_true, n_pred = aa_match_batch(true, pred, CASANOVO.masses)
    got = [_flags(r) for r in batch]
    pairs = enumerate(zip(casanovo["pairs"], got, casanovo["best"]))
    bad = [(i, pair, g, w) for i, (pair, g, w) in pairs if g != w]
    assert not bad, f"{len(bad)} pairs differ, first: {bad[:3]}"
    assert (n_true, n_pred) == (casanovo["n_aa_true"], casanovo["n_aa_pred"])
    np.testing.assert_allclose(
        aa_match_metrics(batch, n_true, n_pred), casanovo["metrics"], rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("mode", ["forward", "backward", "thresholds"])
def test_modes_and_thresholds_equal_casanovo(casanovo, mode):
    n = len(casanovo[mode])
    true = [t for t, _, _ in casanovo["pairs"][:n]]
    pred = [p for _, p, _ in casanovo["pairs"][:n]]
    kw = (
        dict(cum_mass_threshold=0.2, ind_mass_threshold=0.02)
        if mode == "thresholds"
        else dict(mode=mode)
    )
    got = [_flags(r) for r in aa_match_batch(true, pred, CASANOVO.masses, **kw)[0]]
    assert got == casanovo[mode]


def test_threshold_edges_equal_casanovo(casanovo):
    # Synthetic masses within 0.002-0.05 Da of the 0.1 and 0.5 Da thresholds.
    pairs = casanovo["edge_pairs"]
    batch, _, _ = aa_match_batch(
        [t for t, _ in pairs], [p for _, p in pairs], casanovo["edge_masses"]
    )
    assert [_flags(r) for r in batch] == casanovo["edge_best"]


def test_evaluate_equals_casanovo_metrics(casanovo):
    pairs = casanovo["pairs"]
    got = evaluate([t for t, _, _ in pairs], [p for _, p, _ in pairs])
    want = dict(zip(["aa_precision", "aa_recall", "peptide_recall"], casanovo["evaluate"]))
    assert got.keys() == want.keys()
    for k in want:
        assert abs(got[k] - want[k]) <= 1e-12, (k, got[k], want[k])
    for category, want in casanovo["per_category"].items():
        sub = [(t, p) for t, p, c in pairs if c == category]
        got = evaluate([t for t, _ in sub], [p for _, p in sub])
        np.testing.assert_allclose(list(got.values()), want, rtol=0, atol=1e-12)


def test_split_is_casanovos_regex():
    want = ["+42.011", "P", "E", "P", "C+57.021", "M+15.995", "K"]
    assert split_peptide("+42.011PEPC+57.021M+15.995K") == want
    assert split_peptide("+43.006-17.027QK") == ["+43.006-17.027", "Q", "K"]
    assert split_peptide("") == [""]


def test_hand_worked_pairs():
    m = CASANOVO.masses
    # I/L and N+0.984/D weigh the same: every position matches.
    assert _flags(aa_match(list("PEPTIDE"), list("PEPTLDE"), m)) == ["1111111", 1]
    assert _flags(aa_match(["P", "N+0.984", "K"], ["P", "D", "K"], m)) == ["111", 1]
    # GG vs N: paired by cumulative mass, but no residue matches individually; K still does.
    assert _flags(aa_match(["G", "G", "K"], ["N", "K"], m)) == ["001", 0]
    # Swapped GA/AG: paired only by cumulative mass, neither residue matches on its own.
    assert _flags(aa_match(list("PGAK"), list("PAGK"), m)) == ["1001", 0]
    # A missing prediction: all-False flags as long as the truth.
    assert _flags(aa_match(list("PEPK"), None, m)) == ["0000", 0]


def test_evaluate_counts_by_hand():
    # 2 spectra: PEPTIDE predicted with I->L (7/7), PEPK missing (0 predicted residues).
    got = evaluate(["PEPTIDE", "PEPK"], ["PEPTLDE", ""])
    assert got["aa_precision"] == pytest.approx(7 / 7)
    assert got["aa_recall"] == pytest.approx(7 / 11)
    assert got["peptide_recall"] == pytest.approx(1 / 2)
    # Empty string and None are the same missing prediction.
    assert evaluate(["PEPK"], [""]) == evaluate(["PEPK"], [None])


def test_proforma_is_parsed_not_cut_by_the_regex():
    mass = evaluate(["C+57.021PEPM+15.995K"], ["C+57.021PEPM+15.995K"])
    proforma = evaluate(["C[Carbamidomethyl]PEPM[Oxidation]K"], ["C+57.021PEPM+15.995K"])
    assert proforma == mass and mass["peptide_recall"] == pytest.approx(1.0)


def test_residue_table_is_configurable():
    # Without deamidation in the table, N+0.984 weighs 0 (Casanovo's rule for unknown tokens).
    masses = {k: v for k, v in CASANOVO.masses.items() if k != "N+0.984"}
    got = evaluate(["PDK"], ["PN+0.984K"], residues=Residues(masses=masses))
    assert got["peptide_recall"] == 0.0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="2 true peptides but 1 predictions"):
        evaluate(["PEPK", "PEPR"], ["PEPK"])
    with pytest.raises(ValueError, match="true peptide 0 is empty"):
        evaluate([""], ["PEPK"])
    with pytest.raises(ValueError, match="no spectra"):
        evaluate([], [])
