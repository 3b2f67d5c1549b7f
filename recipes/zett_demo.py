"""ZeTT on the demo mBART: train a hypernetwork, move the model to a tokenizer that fits better.

Variants: tiny (tests: a few steps; set task.base), demo (this CPU, about 10 minutes).
The base model is the translation model of `recipes/mbart_demo.py` (runs/mbart_demo/
translation, written by `make demo` just before this one).

Run as a script, this file is the third part of `make demo`: it trains a new sentencepiece
model on both sides of the training pairs with twice the base tokenizer's pieces (so that
both the English source and the German target take fewer tokens per sentence), trains the
hypernetwork on tokenizers sampled every step, transfers the model to the new tokenizer with
the hypernetwork, FVT and lexical initialisation (no training of the model itself), and
prints tokens per sentence on both sides, the held-out loss (nats per target character,
comparable across tokenizers) and chrF of each; results.json's `summary` holds them:

  python recipes/zett_demo.py --workdir runs/zett_demo

  zoo train --config recipes/zett_demo.py:demo --workdir runs/zett_hn \\
      --config.task.base=runs/mbart_demo/translation
  zoo transfer --checkpoint runs/mbart_demo/translation --tokenizer new.model \\
      --out runs/mbart_de --method hypernet --hypernet runs/zett_hn
  zoo translate --checkpoint runs/mbart_de --src-lang en_XX --tgt-lang de_DE < en.txt
"""

import argparse
import os
import sys
import time

import common
import ml_collections

from zoo import tasks
from zoo.io import modeldir
from zoo.mbart.corpus import DATA_KEYS
from zoo.mbart.metrics import corpus_scores, heldout_loss
from zoo.mbart.tasks import TranslationTask, translation_config
from zoo.mbart.tokenizer import train_sentencepiece
from zoo.mbart.translate import TranslateOptions, translate
from zoo.train import loop
from zoo.zett.transfer import METHODS, transfer


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "demo"):
        raise ValueError(f"zett_demo variant {variant!r}; use tiny or demo")
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.task = ml_collections.ConfigDict()
    c.task.name = "tokenizer_transfer"
    c.task.base = "runs/mbart_demo/translation"  # frozen base: zoo model dir or translation workdir
    c.task.src_lang = "en_XX"  # the base model's translation direction (its own loss)
    c.task.tgt_lang = "de_DE"
    c.task.corpus = "gettext"  # text the tokenizers are sampled from and the loss runs on
    c.task.locale_dir = "/usr/share/locale"  # corpus=gettext: the catalogs
    c.task.data_dir = "~/.cache/zoo/tfds"  # where the TFDS dataset is written
    c.task.src_text_lang = "en"  # the corpus's language keys (gettext: en = the msgid)
    c.task.tgt_text_lang = "de"
    common.zett_sampler(c.task)
    c.model = common.hypernet_model()

    c.data = ml_collections.ConfigDict()
    c.data.mode = "pad"  # fixed [batch, max_length] batches (the only mode this task has)
    c.data.global_batch_size = 32
    c.data.max_length = 64  # tokens per side (longer sentences are truncated)

    c.mesh = common.mesh()
    # ZeTT: 3e-4 warm-up then 6e-5 over 200k steps; a short run here.
    c.optim = common.optim(
        learning_rate=1e-3,
        warmup_steps=30,
        end_learning_rate_ratio=0.1,
        b2=0.95,
        eps=1e-8,
        frozen=("^base/", "scaler"),  # the base model and the fitted scalers never train
    )
    c.train = common.train(num_steps=200)
    c.eval = common.evaluation(every_steps=200, num_batches=8)
    c.checkpoint = common.checkpoint(every_steps=200, keep_last=1, async_save=False)

    if variant == "tiny":
        c.task.sample_vocab_size = 300
        c.task.identity_steps = 2
        c.task.anchor_tokens = 256
        c.model.num_layers = 1
        c.model.max_len = 7
        c.data.global_batch_size = 8
        c.data.max_length = 32
        c.optim.warmup_steps = 2
        c.train.num_steps = 4
        c.train.log_every = 1
        c.train.progress_bar = False
        c.eval.every_steps = 4
        c.eval.num_batches = 2
        c.checkpoint.every_steps = 4
    return c


