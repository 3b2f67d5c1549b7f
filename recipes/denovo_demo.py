"""De novo peptide sequencing on simulated spectra: AR vs NAR vs the hybrid, on this CPU.

Variants: tiny (tests: seconds), demo (this CPU). The data are simulated spectra of a
tryptic digest of the mouse proteins shipped with zoo, split so that no test peptide
was seen in training (zoo.data.simulated_tfds).

Run as a script, this file is the second half of `make demo`: it trains an AR-only
(Casanovo-like), a NAR-only (PrimeNovo-like) and a hybrid (CrossNovo: joint stage with
importance annealing, then the AR decoder alone with the encoder and NAR decoder frozen)
model, and reports AA precision / peptide recall on the test split for AR beam search,
NAR CTC beam search with and without precise mass control, and the hybrid; it writes the
hybrid's predictions as mzTab and a PNG of one spectrum annotated with its b/y ions.

  python recipes/denovo_demo.py --workdir runs/denovo_demo

  zoo train --config recipes/denovo_demo.py:demo --workdir runs/ar --config.model.mode=ar
  zoo train --config recipes/denovo_demo.py:demo --workdir runs/h1                 # hybrid
  zoo train --config recipes/denovo_demo.py:demo --workdir runs/h2 \\
      --config.task.stage=ar --config.train.init_from=runs/h1 \\
      --config.optim.frozen='("^encoder_", "^nar_")'                 # stage 2: AR alone
  zoo denovo --checkpoint runs/h2 --mgf my.mgf --out results.mztab --mode hybrid --beam 5
"""

import argparse
import json
import os
import sys
import time

import ml_collections


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "demo"):
        raise ValueError(f"denovo_demo variant {variant!r}; use tiny or demo")
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.task = ml_collections.ConfigDict()
    c.task.name = "denovo"
    c.task.dataset = "simulated"  # "simulated" | "mgf" (see recipes/denovo_nine_species.py)
    c.task.data_dir = "~/.cache/zoo/tfds"  # where the TFDS dataset is written
    c.task.max_peaks = 48  # most intense peaks fed to the encoder (Casanovo keeps <= 150)
    c.task.stage = "joint"  # "joint" | "ar" (stage 2: AR loss only; freeze via optim.frozen)
    c.task.anneal = True  # hybrid: lambda = step / anneal_steps, else lambda = ar_weight
    c.task.anneal_steps = 0  # 0 = train.num_steps
    c.task.ar_weight = 0.5  # hybrid without annealing: weight of the AR loss
    c.task.label_smoothing = 0.01  # Casanovo's train_label_smoothing
    c.task.simulated = ml_collections.ConfigDict()  # zoo.data.simulated_tfds parameters
    c.task.simulated.num_train = 24_000
    c.task.simulated.num_validation = 256
    c.task.simulated.num_test = 512
    c.task.simulated.min_length = 6
    c.task.simulated.max_length = 12
    c.task.simulated.seed = 0

    c.model = ml_collections.ConfigDict()  # fields of zoo.models.peptide.PeptideConfig
    c.model.mode = "hybrid"  # "ar" | "nar" | "hybrid"
    c.model.n_residues = 27
    c.model.d_model = 128
    c.model.n_heads = 4
    c.model.d_ff = 256
    c.model.encoder_layers = 2
    c.model.ar_layers = 2
    c.model.nar_layers = 2
    c.model.dropout = 0.0
    c.model.max_charge = 4
    c.model.nar_slots = 24  # >= 2 x the longest peptide is always enough for CTC
    c.model.max_peptide_len = 13  # residues + stop, decoded
    c.model.reverse = True
    c.model.dtype = "float32"

    c.data = ml_collections.ConfigDict()
    c.data.mode = "pad"  # spectra batch at fixed shapes (max_peaks, max_peptide_len)
    c.data.global_batch_size = 64

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 2e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.optim.end_learning_rate_ratio = 0.05
    c.optim.power = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-9
    c.optim.weight_decay = 1e-5  # Casanovo's
    c.optim.clip_norm = 1.0
    c.optim.grad_accum_steps = 1
    c.optim.frozen = ()  # stage 2: ("^encoder_", "^nar_")

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 900
    c.train.log_every = 50
    c.train.progress_bar = True
    c.train.init_from = ""  # a workdir or model dir (e.g. `zoo convert casanovo`) to start from
    c.train.init_from_patterns = ()  # only these params from init_from, e.g. ("^encoder_",)

    c.eval = ml_collections.ConfigDict()
    c.eval.split = "validation"
    c.eval.every_steps = 500
    c.eval.num_batches = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500
    c.checkpoint.keep_last = 1
    c.checkpoint.keep_every = 0
    c.checkpoint.async_save = True

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


def _stage(name: str, config, workdir: str):
    from zoo import tasks
    from zoo.train import loop

    print(f"\n=== {name}: mode {config.model.mode}, {config.train.num_steps} steps -> {workdir}")
    task = tasks.get_task(config)
    summary = loop.train(config, workdir, task)
    return task, summary["state"].params


