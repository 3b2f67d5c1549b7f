"""mBART on the gettext en->de catalogs every Linux machine has: translation, CSR, denoising.

Variants: tiny (tests: a few steps, needs task.spm_model / task.locale_dir set), demo (this
CPU). The task is chosen with --config.task.name (translation | csr | denoising).

Run as a script, this file is `make demo`: it builds the en->de data, trains a
sentencepiece model, then a translation-only model and a CSR-then-translation model with
the same total number of updates, and prints sacreBLEU / chrF on the test split:

  python recipes/mbart_demo.py --workdir runs/mbart_demo

  zoo train --config recipes/mbart_demo.py:demo --workdir runs/mt \\
      --config.task.spm_model=runs/spm/spm.model
  zoo train --config recipes/mbart_demo.py:demo --workdir runs/csr1 --config.task.name=csr ...
  zoo train --config recipes/mbart_demo.py:demo --workdir runs/csr2 \\
      --config.train.init_from=runs/csr1 ...      # CSR stage 2: translation, optimizer reset
"""

import argparse
import os
import sys
import time

import common
import ml_collections
import numpy as np

from zoo.data import gettext
from zoo.mbart.metrics import corpus_scores
from zoo.mbart.tokenizer import train_sentencepiece
from zoo.mbart.translate import TranslateOptions, translate


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "demo"):
        raise ValueError(f"mbart_demo variant {variant!r}; use tiny or demo")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = common.mbart_text_task(
        name="translation",
        spm_model="",  # set by the driver (a model trained with `zoo spm` on the train pairs)
        src_lang="en_XX",
        tgt_lang="de_DE",
        src_text_lang="en",
        tgt_text_lang="de",
    )
    c.model = common.mbart_model(
        vocab_size=0,
        d_model=128,
        num_heads=4,
        mlp_dim=512,
        layers=2,
        max_length=96,
        dropout=0.1,
    )
    c.data = common.batching(
        mode="bucket",
        global_batch_size=64,
        max_length=128,
        tokens_per_batch=2048,
        bucket_boundaries=(16, 32, 64),
    )
    c.mesh = common.mesh()
    # A short CPU run: high peak, short warmup (pre-LN is stable).
    c.optim = common.optim(
        learning_rate=3e-3,
        schedule="inverse_sqrt",
        warmup_steps=100,
        end_learning_rate_ratio=0.0,
        eps=1e-6,
        weight_decay=0.0,
    )
    c.train = common.train(num_steps=900)  # init_from: e.g. the CSR stage-1 workdir
    c.eval = common.evaluation(every_steps=500)
    c.checkpoint = common.checkpoint(every_steps=500, keep_last=2)

    if variant == "tiny":
        c.model.d_model = 16
        c.model.num_heads = 2
        c.model.mlp_dim = 32
        c.model.encoder_layers = 1
        c.model.decoder_layers = 1
        c.model.max_length = 64
        c.data.mode = "pad"
        c.data.global_batch_size = 8
        c.data.max_length = 64
        c.optim.warmup_steps = 2
        c.train.num_steps = 3
        c.train.log_every = 1
        c.train.progress_bar = False
        c.eval.every_steps = 3
        c.checkpoint.every_steps = 3
        c.task.noise_epochs = 2
    return c


