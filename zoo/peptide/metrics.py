"""Peptide-level de novo sequencing metrics, exactly as Casanovo 5.2.1 computes them.

Casanovo (`casanovo/denovo/evaluate.py`) pairs up the residues of a true and a predicted
peptide by mass, the criterion DeepNovo introduced:

* **Prefix pass.** Walk both peptides from the N-terminus with cumulative masses. When the two
  cumulative masses (each including the current residue) agree within 0.5 Da, the residues
  are paired: position `max(i1, i2)` is a match when their own masses agree within 0.1 Da,
  and both walks advance. Otherwise the walk with the lighter cumulative mass advances
  alone (so GG can pair against N, and AG against Q, without counting as matches).
* **Suffix pass.** Unless every position already matched, repeat from the C-terminus with
  fresh cumulative masses, stopping at the first position the prefix pass left unmatched.
  Flags are indexed from the N-terminus in both passes (`max(i1, i2)`), as Casanovo does.
* **Counting.** Each pair gives a boolean array of length max(len(true), len(pred)); the
  peptide matches when all of it is True. AA precision = matched / predicted residues,
  AA recall = matched / true residues, peptide recall = matched peptides / spectra. Each
  denominator carries Casanovo's `+ 1e-8`.

Peptide strings in Casanovo's mass notation (`+42.011PEPC+57.021K`) are split before every
capital letter (Casanovo's regex `(?<=.)(?=[A-Z])`); a token missing from the mass table
weighs 0 Da. Casanovo passes its tokenizer's residue table, so the masses here are
`residues.masses` (the same values in mass notation).

Missing predictions: Casanovo's `log_metrics` marks a spectrum without a prediction as `None`
(no predicted residues, a miss). `evaluate` maps "" to `None` the same way. The low-level
`aa_match_batch` keeps Casanovo's literal behaviour for "" (the regex yields one empty token
of mass 0, counted as one predicted residue), so that it equals Casanovo's function on any
input.

Casanovo's argument order is (true, predicted). PrimeNovo calls it (predicted, true), which
swaps its precision and recall; compare published numbers with that in mind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from zoo.peptide.residues import CASANOVO, Residues

CUM_MASS_THRESHOLD = 0.5  # Da, cumulative masses that pair two residues
IND_MASS_THRESHOLD = 0.1  # Da, residue masses that make a paired position a match

_SPLIT = re.compile(r"(?<=.)(?=[A-Z])")

Peptide = Sequence[str] | str | None
Match = tuple[np.ndarray, bool]


def split_peptide(peptide: str) -> list[str]:
    """Casanovo's token split: before every capital letter that is not the first character.

    `"+42.011PEPC+57.021K"` -> `["+42.011", "P", "E", "P", "C+57.021", "K"]`; `""` -> `[""]`.
    """
    return _SPLIT.split(peptide)


def _walk(
    tokens1: Sequence[str],
    tokens2: Sequence[str],
    positions1: range,
    positions2: range,
    masses: Mapping[str, float],
    matches: np.ndarray,
    cum_threshold: float,
    ind_threshold: float,
) -> None:
    """One mass-pairing walk, in place on `matches`, visiting `positions1` of tokens1 and
    `positions2` of tokens2 in order (ascending for the prefix pass, descending for the
    suffix pass) until either runs out."""
    j1 = j2 = 0
    cum1 = cum2 = 0.0
    while j1 < len(positions1) and j2 < len(positions2):
        i1, i2 = positions1[j1], positions2[j2]
        m1 = masses.get(tokens1[i1], 0)
        m2 = masses.get(tokens2[i2], 0)
        if abs((cum1 + m1) - (cum2 + m2)) < cum_threshold:
            matches[max(i1, i2)] = abs(m1 - m2) < ind_threshold
            j1, j2 = j1 + 1, j2 + 1
            cum1, cum2 = cum1 + m1, cum2 + m2
        elif cum2 + m2 > cum1 + m1:  # peptide1 is lighter so far: it alone advances
            j1, cum1 = j1 + 1, cum1 + m1
        else:
            j2, cum2 = j2 + 1, cum2 + m2


def aa_match(
    peptide1: Sequence[str] | None,
    peptide2: Sequence[str] | None,
    masses: Mapping[str, float],
    cum_mass_threshold: float = CUM_MASS_THRESHOLD,
    ind_mass_threshold: float = IND_MASS_THRESHOLD,
    mode: str = "best",
) -> Match:
    """Paired-up residue matches of two tokenized peptides (Casanovo's `aa_match`).

    peptide1, peptide2: token lists, or None for a missing peptide.
    masses: token -> mass in Da; absent tokens weigh 0.
    mode: "best" (prefix then suffix pass), "forward" (prefix pass only) or "backward"
        (prefix pass over the reversed peptides, flags reversed back).
    Returns (flags: [max(len1, len2)] bool, peptide_match: bool). Two missing peptides give
    (empty, False); one missing gives all-False flags as long as the other.
    """
    if peptide1 is None and peptide2 is None:
        return np.zeros(0, dtype=bool), False
    if peptide1 is None or peptide2 is None:
        other = peptide1 if peptide2 is None else peptide2
        return np.zeros(len(other), dtype=bool), False
    if mode not in ("best", "forward", "backward"):
        raise ValueError(f"aa_match mode {mode!r}: expected 'best', 'forward' or 'backward'")
    thresholds = (cum_mass_threshold, ind_mass_threshold)
    if mode == "backward":
        peptide1, peptide2 = list(reversed(peptide1)), list(reversed(peptide2))
    matches = np.zeros(max(len(peptide1), len(peptide2)), dtype=bool)
    n1, n2 = len(peptide1), len(peptide2)
    _walk(peptide1, peptide2, range(n1), range(n2), masses, matches, *thresholds)
    if mode == "backward":
        return matches[::-1], bool(matches.all())
    if mode == "forward" or matches.all():
        return matches, bool(matches.all())
    # The suffix pass stops at the first position the prefix pass left unmatched.
    stop = int(np.flatnonzero(~matches)[0])
    suffix1, suffix2 = range(n1 - 1, stop - 1, -1), range(n2 - 1, stop - 1, -1)
    _walk(peptide1, peptide2, suffix1, suffix2, masses, matches, *thresholds)
    return matches, bool(matches.all())


def aa_match_batch(
    peptides1: Sequence[Peptide],
    peptides2: Sequence[Peptide],
    masses: Mapping[str, float],
    cum_mass_threshold: float = CUM_MASS_THRESHOLD,
    ind_mass_threshold: float = IND_MASS_THRESHOLD,
    mode: str = "best",
) -> tuple[list[Match], int, int]:
    """`aa_match` over pairs (Casanovo's `aa_match_batch`): strings are split with
    `split_peptide`, token lists are used as they are, None is a missing peptide.

    Returns (per-pair (flags, peptide_match), residues in peptides1, residues in peptides2).
    """
    results, n1, n2 = [], 0, 0
    for p1, p2 in zip(peptides1, peptides2, strict=True):
        p1 = split_peptide(p1) if isinstance(p1, str) else p1
        p2 = split_peptide(p2) if isinstance(p2, str) else p2
        n1 += 0 if p1 is None else len(p1)
        n2 += 0 if p2 is None else len(p2)
        results.append(aa_match(p1, p2, masses, cum_mass_threshold, ind_mass_threshold, mode))
    return results, n1, n2


def aa_match_metrics(
    matches: Sequence[Match], n_aa_true: int, n_aa_pred: int
) -> tuple[float, float, float]:
    """(aa_precision, aa_recall, peptide_recall) from `aa_match_batch`'s output (Casanovo's
    `aa_match_metrics`, which calls the last one `pep_precision`)."""
    n_correct = sum(int(flags.sum()) for flags, _ in matches)
    n_peptides = sum(int(pep) for _, pep in matches)
    return (
        n_correct / (n_aa_pred + 1e-8),
        n_correct / (n_aa_true + 1e-8),
        n_peptides / (len(matches) + 1e-8),
    )


def _tokens(peptide: Peptide, residues: Residues, where: str) -> Sequence[str] | None:
    """Casanovo notation is split by Casanovo's regex; ProForma (with brackets, which the
    regex would cut inside `[Carbamidomethyl]`) is parsed by `residues`."""
    if peptide is None or isinstance(peptide, str) and not peptide.strip():
        return None
    if isinstance(peptide, str):
        return residues.parse(peptide, where=where) if "[" in peptide else split_peptide(peptide)
    return list(peptide)


def evaluate(
    true_peptides: Sequence[Peptide],
    predicted_peptides: Sequence[Peptide],
    *,
    residues: Residues = CASANOVO,
) -> dict[str, float]:
    """{"aa_precision", "aa_recall", "peptide_recall"} of predictions against the truth,
    as Casanovo's `aa_match_metrics(*aa_match_batch(true, predicted, residue_masses))`.

    true_peptides, predicted_peptides: one per spectrum, in Casanovo's mass notation
        (`+42.011PEPC+57.021K`), ProForma, or as token lists. A prediction of None or ""
        is a spectrum without a prediction: it adds no predicted residues and is a miss.
    residues: the residue table whose masses pair residues up (tokens absent from it weigh
        0 Da, as in Casanovo).
    """
    if len(true_peptides) != len(predicted_peptides):
        raise ValueError(
            f"evaluate: {len(true_peptides)} true peptides but {len(predicted_peptides)} "
            f"predictions; pass one prediction per spectrum (None where there is none)"
        )
    if not true_peptides:
        raise ValueError("evaluate: no spectra; metrics of an empty test set are undefined")
    true = [_tokens(p, residues, f"true peptide {i}") for i, p in enumerate(true_peptides)]
    for i, tokens in enumerate(true):
        if tokens is None:
            raise ValueError(
                f"evaluate: true peptide {i} is empty ({true_peptides[i]!r}); every spectrum "
                f"needs its annotation: drop unannotated spectra before evaluating"
            )
    pred = [
        _tokens(p, residues, f"predicted peptide {i}") for i, p in enumerate(predicted_peptides)
    ]
    aa_precision, aa_recall, peptide_recall = aa_match_metrics(
        *aa_match_batch(true, pred, residues.masses)
    )
    return {
        "aa_precision": aa_precision,
        "aa_recall": aa_recall,
        "peptide_recall": peptide_recall,
    }


def peptide_matches(
    true_peptides: Sequence[Peptide],
    predicted_peptides: Sequence[Peptide],
    *,
    residues: Residues = CASANOVO,
) -> np.ndarray:
    """[n] bool: spectrum i's prediction is its peptide (Casanovo's peptide-level match, the
    one `evaluate`'s peptide_recall counts); a missing prediction is False."""
    true = [_tokens(p, residues, f"true peptide {i}") for i, p in enumerate(true_peptides)]
    pred = [
        _tokens(p, residues, f"predicted peptide {i}") for i, p in enumerate(predicted_peptides)
    ]
    matches, _, _ = aa_match_batch(true, pred, residues.masses)
    return np.array([bool(pep) for _, pep in matches], dtype=bool)
