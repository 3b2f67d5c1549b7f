"""De novo peptide sequencing on simulated spectra: AR vs NAR vs the hybrid, on this CPU.

Variants: tiny (tests: seconds), demo (this CPU). The data are simulated spectra of
random tryptic-like peptides with the residue frequencies of the mouse proteins shipped
with zoo (a pool too large to memorise: almost every spectrum is a new peptide), split so
that no test peptide was seen in training; a second test set holds spectra of the real
mouse digest's test peptides (zoo.peptide.simulated_tfds, pool="random").

Run as a script, this file is the last part of `make demo`: it trains an AR-only
(Casanovo-like), a NAR-only (PrimeNovo-like) and a hybrid (CrossNovo: joint stage with
importance annealing, then the AR decoder alone with the encoder and NAR decoder frozen)
model for equal training time (`--seconds` of training steps each, the hybrid's two
stages together; `train.max_seconds`). It reports AA precision / peptide recall on the
test split for AR beam search, NAR CTC beam search with and without precise mass
control, and the hybrid; writes the hybrid's predictions as mzTab and a PNG of one
spectrum annotated with its b/y ions; and ends with results.json (`summary`: ar / nar /
nar_pmc / hybrid on the peptide-disjoint test), learning_curves.png (the four training
runs) and summary.png.

  python recipes/denovo_demo.py --workdir runs/denovo_demo
  python recipes/denovo_demo.py --workdir runs/denovo_demo --seconds 150 --ablation
      # also: hybrid variants (stage 2 unfrozen, longer stage 2, no annealing, twice the
      # time) that measure why the hybrid trails AR

  zoo train --config recipes/denovo_demo.py:demo --workdir runs/ar --config.model.mode=ar
  zoo train --config recipes/denovo_demo.py:demo --workdir runs/h1                 # hybrid
  zoo train --config recipes/denovo_demo.py:demo --workdir runs/h2 \\
      --config.task.stage=ar --config.train.init_from=runs/h1 \\
      --config.optim.frozen='("^encoder_", "^nar_")'                 # stage 2: AR alone
  zoo denovo --checkpoint runs/h2 --spectra my.mzML --out results.mztab --mode hybrid --beam 5
"""

import argparse
import os
import sys
import time

import common
import jax
import ml_collections
import numpy as np

from zoo.peptide import features, mztab, spectra
from zoo.peptide.metrics import evaluate
from zoo.peptide.residues import CASANOVO
from zoo.peptide.sequence import Sequencer, to_psm


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "demo"):
        raise ValueError(f"denovo_demo variant {variant!r}; use tiny or demo")
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.task = common.denovo_task(dataset="simulated", max_peaks=48)
    c.task.simulated = ml_collections.ConfigDict()  # zoo.peptide.simulated_tfds parameters
    c.task.simulated.num_train = 24_000  # spectra per split
    c.task.simulated.num_validation = 256
    c.task.simulated.num_test = 512
    c.task.simulated.min_length = 6  # peptide lengths (residues)
    c.task.simulated.max_length = 12
    c.task.simulated.seed = 0  # the simulation's seed (not training's)
    c.task.simulated.pool = "random"  # or "digest": the mouse digest's few thousand peptides
    c.model = common.peptide_model(
        d_model=128,
        n_heads=4,
        d_ff=256,
        layers=2,
        max_charge=4,
        nar_slots=24,
        max_peptide_len=13,
    )
    c.data = ml_collections.ConfigDict()
    c.data.mode = "pad"  # spectra batch at fixed shapes (max_peaks, max_peptide_len)
    c.data.global_batch_size = 64  # spectra per step over all devices
    c.mesh = common.mesh()
    c.optim = common.optim(
        learning_rate=2e-3,
        # Far from convergence, a constant rate learnt faster than cosine-to-5% (AR AA
        # precision 0.33 at 1,000 updates vs 0.21 at 900; BENCHMARKS.md, issue 16).
        schedule="constant",
        warmup_steps=100,
        weight_decay=1e-5,  # Casanovo's
    )  # stage 2: frozen=("^encoder_", "^nar_")
    # init_from: a workdir or model dir (e.g. `zoo convert casanovo`) to start from, with
    # init_from_patterns, e.g. ("^encoder_",), to take only some of its parameters.
    c.train = common.train(num_steps=900)
    c.eval = common.evaluation(every_steps=500)
    c.checkpoint = common.checkpoint(every_steps=500, keep_last=1)

    if variant == "tiny":
        c.task.max_peaks = 32
        c.task.simulated.num_train = 128
        c.task.simulated.num_validation = 16
        c.task.simulated.num_test = 16
        c.task.simulated.max_length = 8
        c.model.d_model = 32
        c.model.n_heads = 2
        c.model.d_ff = 64
        c.model.encoder_layers = 1
        c.model.ar_layers = 1
        c.model.nar_layers = 1
        c.model.nar_slots = 16
        c.model.max_peptide_len = 9
        c.data.global_batch_size = 16
        c.optim.warmup_steps = 2
        c.train.num_steps = 6
        c.train.log_every = 1
        c.train.progress_bar = False
        c.eval.every_steps = 0
        c.checkpoint.every_steps = 3
        c.checkpoint.keep_last = 0
    return c


