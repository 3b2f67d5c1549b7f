"""mzTab output as Casanovo 5.2.1 writes it (casanovo/data/ms_io.py `MztabWriter`), and a reader.

Proteomics tools read de novo results as mzTab 1.0 "Summary / Identification" files: a metadata
section (MTD lines), a PSM header (PSH) and one PSM line per peptide-spectrum match. Writing
what Casanovo writes, column for column, lets its users swap tools without touching the
downstream scripts:

    write_mztab("results.mztab", psms, metadata={"beam": 5, "mode": "hybrid"})
    rows = read_mztab("results.mztab")   # [{"sequence": "PEPTIDEK", "charge": "2", ...}]

PSM rows, as Casanovo writes them:
  * sorted by (file name, `index=N`) in natural order (index=2 before index=10), several PSMs of
    one spectrum in the order given; PSM_ID counts from 1 in that order;
  * sequence: residue letters only; modifications: `pos-Name (site):UNIMOD:n` joined by "; "
    (pos 0 = N-terminus), `pos-[+25.9803]` for a modification known only by its mass, "null"
    when unmodified; opt_global_cv_MS:1003169_proforma_peptidoform_sequence: ProForma;
  * search_engine_score[1]: the peptide score (Python repr); exp/calc_mass_to_charge: observed
    precursor m/z and the peptide's m/z at that charge;
  * opt_global_aa_scores: one score per residue, 5 decimals, an N-terminal modification's score
    multiplied into the first residue's (Casanovo's Spec2Pep.on_predict_batch_end);
  * spectra_ref `ms_run[i]:index=N`; opt_global_cv_MS:1003057_scan_number `ms_run[i]:scan=S`
    (or "null"), present when any PSM of an MGF run carries a numeric scan;
  * a PSM with an empty peptide is not written.

Differences from Casanovo, by design: calc_mass_to_charge (when not given) is computed in f64;
Casanovo sums a float32 mass table, so its values differ from ours in the ~6th decimal. The
scan column appears when a written PSM has a scan (Casanovo scans the input MGF files). Fixed
and variable modification lines follow the residue table's order (Casanovo iterates a set).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.peptide.residues import CASANOVO, Residues, precursor_mz

# ProForma names -> (Unimod accession, mass notation) of the modifications Casanovo uses.
UNIMOD: dict[str, tuple[str, str]] = {
    "Carbamidomethyl": ("UNIMOD:4", "+57.021"),
    "Oxidation": ("UNIMOD:35", "+15.995"),
    "Deamidated": ("UNIMOD:7", "+0.984"),
    "Acetyl": ("UNIMOD:1", "+42.011"),
    "Carbamyl": ("UNIMOD:5", "+43.006"),
    "Ammonia-loss": ("UNIMOD:385", "-17.027"),
}
_BY_MASS = {mass: name for name, (_, mass) in UNIMOD.items()}
_BY_ACCESSION = {acc: name for name, (acc, _) in UNIMOD.items()}
_MASS_MODS = re.compile(r"[+-]\d*\.?\d+")


def _version() -> str:
    try:
        return importlib.metadata.version("zoo")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


DEFAULT_SOFTWARE = f"[MS, MS:1001456, analysis software, zoo {_version()}]"


@dataclasses.dataclass
class Psm:
    """One peptide-spectrum match.

    peptide: tokens in the residue table's notation, or a string in Casanovo or ProForma
        notation (parsed with the writer's residues). '' means no prediction (not written).
    score: peptide score. aa_scores: one per token, an N-terminal modification included.
    precursor_charge, precursor_mz: of the spectrum (exp_mass_to_charge).
    spectrum_file: the peak file (path or name; matched by name to the ms_run entries).
    spectrum_index: 0-based record index in that file (MGF: count of BEGIN IONS before it).
    calc_mz: the peptide's m/z at precursor_charge; None -> computed from the residue masses.
    scan: the spectrum's scan number (MGF SCANS) for the scan-number column; '' if none.
    spectrum_ref: what follows `ms_run[i]:` in spectra_ref (an mzML native id such as
        `controllerType=0 controllerNumber=1 scan=17`); '' -> `index=<spectrum_index>`.
    """

    peptide: str | Sequence[str]
    score: float
    aa_scores: Sequence[float]
    precursor_charge: int
    precursor_mz: float
    spectrum_file: str
    spectrum_index: int
    calc_mz: float | None = None
    scan: str = ""
    spectrum_ref: str = ""
    confidence: float | None = None  # calibrated P(correct) (zoo.peptide.calibration)


def _natural_key(text: str) -> tuple:
    """natsort's default key: digit runs compare as integers."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _token_parts(token: str, residues: Residues) -> tuple[str, list[str]]:
    """token -> (site, modifications) with site a letter or "" (N-terminal) and modifications
    as ProForma bracket contents: `C+57.021` -> ("C", ["Carbamidomethyl"]);
    `+43.006-17.027` -> ("", ["+25.980265"]) (Casanovo's ProForma alias for that token)."""
    proforma = _proforma_token(token, residues)
    site = "" if proforma.startswith("[") else proforma[0]
    return site, re.findall(r"\[([^\]]+)\]", proforma)


def _proforma_token(token: str, residues: Residues) -> str:
    """ProForma spelling of one token: the residue table's first named alias (as Casanovo 5
    writes), else the mass notation in brackets (`K+42.011` -> `K[+42.011]`)."""
    for alias, target in residues.aliases.items():
        if target == token and "UNIMOD" not in alias and "][" not in alias:
            return alias
    if token[0] in "+-":
        return f"[{token}]-"
    if len(token) > 1 and token[1] in "+-":
        return token[0] + "".join(f"[{m}]" for m in _MASS_MODS.findall(token[1:]))
    return token


def _mod_string(position: int, site: str, mod: str, delta: float) -> str:
    """One entry of the modifications column, as Casanovo's PepSpecMatch._get_mod_string."""
    name = _BY_ACCESSION.get(mod, _BY_MASS.get(mod, mod))
    if name in UNIMOD:
        return f"{position}-{name} ({site or 'N-term'}):{UNIMOD[name][0]}"
    try:
        delta = float(mod)
    except ValueError:
        pass  # an unknown name: report its mass from the residue table
    return f"{position}-[{delta:+.4f}]"


def _token_table(residues: Residues) -> dict[str, tuple[str, str, list[str]]]:
    """token -> (ProForma spelling, site, modification names), computed once per file."""
    table = {}
    for token in residues.masses:
        site, names = _token_parts(token, residues)
        table[token] = (_proforma_token(token, residues), site, names)
    return table


def psm_columns(
    tokens: Sequence[str],
    residues: Residues,
    table: Mapping[str, tuple[str, str, list[str]]] | None = None,
) -> tuple[str, str, str]:
    """(sequence, modifications, ProForma) of a peptide's tokens; `table`: `_token_table`."""
    table = table if table is not None else _token_table(residues)
    letters, mods, proforma = [], [], []
    for token in tokens:
        spelling, site, names = table[token]
        proforma.append(spelling)
        if site:
            letters.append(site)
        base = residues.masses.get(site, 0.0) if site else 0.0
        for name in names:
            delta = (residues.masses[token] - base) / len(names)
            mods.append(_mod_string(len(letters) if site else 0, site, name, delta))
    return "".join(letters), "; ".join(mods) if mods else "null", "".join(proforma)


def residue_scores(tokens: Sequence[str], aa_scores: Sequence[float]) -> list[float]:
    """Per-residue scores: an N-terminal modification's (a first token in mass or ProForma
    notation, `+42.011` / `[Acetyl]-`) multiplied into the next one's, in the scores' own
    dtype, as Casanovo does on its float32 arrays."""
    scores = np.asarray(aa_scores)
    if len(scores) != len(tokens):
        raise ValueError(
            f"{len(scores)} aa_scores for {len(tokens)} tokens {list(tokens)}; give one score "
            f"per token, the N-terminal modification included"
        )
    if len(scores) >= 2 and tokens[0][0] in "+-[":  # an N-terminal modification
        scores = scores[1:].copy()
        scores[0] = scores[0] * np.asarray(aa_scores)[0]
    return scores.tolist()


def modification_metadata(residues: Residues) -> list[tuple[str, str]]:
    """fixed_mod / variable_mod MTD lines from the residue table, by Casanovo's rule.

    Each token gives (site, modification) by Casanovo's regex (`C+57.021` -> C, +57.021;
    `+43.006-17.027` -> N-term, +43.006: only the first modification counts); a site with
    several entries has variable modifications, a site with one modified entry only a fixed
    one. ProForma-named tokens (`C[Carbamidomethyl]`) are read by name.
    """
    known = {mass: f"[UNIMOD, {acc}, {name}, ]" for name, (acc, mass) in UNIMOD.items()}
    by_site: dict[str, list[str | None]] = {}
    for token in residues.tokens:
        m = re.match(r"([A-Z]?)([+-]?(?:[0-9]*[.])?[0-9]+)", token)
        if m:
            site, mod = m[1], m[2]
        else:
            site, names = _token_parts(token, residues)
            mod = (UNIMOD[names[0]][1] if names[0] in UNIMOD else names[0]) if names else None
            site = site if names else token
        entry = by_site.setdefault(site, [])
        if mod not in entry:
            entry.append(mod)
    fixed, variable = [], []
    for site, mods in by_site.items():
        if len(mods) > 1:
            variable.extend((site, mod) for mod in mods if mod is not None)
        elif None not in mods:
            fixed.append((site, mods[0]))
    lines: list[tuple[str, str]] = []
    for kind, mods, none in (
        ("fixed_mod", fixed, "[MS, MS:1002453, No fixed modifications searched, ]"),
        ("variable_mod", variable, "[MS, MS:1002454, No variable modifications searched,]"),
    ):
        if not mods:
            lines.append((f"{kind}[1]", none))
        for i, (site, mod) in enumerate(mods, 1):
            lines.append((f"{kind}[{i}]", known.get(mod, f"[CHEMMOD, CHEMMOD:{mod}, , ]")))
            lines.append((f"{kind}[{i}]-site", site or "N-term"))
    return lines


PSH = (
    "sequence",
    "PSM_ID",
    "accession",
    "unique",
    "database",
    "database_version",
    "search_engine",
    "search_engine_score[1]",
    "modifications",
    "retention_time",
    "charge",
    "exp_mass_to_charge",
    "calc_mass_to_charge",
    "spectra_ref",
    "pre",
    "post",
    "start",
    "end",
    "opt_global_aa_scores",
    "opt_global_cv_MS:1003169_proforma_peptidoform_sequence",
)
SCAN_COLUMN = "opt_global_cv_MS:1003057_scan_number"
CONFIDENCE_COLUMN = "opt_global_zoo_confidence"  # calibrated P(peptide correct)


def write_mztab(
    path: str | os.PathLike,
    psms: Iterable[Psm],
    *,
    metadata: Mapping[str, Any] | None = None,
    residues: Residues = CASANOVO,
    ms_runs: Sequence[str | os.PathLike] | None = None,
    software: str = DEFAULT_SOFTWARE,
    description: str | None = None,
) -> int:
    """Writes PSMs as Casanovo 5.2.1's mzTab; returns the number of PSM rows.

    metadata: settings written as `software[1]-setting[i]  key = value` lines (model, config,
        decoding mode, beam, ...). residues: the table peptides are parsed and written with;
        it also gives the fixed/variable modification lines. ms_runs: the peak files searched
        (default: the PSMs' files), numbered in natural order of their paths. software: the
        CV term in software[1] and each row's search_engine; description: the MTD description
        (default "zoo identification file <file stem>").
    Raises ValueError naming the PSM when its peptide does not parse, its scores do not match
    its tokens, or its file is not among ms_runs.
    """
    path = Path(path)
    rows = [p for p in psms if (p.peptide if isinstance(p.peptide, str) else list(p.peptide))]
    if ms_runs is None:
        ms_runs = sorted({p.spectrum_file for p in rows}, key=_natural_key)
    runs = sorted((os.path.abspath(os.fspath(r)) for r in ms_runs), key=_natural_key)
    # A PSM's file is matched by its full path, or by its name when one run has that name
    # (two inputs a/run.mgf and b/run.mgf are two ms_runs).
    run_index = {r: i for i, r in enumerate(runs, 1)}
    by_name: dict[str, list[int]] = {}
    for r, i in run_index.items():
        by_name.setdefault(Path(r).name, []).append(i)

    def run_of(p: Psm, where: str) -> int:
        full = os.path.abspath(os.fspath(p.spectrum_file))
        if full in run_index:
            return run_index[full]
        named = by_name.get(Path(p.spectrum_file).name, [])
        if len(named) == 1:
            return named[0]
        names = sorted(by_name)
        if named:
            raise ValueError(f"{where}: {len(named)} ms_runs are named so; give its full path")
        raise ValueError(f"{where}: file not among ms_runs {names}")

    mtd: list[tuple[str, str]] = [
        ("mzTab-version", "1.0.0"),
        ("mzTab-mode", "Summary"),
        ("mzTab-type", "Identification"),
        ("description", description or f"zoo identification file {path.stem}"),
        ("software[1]", software),
        ("psm_search_engine_score[1]", "[MS, MS:1001143, search engine specific score for PSMs, ]"),
        *modification_metadata(residues),
    ]
    for i, (key, value) in enumerate((metadata or {}).items(), 1):
        mtd.append((f"software[1]-setting[{i}]", f"{key} = {value}"))
    for i, run in enumerate(runs, 1):
        mtd.append((f"ms_run[{i}]-location", Path(run).as_uri()))

    def sort_key(p: Psm) -> tuple:
        name = Path(p.spectrum_file).name
        run = run_of(p, f"PSM of {name} index={p.spectrum_index}")
        return (_natural_key(name), run, _natural_key(f"index={p.spectrum_index}"))

    rows.sort(key=sort_key)  # stable: PSMs of one spectrum keep their order
    table = _token_table(residues)
    with_scans = any(
        str(p.scan).isnumeric() and Path(p.spectrum_file).suffix.lower() == ".mgf" for p in rows
    )
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator=os.linesep)
        for key, value in mtd:
            writer.writerow(["MTD", key, value])
        with_confidence = any(p.confidence is not None for p in rows)
        extra = [SCAN_COLUMN] if with_scans else []
        extra += [CONFIDENCE_COLUMN] if with_confidence else []
        writer.writerow(["PSH", *PSH, *extra])
        for psm_id, p in enumerate(rows, 1):
            name = Path(p.spectrum_file).name
            where = f"PSM of {name} index={p.spectrum_index}"
            run = run_of(p, where)
            tokens = (
                residues.parse(p.peptide, where=where)
                if isinstance(p.peptide, str)
                else list(p.peptide)
            )
            unknown = [t for t in tokens if t not in residues.masses]
            if unknown:
                raise ValueError(f"{where}: tokens {unknown} are not in the residue table")
            sequence, modifications, proforma = psm_columns(tokens, residues, table)
            calc_mz = p.calc_mz
            if calc_mz is None:
                calc_mz = precursor_mz(residues.peptide_mass(tokens), int(p.precursor_charge))
            row = [
                "PSM",
                sequence,
                psm_id,
                "null",
                "null",
                "null",
                "null",
                software,
                float(p.score),
                modifications,
                "null",
                int(p.precursor_charge),
                float(p.precursor_mz),
                float(calc_mz),
                f"ms_run[{run}]:{p.spectrum_ref or f'index={int(p.spectrum_index)}'}",
                "null",
                "null",
                "null",
                "null",
                ",".join(f"{s:.5f}" for s in residue_scores(tokens, p.aa_scores)),
                proforma,
            ]
            if with_scans:
                scan = str(p.scan)
                ok = scan.isnumeric() and name.lower().endswith(".mgf")
                row.append(f"ms_run[{run}]:scan={scan}" if ok else "null")
            if with_confidence:
                row.append("null" if p.confidence is None else f"{p.confidence:.6f}")
            writer.writerow(row)
    return len(rows)


def read_mztab(path: str | os.PathLike) -> list[dict[str, str]]:
    """The PSM rows of an mzTab file (Casanovo's or ours): one dict per row, keyed by the PSH
    header, values as written (strings; "null" kept)."""
    header: list[str] | None = None
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row:
                continue
            if row[0] == "PSH":
                header = row[1:]
            elif row[0] == "PSM":
                if header is None:
                    raise ValueError(f"{path}: line {line_no}: PSM row before the PSH header")
                if len(row) - 1 != len(header):
                    raise ValueError(
                        f"{path}: line {line_no}: {len(row) - 1} PSM fields for "
                        f"{len(header)} PSH columns"
                    )
                out.append(dict(zip(header, row[1:])))
    return out


def read_mztab_metadata(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The MTD lines of an mzTab file as (key, value) pairs, in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        return [(r[1], r[2]) for r in csv.reader(f, delimiter="\t") if r and r[0] == "MTD"]
