"""The spectrum simulator: digest rules, ion masses against pyteomics, determinism."""

import dataclasses

import numpy as np
import pytest
from pyteomics import mass as pyteomics_mass

from zoo.peptide.residues import CASANOVO, H2O, PROTON, precursor_mz
from zoo.peptide.simulate import (
    SimulationConfig,
    embedded_fasta,
    fasta_digest,
    ion_ladder,
    modify,
    peptide_key,
    read_fasta,
    simulate,
    simulate_peaks,
    tryptic_digest,
)

# Every Casanovo token as a pyteomics "residue": fast_mass sums aa_mass[t] over the items of
# the sequence, so a token list works as a sequence.
AA_MASS = dict(CASANOVO.masses)


def test_digest_cleaves_after_k_and_r_but_not_before_p():
    protein = "AAAKBBBRPCCCKDDDRR"
    assert tryptic_digest(protein, missed_cleavages=0, min_length=1) == [
        "AAAK",
        "BBBRPCCCK",  # R followed by P is not a cleavage site
        "DDDR",
        "R",
    ]


def test_digest_missed_cleavages_and_length_bounds():
    protein = "AAAKBBBRPCCCKDDDRR"
    one = tryptic_digest(protein, missed_cleavages=1, min_length=1, max_length=100)
    assert set(one) == {
        "AAAK", "BBBRPCCCK", "DDDR", "R",
        "AAAKBBBRPCCCK", "BBBRPCCCKDDDR", "DDDRR",
    }  # fmt: skip
    assert tryptic_digest(protein, missed_cleavages=1, min_length=5, max_length=9) == [
        "BBBRPCCCK",
        "DDDRR",
    ]
    # A protein without cleavage sites is one peptide; a trailing K gives no empty peptide.
    assert tryptic_digest("ACDEFGHK", min_length=1) == ["ACDEFGHK"]


def test_read_fasta_reports_text_before_the_first_header(tmp_path):
    path = tmp_path / "bad.fasta"
    path.write_text("ACDE\n>sp|X\nACDE\n")
    with pytest.raises(ValueError, match=r"bad\.fasta:1: sequence text before"):
        read_fasta(path)
    path.write_text(">a\nAC DE*\nFG\n>b\nKK\n")
    assert read_fasta(path) == [("a", "ACDEFG"), ("b", "KK")]


def test_embedded_fasta_gives_thousands_of_standard_peptides():
    records = read_fasta(embedded_fasta())
    assert len(records) == 51 and all(h.startswith(("sp|", "tr|")) for h, _ in records)
    peptides = fasta_digest(embedded_fasta(), missed_cleavages=1, min_length=6, max_length=30)
    assert len(peptides) > 5000
    assert all(6 <= len(p) <= 30 and set(p) <= set("ACDEFGHIKLMNPQRSTVWY") for p in peptides)


@pytest.mark.parametrize(
    "tokens",
    [
        list("PEPTIDEK"),
        ["G", "C+57.021", "M+15.995", "N+0.984", "Q+0.984", "W", "R"],
        ["+42.011", "S", "Q", "M", "K"],
        ["+43.006-17.027", "Q+0.984", "A", "Y", "H", "R"],
        ["-17.027", "C+57.021", "F", "V", "L", "I", "D", "E", "K"],
    ],
)
@pytest.mark.parametrize("charge", [1, 2, 3])
def test_ion_ladder_matches_pyteomics(tokens, charge):
    b, y = ion_ladder(tokens, CASANOVO, charge)
    # The N-terminal modification belongs to the first residue, so it is in every b ion.
    has_nterm = tokens[0] in CASANOVO.nterm
    residues = tokens[1:] if has_nterm else tokens
    assert len(b) == len(y) == len(residues) - 1
    for i in range(1, len(residues)):
        prefix = tokens[: i + int(has_nterm)]
        suffix = residues[-i:]
        expected_b = pyteomics_mass.fast_mass(prefix, ion_type="b", charge=charge, aa_mass=AA_MASS)
        expected_y = pyteomics_mass.fast_mass(suffix, ion_type="y", charge=charge, aa_mass=AA_MASS)
        assert b[i - 1] == pytest.approx(expected_b, abs=1e-6)
        assert y[i - 1] == pytest.approx(expected_y, abs=1e-6)


