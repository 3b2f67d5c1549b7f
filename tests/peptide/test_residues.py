"""Residue masses against pyteomics (elemental compositions), peptide and precursor masses, and
the Casanovo / ProForma notations with their errors.

Reference masses are computed from compositions with pyteomics' NIST isotope masses: amino
acids from `pyteomics.mass.std_aa_comp`, modifications from their Unimod compositions (written
out here: pyteomics' Unimod reader downloads unimod.xml, and tests never touch the network).
Two of Casanovo's values are not the monoisotopic masses and are pinned instead:
  * T = 101.047670, 8.5 µDa below C4H7NO2 (101.0476785), in Casanovo's table since v1;
  * +43.006-17.027 = 25.980265, 1 mDa above Carbamyl + Ammonia-loss (25.979265): depthcharge
    0.2.3 wrote Carbamyl as 43.006814 instead of 43.005814 and the sum kept the typo.
Both are kept so that masses, scores and precursor filters agree with Casanovo's.
"""

import numpy as np
import pytest

from zoo.peptide.residues import (
    CASANOVO,
    CASANOVO_MASSES,
    CYSTEINE,
    H2O,
    PROTON,
    PeptideParseError,
    Residues,
    neutral_mass,
    ppm_error,
    precursor_mz,
)

mass = pytest.importorskip("pyteomics.mass")

# Unimod compositions (accession in the comment).
UNIMOD_COMPOSITIONS = {
    "Carbamidomethyl": "H3C2NO",  # UNIMOD:4
    "Oxidation": "O",  # UNIMOD:35
    "Deamidated": "H-1N-1O",  # UNIMOD:7
    "Acetyl": "H2C2O",  # UNIMOD:1
    "Carbamyl": "HCNO",  # UNIMOD:5
    "Ammonia-loss": "H-3N-1",  # UNIMOD:385
}
# Casanovo token -> (amino acid or "" for N-terminal, Unimod modifications)
TOKEN_COMPOSITION = {
    "C+57.021": ("C", ["Carbamidomethyl"]),
    "M+15.995": ("M", ["Oxidation"]),
    "N+0.984": ("N", ["Deamidated"]),
    "Q+0.984": ("Q", ["Deamidated"]),
    "+42.011": ("", ["Acetyl"]),
    "+43.006": ("", ["Carbamyl"]),
    "-17.027": ("", ["Ammonia-loss"]),
    "+43.006-17.027": ("", ["Carbamyl", "Ammonia-loss"]),
}
# Casanovo's value minus the monoisotopic one, where that is not within 1e-6 Da (docstring);
# after removing these offsets every token is within 1e-6 Da.
PINNED = {"T": -8.5e-6, "+43.006-17.027": 43.006814 - 43.005814}


def reference_mass(token: str) -> float:
    """Monoisotopic mass of a token from elemental compositions (pyteomics)."""
    aa, mods = TOKEN_COMPOSITION.get(token, (token, []))
    composition = mass.Composition(mass.std_aa_comp[aa]) if aa else mass.Composition()
    for mod in mods:
        composition += mass.Composition(formula=UNIMOD_COMPOSITIONS[mod])
    return composition.mass()


@pytest.mark.parametrize("token", list(CASANOVO_MASSES))
def test_residue_mass_equals_composition_mass(token):
    error = CASANOVO.mass(token) - reference_mass(token)
    assert abs(error - PINNED.get(token, 0.0)) <= 1e-6


def test_pinned_values_are_casanovos():
    assert CASANOVO_MASSES["+43.006-17.027"] == 25.980265
    assert CASANOVO_MASSES["T"] == 101.047670
    true_sum = reference_mass("+43.006") + reference_mass("-17.027")
    assert 25.980265 - true_sum == pytest.approx(0.001, abs=1e-6)


def test_water_and_proton_equal_pyteomics():
    assert H2O == pytest.approx(mass.calculate_mass(formula="H2O"), abs=1e-7)
    assert PROTON == pytest.approx(mass.nist_mass["H+"][0][0], abs=1e-9)


def test_vocabulary_is_casanovos_27_tokens():
    assert len(CASANOVO.tokens) == 27
    assert CASANOVO.nterm == {"+42.011", "+43.006", "-17.027", "+43.006-17.027"}
    assert CASANOVO.mass("N+0.984") == CASANOVO.mass("D")


def _random_peptides(rng, n):
    residues = [t for t in CASANOVO.tokens if t not in CASANOVO.nterm]
    nterm = sorted(CASANOVO.nterm)
    for _ in range(n):
        tokens = list(rng.choice(residues, int(rng.integers(1, 30))))
        if rng.random() < 0.3:
            tokens.insert(0, nterm[int(rng.integers(len(nterm)))])
        yield tokens


def _tolerance(tokens):
    """Each table mass is within 1e-6 Da of its composition (pinned ones: known offsets)."""
    return 1e-6 * (len(tokens) + 1)


def _pinned_offset(tokens):
    return sum(PINNED.get(t, 0.0) for t in tokens)


def test_unmodified_peptide_mass_equals_pyteomics_fast_mass():
    rng = np.random.default_rng(0)
    letters = [t for t in CASANOVO.tokens if len(t) == 1]
    for _ in range(300):
        sequence = "".join(rng.choice(letters, int(rng.integers(1, 40))))
        ours = CASANOVO.peptide_mass(sequence)
        expected = mass.fast_mass(sequence) + _pinned_offset(sequence)
        assert abs(ours - expected) <= _tolerance(sequence), sequence
        assert ours == pytest.approx(sum(CASANOVO.mass(a) for a in sequence) + H2O, abs=1e-9)


