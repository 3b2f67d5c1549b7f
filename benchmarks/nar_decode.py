"""Host-side NAR decoding speed: per-spectrum reference vs batched CTC beam search and mass
control, on random NAR log-probabilities of realistic size (no model).

    nice -n 10 .venv/bin/python benchmarks/nar_decode.py --batch 64 --pmc-spectra 32

"flat": N(0, 1) logits with the blank bias that gives greedy peptides of median length 12
(a random-weight model's outputs, the mass control's worst case); "peaky": a planted
peptide path per spectrum, boosted by 4 x U(0.3, 1.5) nats per slot (a trained model's).
Precursors: the masses of random 7-19-residue peptides (flat) or of the planted ones.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from zoo.peptide import ctc
from zoo.peptide import mass_control as pmc
from zoo.peptide.mass_control_batch import ctc_decode_with_mass_batch

MASSES, NTERM = ctc.ctc_mass_table()


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def nar_outputs(kind: str, B: int, T: int = 40, seed: int = 0):
    """([B, T, C] log-probs, [B] neutral precursor masses)."""
    rng = np.random.default_rng(seed)
    C = len(MASSES)
    peptides = [rng.integers(1, 21, size=int(rng.integers(7, 20))) for _ in range(B)]
    mass = np.array([pmc.peptide_mass(p.tolist(), MASSES) for p in peptides])
    logits = rng.normal(size=(B, T, C))
    if kind == "flat":
        lo, hi = -10.0, 10.0
        for _ in range(30):  # blank bias bisection: median greedy length 12
            mid = (lo + hi) / 2
            paths = (logits + np.eye(C)[0] * mid).argmax(-1)
            median = np.median([len(ctc.collapse(p)) for p in paths])
            lo, hi = (mid, hi) if median > 12 else (lo, mid)
        logits[..., 0] += (lo + hi) / 2
    else:
        for b, p in enumerate(peptides):
            path = np.zeros(T, int)
            path[np.sort(rng.choice(T, size=len(p), replace=False))] = p
            logits[b, np.arange(T), path] += 4.0 * rng.uniform(0.3, 1.5, size=T)
        mass = mass + rng.normal(0, 0.02, size=B)
    return log_softmax(logits), mass


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pmc-spectra", type=int, default=32)
    ap.add_argument("--beam", type=int, default=5)
    args = ap.parse_args()
    for kind in ("flat", "peaky"):
        lp, mass = nar_outputs(kind, args.batch)
        ctc.ctc_beam_search(lp[:2], args.beam)  # warm-up
        old = rate(lambda lp=lp: ctc.ctc_beam_search_reference(lp, args.beam), len(lp))
        new = rate(lambda lp=lp: ctc.ctc_beam_search(lp, args.beam), len(lp))
        top1 = rate(lambda lp=lp: ctc.ctc_beam_search(lp, args.beam, top_k=1), len(lp))
        print(
            f"{kind:5s} CTC beam {args.beam}: reference {old:7.1f} spectra/s, batched "
            f"{new:7.1f} ({new / old:.1f}x), top_k=1 {top1:7.1f} ({top1 / old:.1f}x)",
            flush=True,
        )
        n = args.pmc_spectra
        lp, mass = lp[:n], mass[:n]

        def reference(lp=lp, mass=mass):
            for x, m in zip(lp, mass):
                top = ctc.ctc_beam_search_reference(x, args.beam)[0]
                if not pmc.fits_precursor(top.tokens, MASSES, m):
                    pmc.ctc_mass_control(x, MASSES, m, nterm=NTERM)

        stats: dict = {}
        old = rate(reference, n)
        new = rate(
            lambda lp=lp, mass=mass, stats=stats: ctc_decode_with_mass_batch(
                lp, MASSES, mass, nterm=NTERM, stats=stats
            ),
            n,
        )
        print(
            f"{kind:5s} CTC beam {args.beam} + mass control: reference {old:6.2f} spectra/s, "
            f"batched {new:6.2f} ({new / old:.1f}x); {stats}",
            flush=True,
        )


if __name__ == "__main__":
    main()
