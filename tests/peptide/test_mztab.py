"""mzTab writer equals Casanovo 5.2.1's MztabWriter (fixture written by Casanovo itself, see
tests/fixtures/make_spectra_fixtures.py), and reads back.

Compared exactly: the PSH header and every PSM line, and every MTD line except two, excluded
because they cannot match: ms_run[i]-location (Casanovo's fixture points into a temporary
directory; we compare the file names and their numbering instead) and the order of the
variable_mod lines (Casanovo iterates a Python set; we compare them as a set).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from zoo.peptide.mztab import (
    Psm,
    modification_metadata,
    read_mztab,
    read_mztab_metadata,
    write_mztab,
)
from zoo.peptide.residues import CASANOVO, precursor_mz

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "peptide"
CASANOVO_SOFTWARE = "[MS, MS:1003281, Casanovo, 5.2.1]"


def _fixture():
    return json.loads((FIXTURES / "mztab_casanovo.json").read_text())


def _psms(records, *, calc=True, as_tokens=False):
    out = []
    for r in records:
        peptide = r["sequence"]
        if as_tokens:
            peptide = CASANOVO.parse(peptide) if peptide else []
        out.append(
            Psm(
                peptide=peptide,
                score=r["score"],
                aa_scores=np.array(r["aa_scores"], dtype=np.float32),
                precursor_charge=r["charge"],
                precursor_mz=r["exp_mz"],
                spectrum_file=r["file"],
                spectrum_index=r["index"],
                calc_mz=r["calc_mz"] if calc else None,
                scan=r["scan"],
            )
        )
    return out


def _write_like_casanovo(path, psms, fixture):
    return write_mztab(
        path,
        psms,
        metadata={
            "model": "casanovo_v5.ckpt",
            "config_filename": "config.yaml",
            **fixture["settings"],
        },
        ms_runs=["/data/run_b.mgf", "/data/run_a.mgf"],
        software=CASANOVO_SOFTWARE,
        description="Casanovo identification file casanovo",
    )


def _split(text):
    lines = text.splitlines()
    return [line for line in lines if line.startswith("MTD")], [
        line for line in lines if not line.startswith("MTD")
    ]


def test_psm_section_equals_casanovos_writer(tmp_path):
    fixture = _fixture()
    assert fixture["casanovo_version"] == "5.2.1"
    n = _write_like_casanovo(tmp_path / "ours.mztab", _psms(fixture["psms"]), fixture)
    ours_mtd, ours_psm = _split((tmp_path / "ours.mztab").read_text())
    ref_mtd, ref_psm = _split((FIXTURES / "mztab_casanovo.mztab").read_text())
    assert ours_psm == ref_psm
    assert n == len(ref_psm) - 1 == sum(1 for r in fixture["psms"] if r["sequence"])

    def comparable(mtd):
        rows = [line.split("\t") for line in mtd]
        plain = [r for r in rows if not r[1].startswith(("variable_mod", "ms_run"))]
        pairs = [r[2] for r in rows if r[1].startswith("variable_mod")]
        variable = set(zip(pairs[0::2], pairs[1::2]))
        runs = [(r[1], r[2].rsplit("/", 1)[1]) for r in rows if r[1].startswith("ms_run")]
        return plain, variable, runs

    assert comparable(ours_mtd) == comparable(ref_mtd)


def test_tokens_and_strings_write_the_same_rows(tmp_path):
    fixture = _fixture()
    _write_like_casanovo(tmp_path / "a.mztab", _psms(fixture["psms"]), fixture)
    _write_like_casanovo(tmp_path / "b.mztab", _psms(fixture["psms"], as_tokens=True), fixture)
    assert (tmp_path / "a.mztab").read_text() == (tmp_path / "b.mztab").read_text()


def test_computed_calc_mz_is_the_exact_peptide_mz_and_near_casanovos(tmp_path):
    fixture = _fixture()
    _write_like_casanovo(tmp_path / "c.mztab", _psms(fixture["psms"], calc=False), fixture)
    rows = read_mztab(tmp_path / "c.mztab")
    reference = {(r["file"], r["index"], r["sequence"]): r["calc_mz"] for r in fixture["psms"]}
    for row in rows:
        tokens = CASANOVO.parse(row["opt_global_cv_MS:1003169_proforma_peptidoform_sequence"])
        calc = float(row["calc_mass_to_charge"])
        assert calc == precursor_mz(CASANOVO.peptide_mass(tokens), int(row["charge"]))
        run = {"ms_run[1]": "run_a.mgf", "ms_run[2]": "run_b.mgf"}[row["spectra_ref"][:9]]
        key = (
            run,
            int(row["spectra_ref"].split("index=")[1]),
            row["opt_global_cv_MS:1003169_proforma_peptidoform_sequence"],
        )
        # Casanovo sums a float32 mass table: agreement to float32 precision only.
        assert abs(calc - reference[key]) < 1e-4


def test_read_mztab_returns_what_was_written(tmp_path):
    fixture = _fixture()
    psms = [p for p in _psms(fixture["psms"]) if p.peptide]
    _write_like_casanovo(tmp_path / "r.mztab", psms, fixture)
    rows = read_mztab(tmp_path / "r.mztab")
    by_ref = {(p.spectrum_file, p.spectrum_index, p.peptide): p for p in psms}
    runs = {"ms_run[1]": "run_a.mgf", "ms_run[2]": "run_b.mgf"}
    for i, row in enumerate(rows, 1):
        proforma = row["opt_global_cv_MS:1003169_proforma_peptidoform_sequence"]
        p = by_ref[(runs[row["spectra_ref"][:9]], int(row["spectra_ref"].split("=")[1]), proforma)]
        tokens = CASANOVO.parse(proforma)
        assert row["PSM_ID"] == str(i) and row["sequence"] == "".join(
            t[0] for t in tokens if t not in CASANOVO.nterm
        )
        assert float(row["search_engine_score[1]"]) == p.score
        assert int(row["charge"]) == p.precursor_charge
        assert float(row["exp_mass_to_charge"]) == p.precursor_mz
        scores = [float(s) for s in row["opt_global_aa_scores"].split(",")]
        assert len(scores) == len(tokens) - (tokens[0] in CASANOVO.nterm)
    # Rows come sorted by file, then index in natural order (index=2 before index=10).
    refs = [r["spectra_ref"] for r in rows]
    assert refs.index("ms_run[1]:index=2") < refs.index("ms_run[1]:index=10")
    metadata = dict(read_mztab_metadata(tmp_path / "r.mztab"))
    assert metadata["software[1]-setting[1]"] == "model = casanovo_v5.ckpt"
    assert metadata["ms_run[2]-location"] == "file:///data/run_b.mgf"


def test_n_terminal_score_is_merged_into_the_first_residue(tmp_path):
    psm = Psm(["+42.011", "A", "K"], 0.5, [0.5, 0.25, 0.75], 2, 300.0, "x.mgf", 0)
    write_mztab(tmp_path / "n.mztab", [psm])
    (row,) = read_mztab(tmp_path / "n.mztab")
    assert row["opt_global_aa_scores"] == "0.12500,0.75000"
    assert row["modifications"] == "0-Acetyl (N-term):UNIMOD:1"
    assert row["sequence"] == "AK" and "opt_global_cv_MS:1003057_scan_number" not in row


def test_defaults_name_zoo_and_derive_modifications_from_the_residue_table(tmp_path):
    write_mztab(tmp_path / "d.mztab", [Psm("PEPK", 0.9, [0.9] * 4, 2, 300.0, "x.mgf", 3)])
    metadata = read_mztab_metadata(tmp_path / "d.mztab")
    assert ("description", "zoo identification file d") in metadata
    assert dict(metadata)["software[1]"].startswith("[MS, MS:1001456, analysis software, zoo")
    mods = dict(modification_metadata(CASANOVO))
    assert mods["fixed_mod[1]"] == "[UNIMOD, UNIMOD:4, Carbamidomethyl, ]"
    assert mods["fixed_mod[1]-site"] == "C"
    sites = [v for k, v in mods.items() if k.startswith("variable_mod") and k.endswith("site")]
    assert sites == ["N", "Q", "M", "N-term", "N-term", "N-term"]  # residue-table order


@pytest.mark.parametrize(
    "psm, match",
    [
        (Psm("PEPK", 0.9, [0.9] * 3, 2, 300.0, "x.mgf", 0), "3 aa_scores for 4 tokens"),
        (Psm("PEPXK", 0.9, [0.9] * 5, 2, 300.0, "x.mgf", 0), "'X'"),
        (Psm(["P", "Z"], 0.9, [0.9] * 2, 2, 300.0, "x.mgf", 0), "not in the residue table"),
        (Psm("PEPK", 0.9, [0.9] * 4, 2, 300.0, "other.mgf", 7), "other.mgf index=7"),
    ],
)
def test_bad_psms_raise_naming_the_psm(tmp_path, psm, match):
    with pytest.raises(ValueError, match=match):
        write_mztab(tmp_path / "e.mztab", [psm], ms_runs=["x.mgf"])