def test_noise_free_spectrum_is_exactly_the_b_y_ladder():
    clean = SimulationConfig(
        fragment_drop_rate=0.0,
        neutral_loss_rate=0.0,
        noise_peaks=0.0,
        mz_ppm=0.0,
        intensity_sigma=0.0,
    )
    tokens = ["+42.011", "A", "C+57.021", "D", "M+15.995", "P", "K"]
    for charge, fragment_charges in ((2, [1]), (3, [1, 2])):
        mz, intensity = simulate_peaks(tokens, charge, np.random.default_rng(0), clean)
        expected = np.sort(np.concatenate([np.concatenate(ion_ladder(tokens, CASANOVO, z))
                                           for z in fragment_charges]))  # fmt: skip
        np.testing.assert_allclose(mz, expected, rtol=0, atol=1e-9)
        assert (intensity > 0).all()
    # y ions dominate b ions; cleavage before P is boosted.
    mz, intensity = simulate_peaks(tokens, 2, np.random.default_rng(0), clean)
    b, y = ion_ladder(tokens, CASANOVO, 1)
    at = {round(m, 6): v for m, v in zip(mz, intensity)}
    assert at[round(y[0], 6)] > at[round(b[0], 6)]
    assert at[round(y[1], 6)] == pytest.approx(clean.proline_boost * at[round(y[0], 6)])


def test_neutral_losses_and_jitter_stay_near_the_ladder():
    config = SimulationConfig(neutral_loss_rate=1.0, noise_peaks=0.0, fragment_drop_rate=0.0)
    tokens = list("STEDRKNQ")
    mz, _ = simulate_peaks(tokens, 2, np.random.default_rng(3), config)
    b, y = ion_ladder(tokens, CASANOVO, 1)
    ladder = np.concatenate([b, y])
    candidates = np.concatenate([ladder, ladder - H2O, ladder - 17.026549])
    nearest = np.abs(mz[:, None] - candidates[None, :]).min(axis=1)
    assert (nearest / mz * 1e6 < 40).all()  # within 8 sigma of the 5 ppm jitter
    assert len(mz) > len(ladder)  # the losses are there


def test_precursor_mz_is_consistent_with_the_peptide():
    rng = np.random.default_rng(11)
    peptides = fasta_digest(embedded_fasta(), missed_cleavages=1, min_length=6, max_length=30)
    charges = set()
    for peptide in rng.choice(peptides, 200, replace=False):
        s = simulate(str(peptide), rng)
        assert peptide_key("".join(s.tokens)) == peptide_key(str(peptide))
        residue_sum = sum(AA_MASS[t] for t in s.tokens)
        expected = (residue_sum + H2O + s.precursor_charge * PROTON) / s.precursor_charge
        assert s.precursor_mz == pytest.approx(expected, abs=1e-6)
        neutral = pyteomics_mass.fast_mass(list(s.tokens), aa_mass=AA_MASS)
        assert s.precursor_mz == pytest.approx(precursor_mz(neutral, s.precursor_charge), abs=1e-6)
        assert np.all(np.diff(s.mz) >= 0) and (s.intensity > 0).all()
        charges.add(s.precursor_charge)
    assert charges == {2, 3}


def test_modifications_follow_the_vocabulary_and_rates():
    rng = np.random.default_rng(0)
    all_on = SimulationConfig(oxidation_rate=1.0, deamidation_rate=1.0, nterm_mod_rate=1.0)
    tokens = modify("CMNQK", rng, all_on)
    assert tokens[0] in CASANOVO.nterm
    assert tokens[1:] == ["C+57.021", "M+15.995", "N+0.984", "Q+0.984", "K"]
    none = SimulationConfig(oxidation_rate=0.0, deamidation_rate=0.0, nterm_mod_rate=0.0)
    assert modify("CMNQK", rng, none) == ["C+57.021", "M", "N", "Q", "K"]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        modify("PEPXK", rng)


def test_longer_peptides_are_more_often_triply_charged():
    rng = np.random.default_rng(5)
    short = np.mean([simulate("ACDEFGK", rng).precursor_charge == 3 for _ in range(400)])
    long = np.mean([simulate("ACDEFGHLMNPQSTVWYK", rng).precursor_charge == 3 for _ in range(400)])
    assert short < 0.3 < long


def test_simulation_is_deterministic_in_the_seed():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [simulate(p, rng) for p in ("PEPTIDEK", "MNQCLLR", "AGSTWYVK")]

    a, b, c = draw(1), draw(1), draw(2)
    for x, y in zip(a, b):
        assert dataclasses.asdict(x).keys() == dataclasses.asdict(y).keys()
        assert x.tokens == y.tokens and x.precursor_charge == y.precursor_charge
        np.testing.assert_array_equal(x.mz, y.mz)
        np.testing.assert_array_equal(x.intensity, y.intensity)
    assert any(not np.array_equal(x.mz, z.mz) for x, z in zip(a, c))


def test_peptide_key_ignores_modifications_and_isoleucine():
    assert peptide_key("+42.011PEPM+15.995IK") == peptide_key("PEPMLK") == "PEPMLK"
    assert peptide_key("[Acetyl]-C[Carbamidomethyl]N[Deamidated]I") == "CNL"
