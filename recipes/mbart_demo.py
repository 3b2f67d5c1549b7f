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
import json
import os
import sys
import time

import ml_collections


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "demo"):
        raise ValueError(f"mbart_demo variant {variant!r}; use tiny or demo")
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.task = ml_collections.ConfigDict()
    c.task.name = "translation"  # translation | csr | denoising
    c.task.spm_model = ""  # sentencepiece model (zoo.data.tokenizer.train_sentencepiece)
    c.task.tokenizer_style = "cc25"  # cc25: `X </s> [lang]`; mbart50: `[lang] X </s>`
    c.task.src_lang = "en_XX"  # mBART language codes
    c.task.tgt_lang = "de_DE"
    c.task.src_text_lang = "en"  # gettext catalog languages (en = the msgid)
    c.task.tgt_text_lang = "de"
    c.task.corpus = "gettext"  # "gettext" | "tfds:NAME" (needs the tfds-catalog extra)
    c.task.locale_dir = "/usr/share/locale"
    c.task.data_dir = "~/.cache/zoo/tfds"  # where the TFDS gettext dataset is written
    c.task.label_smoothing = 0.1
    c.task.lexicon = ""  # csr: MUSE-style `src tgt` file; "" = induce from the train pairs
    c.task.lexicon_reverse = ""  # csr: tgt->src file (default: the same file)
    c.task.lexicon_k = 3  # csr: candidates per dictionary entry
    c.task.noise_ratio = 0.35  # csr/denoising: share of words switched / masked
    c.task.noise_epochs = 3  # csr/denoising: distinct noisings before they repeat

    c.model = ml_collections.ConfigDict()  # fields of zoo.models.mbart.MBartConfig
    c.model.vocab_size = 0  # 0 = the tokenizer's vocabulary size
    c.model.d_model = 128
    c.model.num_heads = 4
    c.model.mlp_dim = 512
    c.model.encoder_layers = 2
    c.model.decoder_layers = 2
    c.model.max_length = 96  # rows of the position tables (+2, mBART's offset)
    c.model.activation = "gelu"
    c.model.dropout = 0.1
    c.model.attention_dropout = 0.0
    c.model.activation_dropout = 0.0
    c.model.dtype = "float32"
    c.model.remat = "none"

    c.data = ml_collections.ConfigDict()
    c.data.mode = "bucket"
    c.data.global_batch_size = 64
    c.data.max_length = 128
    c.data.tokens_per_batch = 2048
    c.data.bucket_boundaries = (16, 32, 64)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 3e-3  # a short CPU run: high peak, short warmup (pre-LN is stable)
    c.optim.schedule = "inverse_sqrt"
    c.optim.warmup_steps = 100
    c.optim.end_learning_rate_ratio = 0.0
    c.optim.power = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    c.optim.grad_accum_steps = 1
    c.optim.frozen = ()

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 900
    c.train.log_every = 50
    c.train.progress_bar = True
    c.train.init_from = ""  # e.g. the CSR stage-1 workdir (params only, optimizer reset)

    c.eval = ml_collections.ConfigDict()
    c.eval.split = "validation"
    c.eval.every_steps = 500
    c.eval.num_batches = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500
    c.checkpoint.keep_last = 2
    c.checkpoint.keep_every = 0
    c.checkpoint.async_save = True

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


def _stage(name: str, config, workdir: str):
    from zoo import tasks
    from zoo.train import loop

    print(f"\n=== {name}: {config.task.name}, {config.train.num_steps} steps -> {workdir}")
    task = tasks.get_task(config)
    summary = loop.train(config, workdir, task)
    return task, summary["state"].params


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
    args = ap.parse_args(argv)

    import jax

    from zoo.data import gettext

    # The baseline and CSR stage 2 train and translate with the same shapes: a persistent
    # compilation cache lets the second model reuse the first one's executables.
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    from zoo.data import tokenizer as ztok
    from zoo.metrics import translation as mt_metrics

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
        ztok.train_sentencepiece(
            spm_prefix, args.vocab_size, sentences=[s for p in pairs["train"] for s in p]
        )
    print(f"sentencepiece model: {spm_prefix}.model ({args.vocab_size} pieces)")

    def config(name: str, steps: int, init_from: str = ""):
        c = get_config(args.variant)
        c.task.name = name
        c.task.spm_model = spm_prefix + ".model"
        c.task.locale_dir = args.locale_dir
        c.task.data_dir = data_dir
        c.train.num_steps = steps
        c.train.init_from = init_from
        c.eval.every_steps = steps
        c.checkpoint.every_steps = steps
        return c

    total = args.mt_steps
    runs = {}
    mt_dir = os.path.join(args.workdir, "translation")
    runs["translation only"] = _stage("baseline", config("translation", total), mt_dir)
    csr_dir = os.path.join(args.workdir, "csr_stage1")
    _stage("CSR stage 1", config("csr", args.csr_steps), csr_dir)
    runs["CSR + translation"] = _stage(
        "CSR stage 2",
        config("translation", total - args.csr_steps, csr_dir),
        os.path.join(args.workdir, "csr_translation"),
    )

    sources = [s for s, _ in pairs["test"][: args.test_sentences]]
    references = [r for _, r in pairs["test"][: args.test_sentences]]
    results = {}
    for name, (task, params) in runs.items():
        hyps = task.translate(params, sources, beam_size=args.beam)
        results[name] = {**mt_metrics.corpus_scores(hyps, references), "samples": hyps[:3]}
    print(
        f"\n=== test split, first {len(sources)} sentences, beam {args.beam} "
        f"(total {total} updates each; {time.time() - t0:.0f} s so far)"
    )
    print(f"{'model':<20} {'BLEU':>6} {'chrF':>6}")
    for name, r in results.items():
        print(f"{name:<20} {r['bleu']:6.2f} {r['chrf']:6.2f}")
    for i in range(3):
        print(f"\n  en:  {sources[i]}\n  ref: {references[i]}")
        for name, r in results.items():
            print(f"  {name}: {r['samples'][i]}")
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump({k: {m: v for m, v in r.items()} for k, r in results.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