def annotate_png(path: str, example: dict, peptide: str, title: str) -> None:
    """A PNG of the spectrum with the predicted peptide's b/y ions marked (spectrum_utils)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spectrum_utils.plot as sup
    import spectrum_utils.spectrum as sus

    from zoo.data import residues as zres

    tokens = zres.CASANOVO.parse(peptide)
    spectrum = sus.MsmsSpectrum(
        title,
        float(example["precursor_mz"]),
        int(example["precursor_charge"]),
        [float(x) for x in example["mz"]],
        [float(x) for x in example["intensity"]],
    )
    spectrum.annotate_proforma(
        zres.CASANOVO.to_proforma(tokens),
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
    ap.add_argument("--steps", type=int, default=900, help="updates per model")
    ap.add_argument("--stage2-steps", type=int, default=200, help="hybrid: of which AR-only")
    ap.add_argument("--beam", type=int, default=5, help="AR beams")
    ap.add_argument("--test-spectra", type=int, default=256)
    ap.add_argument("--variant", default="demo", help="demo, or tiny (tests)")
    args = ap.parse_args(argv)

    import jax
    import numpy as np

    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from zoo.data import mztab
    from zoo.metrics import peptide as pmetrics
    from zoo.tasks import denovo as tdenovo

    t0 = time.time()
    os.makedirs(args.workdir, exist_ok=True)
    data_dir = os.path.join(args.workdir, "tfds")

    def config(mode: str, steps: int, **overrides):
        c = get_config(args.variant)
        c.task.data_dir = data_dir
        c.model.mode = mode
        c.train.num_steps = steps
        c.eval.every_steps = steps
        c.checkpoint.every_steps = steps
        for k, v in overrides.items():
            node = c
            *path, leaf = k.split(".")
            for p in path:
                node = node[p]
            node[leaf] = v
        return c

    s1 = args.steps - args.stage2_steps
    runs = {}
    runs["AR (Casanovo-like)"] = _stage(
        "AR only", config("ar", args.steps), os.path.join(args.workdir, "ar")
    )
    runs["NAR (PrimeNovo-like)"] = _stage(
        "NAR only", config("nar", args.steps), os.path.join(args.workdir, "nar")
    )
    h1 = os.path.join(args.workdir, "hybrid_stage1")
    _stage("hybrid stage 1 (joint, lambda = step/T)", config("hybrid", s1), h1)
    runs["hybrid"] = _stage(
        "hybrid stage 2 (AR decoder alone; encoder and NAR frozen)",
        config(
            "hybrid",
            args.stage2_steps,
            **{"task.stage": "ar", "train.init_from": h1, "optim.frozen": ("^encoder_", "^nar_")},
        ),
        os.path.join(args.workdir, "hybrid"),
    )

    task = runs["hybrid"][0]
    test = task.source("test")
    keep = task.kept_indices("test")[: args.test_spectra]
    examples = [test[int(i)] for i in keep]
    truth = [tdenovo._text(e["peptide"]) for e in examples]
    evals = {
        "AR beam": ("AR (Casanovo-like)", "ar"),
        "NAR CTC beam": ("NAR (PrimeNovo-like)", "nar"),
        "NAR CTC + mass control": ("NAR (PrimeNovo-like)", "nar_pmc"),
        "hybrid (AR beam on NAR states)": ("hybrid", "hybrid"),
    }
    results, predictions = {}, {}
    for label, (run, decoder) in evals.items():
        t, params = runs[run]
        seq = tdenovo.Sequencer(
            t.model.config,
            jax.device_get(params),
            t.residues,
            max_peaks=t.config.task.max_peaks,
            beam=args.beam,
        )
        start = time.time()
        preds = seq.predict_all(examples, decoder, batch_size=64)
        seconds = time.time() - start
        predictions[label] = preds
        m = pmetrics.evaluate(truth, [p.peptide for p in preds])
        m["spectra_per_s"] = len(examples) / seconds
        m["matches_precursor"] = float(np.mean([p.matches_precursor for p in preds]))
        results[label] = m

    print(
        f"\n=== test split: {len(examples)} spectra of peptides never seen in training "
        f"({args.steps} updates per model; {time.time() - t0:.0f} s so far)"
    )
    print(f"{'decoder':<32} {'AA prec':>8} {'AA rec':>8} {'pep rec':>8} {'fits':>6} {'spec/s':>8}")
    for label, m in results.items():
        print(
            f"{label:<32} {m['aa_precision']:8.3f} {m['aa_recall']:8.3f} "
            f"{m['peptide_recall']:8.3f} {m['matches_precursor']:6.2f} {m['spectra_per_s']:8.1f}"
        )
    hybrid = predictions["hybrid (AR beam on NAR states)"]
    out = os.path.join(args.workdir, "hybrid_test.mztab")
    psms = [
        tdenovo.to_psm(_as_spectrum(e, i), p)
        for i, (e, p) in enumerate(zip(examples, hybrid))
        if p.peptide
    ]
    mztab.write_mztab(
        out, psms, residues=task.residues, metadata={"mode": "hybrid", "beam": args.beam}
    )
    best = max(range(len(hybrid)), key=lambda i: (hybrid[i].peptide == truth[i], hybrid[i].score))
    png = os.path.join(args.workdir, "annotated_spectrum.png")
    if hybrid[best].peptide:
        annotate_png(
            png, examples[best], hybrid[best].peptide, tdenovo._text(examples[best]["title"])
        )
    print(f"\nmzTab: {out} ({len(psms)} PSMs)\nannotated spectrum: {png}")
    print(f"  true {truth[best]}\n  pred {hybrid[best].peptide}")
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"total {time.time() - t0:.0f} s")
    return 0


def _as_spectrum(example: dict, index: int):
    """A stored example as a zoo.data.spectra.Spectrum (for the mzTab writer)."""
    import numpy as np

    from zoo.data import spectra
    from zoo.tasks.denovo import _text

    return spectra.Spectrum(
        mz=np.asarray(example["mz"], np.float64),
        intensity=np.asarray(example["intensity"], np.float64),
        precursor_mz=float(example["precursor_mz"]),
        precursor_charge=int(example["precursor_charge"]),
        peptide=_text(example["peptide"]),
        title=_text(example["title"]),
        index=index,
        source="simulated_test",
    )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
