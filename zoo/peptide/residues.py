"""Amino-acid residues, their masses, and peptide notation (Casanovo and ProForma).

One `Residues` object is the vocabulary of a peptide model: the residue tokens in
model order, their monoisotopic masses, and which of them are N-terminal
modifications. The default is Casanovo's 27 tokens (fixed carbamidomethyl
cysteine; variable oxidation, deamidation and four N-terminal modifications),
written in Casanovo's mass notation (`C+57.021`, `+42.011`). ProForma names
(`C[Carbamidomethyl]`, `[Acetyl]-`), as Casanovo >= 4.2 writes them, parse to
the same tokens.

Masses in Da. Peptide sequences are N- to C-terminal lists of tokens; an
N-terminal modification, when present, is the first token.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence

H2O = 18.0105647
PROTON = 1.00727646688  # CODATA proton mass (Da): every m/z <-> mass conversion in zoo
# The proton mass Casanovo's models subtract (float32) to make their precursor-mass input;
# zoo feeds converted Casanovo models the same rounded value (zoo.peptide.features).
CASANOVO_PROTON = 1.007276
CYSTEINE = 103.00918478  # unmodified C (monoisotopic): Casanovo's vocabulary has only C+57.021
C13_SHIFT = 1.00335  # 13C - 12C, the isotope spacing Casanovo's precursor filter uses

# Casanovo's residue table (configurable: pass another mapping to Residues).
CASANOVO_MASSES: dict[str, float] = {
    "G": 57.021464,
    "A": 71.037114,
    "S": 87.032028,
    "P": 97.052764,
    "V": 99.068414,
    "T": 101.047670,
    "C+57.021": 160.030649,  # carbamidomethyl cysteine (fixed modification)
    "L": 113.084064,
    "I": 113.084064,
    "N": 114.042927,
    "D": 115.026943,
    "Q": 128.058578,
    "K": 128.094963,
    "E": 129.042593,
    "M": 131.040485,
    "H": 137.058912,
    "F": 147.068414,
    "R": 156.101111,
    "Y": 163.063329,
    "W": 186.079313,
    "M+15.995": 147.035400,  # oxidation
    "N+0.984": 115.026943,  # deamidation
    "Q+0.984": 129.042594,  # deamidation
    "+42.011": 42.010565,  # N-terminal acetylation
    "+43.006": 43.005814,  # N-terminal carbamylation
    "-17.027": -17.026549,  # N-terminal ammonia loss
    # Carbamylation + ammonia loss. Casanovo's value, 1 mDa above the true sum
    # (25.979265): inherited from depthcharge 0.2.3's 43.006814 typo. Kept so that
    # scores and masses agree with Casanovo's.
    "+43.006-17.027": 25.980265,
}

# ProForma spellings Casanovo >= 4.2 uses, mapped to the mass notation above.
PROFORMA_ALIASES: dict[str, str] = {
    "C[Carbamidomethyl]": "C+57.021",
    "C[UNIMOD:4]": "C+57.021",
    "M[Oxidation]": "M+15.995",
    "M[UNIMOD:35]": "M+15.995",
    "N[Deamidated]": "N+0.984",
    "N[UNIMOD:7]": "N+0.984",
    "Q[Deamidated]": "Q+0.984",
    "Q[UNIMOD:7]": "Q+0.984",
    "[Acetyl]-": "+42.011",
    "[UNIMOD:1]-": "+42.011",
    "[Carbamyl]-": "+43.006",
    "[UNIMOD:5]-": "+43.006",
    "[Ammonia-loss]-": "-17.027",
    "[UNIMOD:385]-": "-17.027",
    "[+25.980265]-": "+43.006-17.027",
    "[Carbamyl][Ammonia-loss]-": "+43.006-17.027",
}

# One residue: a capital letter with optional mass/bracket modifications, or a
# leading N-terminal modification in either notation.
_NTERM = re.compile(r"^(\[[^\]]+\](?:\[[^\]]+\])*-|[+-]\d+(?:\.\d+)?(?:[+-]\d+(?:\.\d+)?)*)")
_RESIDUE = re.compile(r"[A-Z](?:\[[^\]]+\]|[+-]\d+(?:\.\d+)?)*")


class PeptideParseError(ValueError):
    """A peptide string with a residue or modification the vocabulary does not know."""


@dataclasses.dataclass(frozen=True)
class Residues:
    """A residue vocabulary: tokens in model order, masses, N-terminal modifications.

    `tokens[i]` is model class i + 1 (the model's class ids, pad / blank / stop included,
    are `zoo.peptide.model.TokenLayout`). `nterm` is the subset of tokens that may only
    appear first.
    """

    masses: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(CASANOVO_MASSES))
    aliases: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(PROFORMA_ALIASES))
    # Tokens that are one residue for matching purposes but written differently
    # (I and L have equal mass; models predict L).
    replace_isoleucine: bool = False

    @functools.cached_property
    def tokens(self) -> tuple[str, ...]:
        return tuple(t for t in self.masses if not (self.replace_isoleucine and t == "I"))

    @functools.cached_property
    def nterm(self) -> frozenset[str]:
        return frozenset(t for t in self.masses if t[0] in "+-")

    def mass(self, token: str) -> float:
        return self.masses[token]

    # --- notation ---------------------------------------------------------------
    def canonical(self, token: str) -> str:
        token = self.aliases.get(token, token)
        if self.replace_isoleucine and token.startswith("I"):
            token = "L" + token[1:]
        return token

    def parse(self, peptide: str, *, where: str = "") -> list[str]:
        """Tokens of a peptide in Casanovo (`+42.011PEPC+57.021K`) or ProForma notation
        (`[Acetyl]-PEPC[Carbamidomethyl]K`). I becomes L when `replace_isoleucine`.

        Raises PeptideParseError naming `where` (e.g. file and spectrum) on an unknown
        residue or modification.
        """
        s = peptide.strip()
        tokens: list[str] = []
        m = _NTERM.match(s)
        if m:
            tokens.append(m.group(1))
            s = s[m.end() :]
        pos = 0
        for r in _RESIDUE.finditer(s):
            if r.start() != pos:
                break
            tokens.append(r.group(0))
            pos = r.end()
        if pos != len(s):
            raise PeptideParseError(
                f"{where + ': ' if where else ''}cannot read peptide {peptide!r} at "
                f"{s[pos : pos + 12]!r}: expected a residue letter A-Z with optional "
                f"modification"
            )
        out = []
        for t in tokens:
            c = self.canonical(t)
            if c not in self.masses:
                known = ", ".join(sorted(self.masses))
                raise PeptideParseError(
                    f"{where + ': ' if where else ''}peptide {peptide!r} has residue {t!r} "
                    f"that the vocabulary does not know (known: {known}); add its mass to "
                    f"the residue table or drop the spectrum"
                )
            out.append(c)
        for i, t in enumerate(out[1:], 1):
            if t in self.nterm:
                raise PeptideParseError(
                    f"{where + ': ' if where else ''}peptide {peptide!r}: N-terminal "
                    f"modification {t!r} at position {i}; it may only come first"
                )
        return out

    def to_string(self, tokens: Sequence[str]) -> str:
        """Casanovo notation: the tokens concatenated."""
        return "".join(tokens)

    def to_proforma(self, tokens: Sequence[str], *, mass_deltas: bool = False) -> str:
        """ProForma of `tokens`: modifications by name (`M[Oxidation]`), or with
        `mass_deltas` as masses (`M[+15.994915]`, `[+42.010565]-`), which readers such as
        spectrum_utils resolve without fetching the Unimod vocabulary from the network."""
        if mass_deltas:
            out = []
            for t in tokens:
                if t in self.nterm:
                    out.append(f"[{self.masses[t]:+.6f}]-")
                elif len(t) > 1 and t[0].isalpha():
                    base = self.masses.get(t[0], CYSTEINE if t[0] == "C" else None)
                    if base is None:
                        raise ValueError(f"no unmodified mass for {t[0]!r} (token {t!r})")
                    out.append(f"{t[0]}[{self.masses[t] - base:+.6f}]")
                else:
                    out.append(t)
            return "".join(out)
        back = {}
        for alias, t in self.aliases.items():
            if "UNIMOD" not in alias and "][" not in alias:
                back.setdefault(t, alias)
        return "".join(back.get(t, t) for t in tokens)

    # --- masses -----------------------------------------------------------------
    def peptide_mass(self, tokens: Sequence[str] | str) -> float:
        """Neutral monoisotopic mass: residues + water."""
        if isinstance(tokens, str):
            tokens = self.parse(tokens)
        return sum(self.masses[t] for t in tokens) + H2O


def precursor_mz(neutral_mass: float, charge: int) -> float:
    """m/z of the [M + zH]^z+ ion."""
    return (neutral_mass + charge * PROTON) / charge


def neutral_mass(mz: float, charge: int) -> float:
    """Neutral mass M from the observed precursor m/z and charge."""
    return (mz - PROTON) * charge


def ppm_error(calc_mz: float, obs_mz: float, charge: int, isotope: int = 0) -> float:
    """Casanovo's ppm error of a calculated m/z against an observed precursor, allowing
    the observed peak to be the `isotope`-th 13C isotope."""
    return (calc_mz - (obs_mz - isotope * C13_SHIFT / charge)) / obs_mz * 1e6


CASANOVO = Residues()
