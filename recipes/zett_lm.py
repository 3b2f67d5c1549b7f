"""ZeTT on a decoder-only LM: a hypernetwork trained with the causal-LM objective (ZeTT's main
setting) on tokenizers sampled every step, for a frozen `zoo.lm` model.

Variants: tiny (tests: a few steps; set task.base), demo (this CPU). The base is a
`causal_lm` workdir (e.g. `zoo train --config recipes/lm.py:demo --workdir runs/lm_demo`) or a
`zoo convert lm` dir of a real Llama / Mistral / Qwen2 checkpoint (untied models get their
LM-head rows predicted too).

  zoo train --config recipes/zett_lm.py:demo --workdir runs/zett_lm_hn \\
      --config.task.base=runs/lm_demo
  zoo transfer --checkpoint runs/lm_demo --tokenizer de/tokenizer.json \\
      --out runs/lm_de --method hypernet --hypernet runs/zett_lm_hn
  echo "Datei" | zoo generate --checkpoint runs/lm_de

Run as a script: the hypernetwork, then the LM moved to a German byte-level BPE by the
hypernetwork, FVT and lexical initialisation, each scored on held-out German text:

  python recipes/zett_lm.py --workdir runs/zett_lm --base runs/lm_demo
"""

import argparse
import os
import sys
import time

import common
import ml_collections

from zoo import tasks
from zoo.io import modeldir
from zoo.lm.metrics import heldout_nats_per_char
from zoo.lm.model import LM
from zoo.lm.task import corpus_texts, load_tokenizer, train_bytelevel_bpe
from zoo.train import loop
from zoo.zett.lm_task import base_lm
from zoo.zett.transfer import METHODS, transfer_lm


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "demo"):
        raise ValueError(f"zett_lm variant {variant!r}; use tiny or demo")
    c = ml_collections.ConfigDict()
    c.seed = 0

    text = common.lm_task(vocab_size=0)  # where the text comes from: the LM task's keys
    c.task = ml_collections.ConfigDict()
    c.task.name = "lm_tokenizer_transfer"
    c.task.base = "runs/lm_demo"  # frozen base: `zoo convert lm` dir or causal_lm workdir
    for key in (
        "corpus",
        "text_langs",
        "locale_dir",
        "train_files",
        "validation_files",
        "data_dir",
    ):
        c.task[key] = text[key]  # the text the tokenizers are sampled from and the loss runs on
    common.zett_sampler(c.task)
    c.model = common.hypernet_model()

    c.data = ml_collections.ConfigDict()
    c.data.mode = "pad"  # fixed [batch, max_length] rows of `[bos] text [eos]` (truncated)
    c.data.global_batch_size = 32
    c.data.max_length = 64

    c.mesh = common.mesh()
    c.optim = common.optim(
        learning_rate=1e-3, warmup_steps=30, end_learning_rate_ratio=0.1, b2=0.95, eps=1e-8,
        frozen=("^base/", "scaler"),  # the base model and the fitted scalers never train
    )  # fmt: skip
    c.train = common.train(num_steps=300)
    c.eval = common.evaluation(every_steps=300, num_batches=8)
    c.checkpoint = common.checkpoint(every_steps=300, keep_last=1, async_save=False)

    if variant == "tiny":
        c.task.sample_vocab_size = 300
        c.task.identity_steps = 2
        c.task.anchor_tokens = 256
        c.model.num_layers = 1
        c.data.global_batch_size = 8
        c.data.max_length = 32
        c.optim.warmup_steps = 2
        c.train.update(num_steps=4, log_every=1, progress_bar=False)
        c.eval.update(every_steps=4, num_batches=2)
        c.checkpoint.every_steps = 4
    return c


# --------------------------------------------------------------------------- the demo


def main(argv=None) -> int:
    """Trains the hypernetwork for a trained LM, moves the LM to a German byte-level BPE with
    the hypernetwork, FVT and lexical initialisation (no training of the LM), and scores each
    on held-out German text: tokens per text and nats per character (comparable across
    tokenizers). Writes WORKDIR/results.json."""
    ap = argparse.ArgumentParser(description="ZeTT on an LM: move it to a German tokenizer")
    ap.add_argument("--workdir", default="runs/zett_lm")
    ap.add_argument("--base", default="runs/lm_demo", help="causal_lm workdir or lm model dir")
    ap.add_argument("--vocab-size", type=int, default=0, help="new BPE's ids (0: the base's)")
    ap.add_argument("--steps", type=int, default=300, help="hypernetwork updates")
    ap.add_argument("--test-texts", type=int, default=500, help="held-out German texts")
    ap.add_argument("--variant", default="demo")
    args = ap.parse_args(argv)
    common.use_compilation_cache(args.workdir)
    t0 = time.time()
    c = get_config(args.variant)
    c.task.base = args.base
    c.task.data_dir = os.path.join(args.workdir, "tfds")
    c.train.num_steps = c.eval.every_steps = c.checkpoint.every_steps = args.steps
    task = tasks.get_task(c)
    config, _ = base_lm(args.base)
    german = corpus_texts(c.task, "train")[1::2]  # gettext rows: en, de
    heldout = corpus_texts(c.task, "validation")[1::2][: args.test_texts]
    new_tok = os.path.join(args.workdir, "de_tokenizer.json")
    if not os.path.exists(new_tok):
        train_bytelevel_bpe(german, args.vocab_size or config.vocab_size).save(new_tok)
    hn_dir = os.path.join(args.workdir, "hypernet")
    print(f"\n=== hypernetwork: {args.steps} steps, a sampled tokenizer per step -> {hn_dir}")
    loop.train(c, hn_dir, task)
    models = {"original": args.base}
    for method in METHODS:
        out = os.path.join(args.workdir, f"lm_de_{method}")
        if not os.path.exists(os.path.join(out, "model.json")):
            transfer_lm(args.base, new_tok, out, method=method, hypernet_dir=hn_dir)
        models[method] = out
    summary = {}
    for name, path in models.items():
        cfg, tok_path = base_lm(path)
        params = modeldir.load_params(path)
        r = heldout_nats_per_char(
            LM(cfg), params, load_tokenizer(tok_path), heldout, max_length=256
        )
        summary[name] = {
            "nats_per_char": r["nats_per_char"],
            "tokens_per_text": r["tokens_per_text"],
        }
    keys = ("nats_per_char", "tokens_per_text")
    details = {"new_tokenizer": new_tok, "hypernet_steps": args.steps,
               "heldout_texts": len(heldout), "seconds": time.time() - t0}  # fmt: skip
    common.write_results(args.workdir, "zett_lm", summary, details, {"hypernet": hn_dir}, keys)
    common.print_table(f"ZeTT on the LM, {len(heldout)} held-out German texts", summary, keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