# --------------------------------------------------------------------------- the demo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ZeTT demo: move the demo mBART to a new tokenizer")
    ap.add_argument("--workdir", default="runs/zett_demo")
    ap.add_argument("--base", default="runs/mbart_demo/translation", help="the mBART to transfer")
    ap.add_argument("--locale-dir", default="/usr/share/locale")
    ap.add_argument(
        "--vocab-size", type=int, default=4000, help="new tokenizer's pieces (en and de text)"
    )
    ap.add_argument("--steps", type=int, default=200, help="hypernetwork updates")
    ap.add_argument("--test-sentences", type=int, default=200, help="test pairs to score")
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--variant", default="demo", help="demo, or tiny (tests)")
    args = ap.parse_args(argv)

    common.use_compilation_cache(args.workdir)
    t0 = time.time()
    if not os.path.exists(os.path.join(args.base, "config.json")) and not os.path.exists(
        os.path.join(args.base, "model.json")
    ):
        raise SystemExit(
            f"zett_demo: no base model at {args.base}; run `python recipes/mbart_demo.py` "
            "first (make demo does) or pass --base"
        )
    os.makedirs(args.workdir, exist_ok=True)
    c = get_config(args.variant)
    c.task.base = args.base
    c.task.locale_dir = args.locale_dir
    c.task.data_dir = os.path.join(args.workdir, "tfds")
    c.train.num_steps = args.steps
    c.eval.every_steps = args.steps
    task = tasks.get_task(c)
    pairs = {s: task.base_task.text_pairs(s) for s in ("train", "test")}

    # The new tokenizer: both sides of the training pairs, more pieces than the base's.
    de_prefix = os.path.join(args.workdir, "new_spm")
    if not os.path.exists(de_prefix + ".model"):
        sentences = [x for pair in pairs["train"] for x in pair]
        train_sentencepiece(de_prefix, args.vocab_size, sentences=sentences)

    print(f"\n=== hypernetwork: {args.steps} steps, a sampled tokenizer per step")
    hn_dir = os.path.join(args.workdir, "hypernet")
    loop.train(c, hn_dir, task)
    print(f"(hypernetwork trained; {time.time() - t0:.0f} s so far)")

    models = {"original": args.base}
    for method in METHODS:
        out = os.path.join(args.workdir, f"mbart_new_{method}")
        if not os.path.exists(os.path.join(out, "model.json")):
            transfer(args.base, de_prefix + ".model", out, method=method, hypernet_dir=hn_dir)
        models[method] = out

    test = pairs["test"][: args.test_sentences]
    sources, references = [s for s, _ in test], [r for _, r in test]
    results = {}
    for name, path in models.items():
        mt = TranslationTask(translation_config(path, c.task.src_lang, c.task.tgt_lang))
        for key in DATA_KEYS:
            mt.config.task[key] = c.task[key]
        params = modeldir.load_params(path)
        tok = mt.tokenizer()
        lengths = {
            side: sum(len(tok.encode(x, lang)) - 2 for x in texts) / len(texts)
            for side, texts, lang in (
                ("en", sources, c.task.src_lang),
                ("de", references, c.task.tgt_lang),
            )
        }
        loss = heldout_loss(mt, params, test)
        hyps = translate(
            mt.model,
            params,
            tok,
            sources,
            src_lang=c.task.src_lang,
            tgt_lang=c.task.tgt_lang,
            options=TranslateOptions(beam=args.beam),
        )
        scores = corpus_scores(hyps, references)
        results[name] = {**lengths, **loss, "chrf": scores["chrf"], "bleu": scores["bleu"]}
    print(
        f"\n=== test split, first {len(test)} pairs, en->de, beam {args.beam} "
        f"({time.time() - t0:.0f} s in all)"
    )
    print(
        f"{'tokenizer / init':<22} {'tok/sent en':>11} {'tok/sent de':>11} "
        f"{'nats/char':>9} {'nats/tok':>8} {'chrF':>6}"
    )
    for name, r in results.items():
        label = "original" if name == "original" else f"new tokenizer, {name}"
        print(
            f"{label:<22} {r['en']:11.1f} {r['de']:11.1f} {r['nats_per_char']:9.3f} "
            f"{r['nats_per_token']:8.3f} {r['chrf']:6.2f}"
        )
    summary = {
        name: {
            "nats_per_char": r["nats_per_char"],
            "tokens_per_sentence_src": r["en"],
            "tokens_per_sentence_tgt": r["de"],
            "chrf": r["chrf"],
        }
        for name, r in results.items()
    }
    details = {
        "per_model": results,
        "new_tokenizer": de_prefix + ".model",
        "new_tokenizer_pieces": args.vocab_size,
        "hypernet_steps": args.steps,
        "test_pairs": len(test),
        "seconds": time.time() - t0,
    }
    keys = ("nats_per_char", "tokens_per_sentence_src", "tokens_per_sentence_tgt", "chrf")
    common.write_results(args.workdir, "zett_demo", summary, details, {"hypernet": hn_dir}, keys)
    common.print_table(f"ZeTT, {len(test)} test pairs (results.json, summary.png)", summary, keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