# --------------------------------------------------------------------------- the demo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="mBART demo: translation vs CSR + translation")
    ap.add_argument("--workdir", default="runs/mbart_demo")
    ap.add_argument("--locale-dir", default="/usr/share/locale")
    ap.add_argument("--vocab-size", type=int, default=2000, help="sentencepiece pieces")
    ap.add_argument("--mt-steps", type=int, default=700, help="translation-only updates")
    ap.add_argument("--csr-steps", type=int, default=200, help="CSR stage-1 updates")
    ap.add_argument("--test-sentences", type=int, default=300, help="test sentences to score")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--variant", default="demo", help="model/data config: demo, or tiny (tests)")
    ap.add_argument("--seeds", default="0,1", help="training seeds; each trains both models")
    args = ap.parse_args(argv)
    seeds = [int(x) for x in args.seeds.split(",")]

    # The baseline and CSR stage 2 train and translate with the same shapes: a persistent
    # compilation cache lets the second model reuse the first one's executables.
    common.use_compilation_cache(args.workdir)

    t0 = time.time()
    os.makedirs(args.workdir, exist_ok=True)
    data_dir = os.path.join(args.workdir, "tfds")
    builder = gettext.gettext_builder(
        data_dir, src_lang="en", tgt_lang="de", locale_dir=args.locale_dir
    )
    pairs = {
        split: [(ex["en"].decode(), ex["de"].decode()) for ex in builder.as_data_source()[split]]
        for split in ("train", "test")
    }
    print(
        f"gettext en->de: {len(pairs['train'])} train pairs, {len(pairs['test'])} test pairs "
        f"(test catalogs never seen in training)"
    )

    spm_prefix = os.path.join(args.workdir, "spm")
    if not os.path.exists(spm_prefix + ".model"):
        train_sentencepiece(
            spm_prefix, args.vocab_size, sentences=[s for p in pairs["train"] for s in p]
        )
    print(f"sentencepiece model: {spm_prefix}.model ({args.vocab_size} pieces)")

    def config(name: str, steps: int, seed: int, init_from: str = ""):
        c = get_config(args.variant)
        c.seed = seed
        c.task.name = name
        c.task.spm_model = spm_prefix + ".model"
        c.task.locale_dir = args.locale_dir
        c.task.data_dir = data_dir
        c.train.num_steps = steps
        c.train.init_from = init_from
        c.eval.every_steps = max(1, steps // 4)  # learning curves: 4 eval points
        c.checkpoint.every_steps = steps
        return c

    total = args.mt_steps
    sources = [s for s, _ in pairs["test"][: args.test_sentences]]
    references = [r for _, r in pairs["test"][: args.test_sentences]]
    # results[model][seed] -> BLEU / chrF / samples; `translation` is the baseline's folder
    # of seed 0 (the ZeTT demo's base model).
    results = {"translation": {}, "csr_translation": {}}
    workdirs = {}
    for seed in seeds:
        tag = "" if seed == 0 else f"_seed{seed}"
        mt_dir = os.path.join(args.workdir, f"translation{tag}")
        csr_dir = os.path.join(args.workdir, f"csr_stage1{tag}")
        runs = {
            "translation": common.train_stage(
                f"baseline: translation, seed {seed}", config("translation", total, seed), mt_dir
            )
        }
        common.train_stage(
            f"CSR stage 1: csr, seed {seed}", config("csr", args.csr_steps, seed), csr_dir
        )
        runs["csr_translation"] = common.train_stage(
            f"CSR stage 2: translation, seed {seed}",
            config("translation", total - args.csr_steps, seed, csr_dir),
            os.path.join(args.workdir, f"csr_translation{tag}"),
        )
        workdirs[f"translation s{seed}"] = mt_dir
        workdirs[f"CSR s{seed}"] = csr_dir
        workdirs[f"CSR+translation s{seed}"] = os.path.join(args.workdir, f"csr_translation{tag}")
        for name, (task, params) in runs.items():
            hyps = translate(
                task.model,
                params,
                task.tokenizer(),
                sources,
                src_lang=task.config.task.src_lang,
                tgt_lang=task.config.task.tgt_lang,
                options=TranslateOptions(beam=args.beam),
            )
            results[name][seed] = {**corpus_scores(hyps, references), "samples": hyps[:3]}
    print(
        f"\n=== test split, first {len(sources)} sentences, beam {args.beam} "
        f"(total {total} updates each; {time.time() - t0:.0f} s so far)"
    )
    labels = {"translation": "translation only", "csr_translation": "CSR + translation"}
    summary = {}
    print(f"{'model':<20} {'seed':>4} {'BLEU':>6} {'chrF':>6}")
    for name, per_seed in results.items():
        for seed, r in per_seed.items():
            print(f"{labels[name]:<20} {seed:>4} {r['bleu']:6.2f} {r['chrf']:6.2f}")
        summary[name] = {
            m: float(np.mean([r[m] for r in per_seed.values()])) for m in ("bleu", "chrf")
        }
        for m in ("bleu", "chrf"):  # spread over seeds (population std; 0 for one seed)
            summary[name][f"{m}_std"] = float(np.std([r[m] for r in per_seed.values()]))
    for i in range(min(3, len(sources))):
        print(f"\n  en:  {sources[i]}\n  ref: {references[i]}")
        for name, per_seed in results.items():
            print(f"  {labels[name]}: {per_seed[seeds[0]]['samples'][i]}")
    details = {
        "per_seed": {n: {str(k): v for k, v in r.items()} for n, r in results.items()},
        "seeds": seeds,
        "updates_per_model": total,
        "csr_updates": args.csr_steps,
        "test_sentences": len(sources),
        "beam": args.beam,
        "seconds": time.time() - t0,
    }
    common.write_results(args.workdir, "mbart_demo", summary, details, workdirs, ("bleu", "chrf"))
    common.print_table(
        f"en->de, {len(sources)} test sentences, mean over seeds {seeds} (results.json)",
        summary,
        ("bleu", "bleu_std", "chrf", "chrf_std"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