def test_modified_peptide_mass_equals_pyteomics_compositions():
    rng = np.random.default_rng(1)
    for tokens in _random_peptides(rng, 300):
        composition = mass.Composition(formula="H2O")
        for token in tokens:
            aa, mods = TOKEN_COMPOSITION.get(token, (token, []))
            if aa:
                composition += mass.Composition(mass.std_aa_comp[aa])
            for mod in mods:
                composition += mass.Composition(formula=UNIMOD_COMPOSITIONS[mod])
        expected = mass.calculate_mass(composition=composition) + _pinned_offset(tokens)
        assert abs(CASANOVO.peptide_mass(tokens) - expected) <= _tolerance(tokens), tokens


@pytest.mark.parametrize("charge", [1, 2, 3, 4])
def test_precursor_mz_equals_pyteomics_with_charge(charge):
    rng = np.random.default_rng(charge)
    letters = [t for t in CASANOVO.tokens if len(t) == 1]
    for _ in range(100):
        sequence = "".join(rng.choice(letters, int(rng.integers(5, 30))))
        ours = precursor_mz(CASANOVO.peptide_mass(sequence), charge)
        expected = mass.fast_mass(sequence, charge=charge) + _pinned_offset(sequence) / charge
        assert abs(ours - expected) <= _tolerance(sequence) / charge
        assert neutral_mass(ours, charge) == pytest.approx(CASANOVO.peptide_mass(sequence))


def test_ppm_error_allows_the_first_isotope():
    calc = precursor_mz(CASANOVO.peptide_mass("PEPTIDEK"), 2)
    observed = calc + 1.00335 / 2
    assert abs(ppm_error(calc, observed, 2, isotope=1)) < 1e-6
    assert ppm_error(calc, observed, 2, isotope=0) < -1000


@pytest.mark.parametrize(
    "casanovo, proforma",
    [
        ("PEPTIDEK", "PEPTIDEK"),
        ("C+57.021GHTNNIRPK", "C[Carbamidomethyl]GHTNNIRPK"),
        ("M+15.995N+0.984Q+0.984K", "M[Oxidation]N[Deamidated]Q[Deamidated]K"),
        ("+42.011PEPK", "[Acetyl]-PEPK"),
        ("+43.006PEPK", "[Carbamyl]-PEPK"),
        ("-17.027QPEPK", "[Ammonia-loss]-QPEPK"),
        ("+43.006-17.027C+57.021K", "[+25.980265]-C[Carbamidomethyl]K"),
        ("+43.006-17.027K", "[Carbamyl][Ammonia-loss]-K"),
        ("M+15.995K", "M[UNIMOD:35]K"),
    ],
)
def test_casanovo_and_proforma_notations_give_the_same_tokens(casanovo, proforma):
    tokens = CASANOVO.parse(casanovo)
    assert CASANOVO.parse(proforma) == tokens
    assert CASANOVO.to_string(tokens) == casanovo
    assert CASANOVO.parse(CASANOVO.to_proforma(tokens)) == tokens


def test_random_token_lists_round_trip_through_both_notations():
    for tokens in _random_peptides(np.random.default_rng(2), 200):
        assert CASANOVO.parse(CASANOVO.to_string(tokens)) == tokens
        assert CASANOVO.parse(CASANOVO.to_proforma(tokens)) == tokens


def test_isoleucine_becomes_leucine_when_asked():
    residues = Residues(replace_isoleucine=True)
    assert residues.parse("IL") == ["L", "L"] and "I" not in residues.tokens
    assert CASANOVO.parse("IL") == ["I", "L"]


@pytest.mark.parametrize(
    "peptide, match",
    [
        ("PEPTIDEX", r"residue 'X'.*does not know"),
        ("M+16PEP", r"residue 'M\+16'"),
        ("PEPS[Phospho]K", r"residue 'S\[Phospho\]'"),
        ("PEP+42.011K", r"residue 'P\+42.011'"),
        ("pepk", r"cannot read peptide 'pepk'"),
        ("[Acetyl]-[Acetyl]-PEP", r"cannot read .* at '\[Acetyl\]-PEP'"),
    ],
)
def test_parse_errors_name_the_peptide_the_residue_and_where(peptide, match):
    with pytest.raises(PeptideParseError, match=match) as e:
        CASANOVO.parse(peptide, where="run.mgf: spectrum 3 SEQ")
    assert str(e.value).startswith("run.mgf: spectrum 3 SEQ: ")


def test_mass_delta_proforma_needs_no_network_and_keeps_the_masses(monkeypatch):
    """spectrum_utils resolves named modifications by downloading Unimod; mass deltas it
    reads offline, and they carry our masses."""
    import urllib.request

    proforma = pytest.importorskip("spectrum_utils.proforma", reason="the denovo extra")

    def offline(*args, **kwargs):
        raise AssertionError("spectrum_utils tried the network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    for peptide in ("+43.006-17.027C+57.021K", "+42.011M+15.995PN+0.984Q+0.984R", "PEPTIDEK"):
        tokens = CASANOVO.parse(peptide)
        text = CASANOVO.to_proforma(tokens, mass_deltas=True)
        (parsed,) = proforma.parse(text)
        assert parsed.sequence == "".join(t[0] for t in tokens if t not in CASANOVO.nterm)
        deltas = sum(m.mass for m in parsed.modifications or [])
        plain = H2O + sum(CASANOVO.masses.get(a, CYSTEINE) for a in parsed.sequence)
        assert abs(plain + deltas - CASANOVO.peptide_mass(tokens)) < 1e-5, text