# --------------------------------------------------------------------------- the demo


def annotate_png(path: str, example: dict, peptide: str, title: str) -> None:
    """A PNG of the spectrum with the predicted peptide's b/y ions marked (spectrum_utils)."""
    # Optional (the `denovo` extra) and heavy: only the demo's last step needs them.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spectrum_utils.plot as sup
    import spectrum_utils.spectrum as sus

    tokens = CASANOVO.parse(peptide)
    spectrum = sus.MsmsSpectrum(
        title,
        float(example["precursor_mz"]),
        int(example["precursor_charge"]),
        [float(x) for x in example["mz"]],
        [float(x) for x in example["intensity"]],
    )
    spectrum.annotate_proforma(
        CASANOVO.to_proforma(tokens, mass_deltas=True),  # no Unimod download
        fragment_tol_mass=0.05,
        fragment_tol_mode="Da",
        ion_types="by",
        max_ion_charge=2,
    )
    fig, ax = plt.subplots(figsize=(10, 5))
    sup.spectrum(spectrum, grid=False, ax=ax)
    ax.set_title(f"{title}: predicted {peptide}")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="de novo demo: AR vs NAR vs hybrid")
    ap.add_argument("--workdir", default="runs/denovo_demo")
    ap.add_argument(
        "--seconds",
        type=float,
        default=120.0,
        help="seconds of training steps per model (the hybrid: both stages; compilation "
        "and evals not counted); 0 = --steps updates each",
    )
    ap.add_argument("--stage2-fraction", type=float, default=0.3, help="hybrid: AR-only share")
    ap.add_argument("--steps", type=int, default=900, help="updates per model with --seconds 0")
    ap.add_argument("--stage2-steps", type=int, default=200, help="of which AR-only (hybrid)")
    ap.add_argument("--beam", type=int, default=5, help="AR beams")
    ap.add_argument("--test-spectra", type=int, default=256)
    ap.add_argument("--variant", default="demo", help="demo, or tiny (tests)")
    ap.add_argument(
        "--ablation",
        nargs="?",
        const="all",
        default="",
        help="also train hybrid variants (why the hybrid trails AR) and score them: all, or "
        f"a comma list of {','.join(ABLATIONS)}",
    )
    args = ap.parse_args(argv)

    common.use_compilation_cache(args.workdir)
    t0 = time.time()
    os.makedirs(args.workdir, exist_ok=True)
    data_dir = os.path.join(args.workdir, "tfds")
    timed = args.seconds > 0

    def config(mode: str, steps: int, seconds: float = 0.0, **overrides):
        c = get_config(args.variant)
        c.task.data_dir = data_dir
        c.model.mode = mode
        if timed:  # equal training time: the budget ends each run, num_steps only a cap
            c.train.num_steps = MAX_STEPS
            c.train.max_seconds = seconds
            c.eval.every_steps = EVAL_EVERY if args.variant == "demo" else 50
            c.checkpoint.every_steps = 500
        else:
            c.train.num_steps = steps
            c.eval.every_steps = max(1, steps // 4)  # learning curves: 4 eval points
            c.checkpoint.every_steps = steps
        return common.with_overrides(c, overrides)

    w = lambda name: os.path.join(args.workdir, name)  # noqa: E731
    runs = {}
    runs["AR (Casanovo-like)"] = common.train_stage(
        "AR only: mode ar", config("ar", args.steps, args.seconds), w("ar")
    )
    runs["NAR (PrimeNovo-like)"] = common.train_stage(
        "NAR only: mode nar", config("nar", args.steps, args.seconds), w("nar")
    )
    runs["hybrid"] = train_hybrid(args, config, w("hybrid_stage1"), w("hybrid"))
    ablations = {}
    if args.ablation:
        ablations = train_ablations(args, config, w)

    task = runs["hybrid"][0]
    # summary key -> (label, run, decoder)
    evals = {
        "ar": ("AR beam", "AR (Casanovo-like)", "ar"),
        "nar": ("NAR CTC beam", "NAR (PrimeNovo-like)", "nar"),
        "nar_pmc": ("NAR CTC + mass control", "NAR (PrimeNovo-like)", "nar_pmc"),
        "hybrid": ("hybrid (AR beam on NAR states)", "hybrid", "hybrid"),
    }
    sequencers = {}
    for run, (t, params) in runs.items():
        sequencers[run] = Sequencer(
            t.model.config,
            jax.device_get(params),
            t.residues,
            max_peaks=t.config.task.max_peaks,
            beam=args.beam,
        )
    budget = f"{args.seconds:.0f} s of training per model" if timed else f"{args.steps} updates"
    tests = [("test", "peptide-disjoint random peptides")]
    if task.config.task.simulated.get("pool", "digest") == "random":
        tests.append(("test_digest", "the mouse digest's test peptides"))
    results, predictions = {}, {}
    for split, what in tests:
        source = task.source(split)
        keep = task.kept_indices(split)[: args.test_spectra]
        split_examples = [source[int(i)] for i in keep]
        split_truth = [features.text_field(e["peptide"]) for e in split_examples]
        results[split] = {}
        for key, (_, run, decoder) in evals.items():
            start = time.time()
            preds = sequencers[run].predict_all(split_examples, decoder, batch_size=64)
            seconds = time.time() - start
            m = evaluate(split_truth, [p.peptide for p in preds])
            m["spectra_per_s"] = len(split_examples) / seconds
            m["matches_precursor"] = float(np.mean([p.matches_precursor for p in preds]))
            results[split][key] = m
            if split == "test":
                predictions[key] = preds
        if split == "test":
            examples, truth = split_examples, split_truth
        print(
            f"\n=== {split}: {len(split_examples)} spectra of {what}, never seen in training "
            f"({budget}; {time.time() - t0:.0f} s so far)"
        )
        print(
            f"{'decoder':<32} {'AA prec':>8} {'AA rec':>8} {'pep rec':>8} {'fits':>6} {'spec/s':>8}"
        )
        for key, m in results[split].items():
            print(
                f"{evals[key][0]:<32} {m['aa_precision']:8.3f} {m['aa_recall']:8.3f} "
                f"{m['peptide_recall']:8.3f} {m['matches_precursor']:6.2f} "
                f"{m['spectra_per_s']:8.1f}"
            )
    hybrid = predictions["hybrid"]
    out = os.path.join(args.workdir, "hybrid_test.mztab")
    psms = [
        to_psm(_as_spectrum(e, i), p) for i, (e, p) in enumerate(zip(examples, hybrid)) if p.peptide
    ]
    mztab.write_mztab(
        out, psms, residues=task.residues, metadata={"mode": "hybrid", "beam": args.beam}
    )
    best = max(range(len(hybrid)), key=lambda i: (hybrid[i].peptide == truth[i], hybrid[i].score))
    png = os.path.join(args.workdir, "annotated_spectrum.png")
    if hybrid[best].peptide:
        annotate_png(
            png, examples[best], hybrid[best].peptide, features.text_field(examples[best]["title"])
        )
    print(f"\nmzTab: {out} ({len(psms)} PSMs)\nannotated spectrum: {png}")
    print(f"  true {truth[best]}\n  pred {hybrid[best].peptide}")
    keys = ("aa_precision", "aa_recall", "peptide_recall")
    summary = {k: {m: results["test"][k][m] for m in keys} for k in evals}
    workdirs = {
        "AR": w("ar"),
        "NAR": w("nar"),
        "hybrid stage 1": w("hybrid_stage1"),
        "hybrid stage 2": w("hybrid"),
    }
    details = {
        "splits": results,
        "budget": {"seconds_per_model": args.seconds, "stage2_fraction": args.stage2_fraction}
        if timed
        else {"updates_per_model": args.steps, "hybrid_stage2_updates": args.stage2_steps},
        "beam": args.beam,
        "train_seconds": {k: _train_seconds(d) for k, d in workdirs.items()},
        "updates": {k: _train_steps(d) for k, d in workdirs.items()},
        "seconds": time.time() - t0,
    }
    if ablations:
        details["ablation"] = score_ablations(args, ablations, examples, truth, w)
    common.write_results(args.workdir, "denovo_demo", summary, details, workdirs, keys)
    common.print_table(
        f"de novo, {len(examples)} test spectra of unseen peptides (results.json, summary.png)",
        summary,
        keys,
    )
    print(f"total {time.time() - t0:.0f} s")
    return 0


MAX_STEPS = 100_000  # a cap only: with --seconds the time budget ends each run
EVAL_EVERY = 250  # updates between evals with --seconds (the learning curves' points)
FROZEN = ("^encoder_", "^nar_")  # hybrid stage 2 trains the AR decoder alone

# Hybrid variants of --ablation: key -> (what changes, train_hybrid keyword arguments).
ABLATIONS = {
    "unfrozen": ("stage 2 trains everything (nothing frozen)", {"frozen": ()}),
    "long_stage2": ("stage 2 is 60% of the time (not 30%)", {"stage2_fraction": 0.6}),
    "no_anneal": (
        "stage 1 at a fixed lambda 0.5 (no annealing)",
        {"stage1": {"task.anneal": False, "task.ar_weight": 0.5}},
    ),
    "twice_time": ("twice the training time", {"scale": 2.0}),
}


def train_hybrid(
    args,
    config,
    h1: str,
    h2: str,
    *,
    frozen=FROZEN,
    stage2_fraction: float | None = None,
    stage1: dict | None = None,
    scale: float = 1.0,
):
    """CrossNovo's two stages -> (task, params) of stage 2. With --seconds, stage 1 gets
    (1 - stage2_fraction) of the budget and anneals lambda over the updates that time is
    expected to hold (from the AR and NAR runs' measured rates: a hybrid step runs both
    decoders); stage 2 gets the rest."""
    frac = args.stage2_fraction if stage2_fraction is None else stage2_fraction
    stage1 = dict(stage1 or {})
    stage2 = {"task.stage": "ar", "train.init_from": h1, "optim.frozen": tuple(frozen)}
    if args.seconds > 0:
        seconds = args.seconds * scale
        s1, s2 = seconds * (1.0 - frac), seconds * frac
        if stage1.get("task.anneal", True):
            stage1.setdefault("task.anneal_steps", _expected_hybrid_steps(args.workdir, s1))
        c1, c2 = config("hybrid", 0, s1, **stage1), config("hybrid", 0, s2, **stage2)
        when = f"{s1:.0f} s, then {s2:.0f} s"
    else:
        steps2 = round(args.stage2_steps * scale)
        steps1 = round(args.steps * scale) - steps2
        c1, c2 = config("hybrid", steps1, **stage1), config("hybrid", steps2, **stage2)
        when = f"{steps1} then {steps2} updates"
    joint = (
        f"lambda = step / {c1.task.anneal_steps or c1.train.num_steps}"
        if c1.task.anneal
        else f"lambda = {c1.task.ar_weight}"
    )
    common.train_stage(f"hybrid stage 1 (joint, {joint}; {when}): mode hybrid", c1, h1)
    what = f"frozen {', '.join(frozen)}" if frozen else "nothing frozen"
    return common.train_stage(f"hybrid stage 2 (AR loss alone; {what})", c2, h2)


def train_ablations(args, config, w) -> dict:
    """--ablation: the hybrid variants of ABLATIONS it names, each in its own workdirs."""
    keys = list(ABLATIONS) if args.ablation == "all" else args.ablation.split(",")
    unknown = [k for k in keys if k not in ABLATIONS]
    if unknown:
        raise SystemExit(f"--ablation {args.ablation}: unknown {unknown}; use {list(ABLATIONS)}")
    out = {}
    for key in keys:
        what, kwargs = ABLATIONS[key]
        print(f"\n=== ablation {key}: {what}")
        task, params = train_hybrid(
            args, config, w(f"ablation_{key}_stage1"), w(f"ablation_{key}"), **kwargs
        )
        out[key] = (what, task, params)
    return out


def score_ablations(args, ablations: dict, examples, truth, w) -> dict:
    """The hybrid decoder of each ablation run on the peptide-disjoint test; printed."""
    out = {}
    print(f"\n=== ablation: the hybrid decoder, {len(examples)} test spectra")
    print(f"{'variant':<46} {'AA prec':>8} {'AA rec':>8} {'pep rec':>8} {'updates':>9}")
    for key, (what, t, params) in ablations.items():
        sequencer = Sequencer(
            t.model.config,
            jax.device_get(params),
            t.residues,
            max_peaks=t.config.task.max_peaks,
            beam=args.beam,
        )
        preds = sequencer.predict_all(examples, "hybrid", batch_size=64)
        m = evaluate(truth, [p.peptide for p in preds])
        m["what"] = what
        stages = (w(f"ablation_{key}_stage1"), w(f"ablation_{key}"))
        m["updates"] = [_train_steps(d) for d in stages]
        m["train_seconds"] = sum(_train_seconds(d) for d in stages)
        out[key] = m
        print(
            f"{what:<46} {m['aa_precision']:8.3f} {m['aa_recall']:8.3f} "
            f"{m['peptide_recall']:8.3f} {'+'.join(map(str, m['updates'])):>9}"
        )
    return out


def _expected_hybrid_steps(workdir: str, seconds: float) -> int:
    """Updates a hybrid run is expected to make in `seconds`: a hybrid step costs about an
    AR step plus a NAR step (both measured by the finished AR and NAR runs)."""
    cost = 0.0
    for name in ("ar", "nar"):
        steps = _train_steps(os.path.join(workdir, name))
        cost += _train_seconds(os.path.join(workdir, name)) / max(steps, 1)
    return max(1, int(seconds / cost)) if cost > 0 else 1


def _train_steps(workdir: str) -> int:
    """The last step a run logged a training loss for (0 when none)."""
    from zoo.train import plot

    rows = plot.read_metrics(workdir) if os.path.isfile(f"{workdir}/metrics.jsonl") else []
    return max([int(r["step"]) for r in rows if "loss" in r], default=0)


def _train_seconds(workdir: str) -> float:
    """Seconds a run spent in training steps (its metrics' `train_seconds`: compilation and
    evals not counted, as the --seconds budget counts them); 0 when none."""
    from zoo.train import plot

    rows = plot.read_metrics(workdir) if os.path.isfile(f"{workdir}/metrics.jsonl") else []
    return max([float(r.get("train_seconds", 0.0)) for r in rows], default=0.0)


def _as_spectrum(example: dict, index: int):
    """A stored example as a zoo.peptide.spectra.Spectrum (for the mzTab writer)."""
    return spectra.Spectrum(
        mz=np.asarray(example["mz"], np.float64),
        intensity=np.asarray(example["intensity"], np.float64),
        precursor_mz=float(example["precursor_mz"]),
        precursor_charge=int(example["precursor_charge"]),
        peptide=features.text_field(example["peptide"]),
        title=features.text_field(example["title"]),
        index=index,
        source="simulated_test",
    )


if __name__ == "__main__":
    sys.exit(main())
