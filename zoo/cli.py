"""`zoo train | compile | convert | translate | generate | transfer | spm | denovo | calibrate |
plot`."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

from zoo import tasks
from zoo.lm.convert import main as convert_lm
from zoo.lm.generate import GenerateOptions
from zoo.lm.generate import main as generate
from zoo.mbart.convert import main as convert_mbart
from zoo.mbart.tokenizer import main as spm
from zoo.mbart.translate import TranslateOptions
from zoo.mbart.translate import main as translate
from zoo.peptide import denovo_cli
from zoo.peptide.casanovo import main as convert_casanovo
from zoo.peptide.denovo_cli import main as denovo
from zoo.train.aot import main as compile_recipe
from zoo.train.main import train
from zoo.train.plot import main as plot
from zoo.zett.transfer import METHODS as TRANSFER_METHODS
from zoo.zett.transfer import main as transfer

# `zoo convert FAMILY`: the converter each family name runs.
CONVERTERS = {"mbart": convert_mbart, "casanovo": convert_casanovo, "lm": convert_lm}

# Commands that take `--config.key=value` overrides after their own flags.
_TAKES_OVERRIDES = ("train", "compile")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a recipe; rerun the same command to resume")
    p.add_argument("--config", required=True, help="recipes/NAME.py[:VARIANT]")
    p.add_argument("--workdir", help="run folder; rerunning with the same one resumes")
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    p.add_argument("--coordinator", help="host:port of process 0 (multi-process runs)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.set_defaults(func=functools.partial(train, get_task=tasks.get_task))

    p = sub.add_parser(
        "compile",
        help="AOT-compile a recipe's train step for a Cloud TPU "
        "topology (no TPU needed; needs the `tpu` extra)",
    )
    p.add_argument("--config", required=True, help="recipes/NAME.py[:VARIANT]")
    p.add_argument("--topology", required=True, help="e.g. v5e:2x4, v4:2x2x1, v5p:2x2x1, v6e:2x4")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=functools.partial(compile_recipe, get_task=tasks.get_task))

    p = sub.add_parser("convert", help="import a pretrained checkpoint into a zoo model dir")
    p.add_argument("family", choices=sorted(CONVERTERS, reverse=True))
    p.add_argument(
        "src",
        help="mbart: transformers dir, fairseq model.pt, or a Hub name (network); "
        "casanovo: a Casanovo 5 .ckpt; lm: a transformers Llama / Mistral / Qwen2 dir",
    )
    p.add_argument("out", help="output directory (must not hold a model already)")
    p.add_argument("--spm", help="sentencepiece model (default: found beside SRC)")
    p.add_argument("--tokenizer-style", choices=["cc25", "mbart50"])
    p.add_argument("--cache-dir", default="checkpoints", help="where Hub downloads go")
    p.set_defaults(func=lambda args: CONVERTERS[args.family](args))

    t = TranslateOptions()
    p = sub.add_parser("translate", help="translate lines from stdin or --input")
    p.add_argument("--checkpoint", required=True, help="zoo model dir or `zoo train` workdir")
    p.add_argument("--src-lang", required=True, help="e.g. en_XX")
    p.add_argument("--tgt-lang", required=True, help="e.g. de_DE")
    p.add_argument("--input", help="a file of sentences, one per line (default: stdin)")
    p.add_argument("--beam", type=int, default=t.beam)
    p.add_argument("--length-penalty", type=float, default=t.length_penalty)
    p.add_argument(
        "--max-len-a", type=float, default=t.max_len_a, help="max length = a*src_len + b"
    )
    p.add_argument("--max-len-b", type=int, default=t.max_len_b)
    p.add_argument(
        "--diverse-groups", type=int, default=t.diverse_groups, help="> 1: diverse beam search"
    )
    p.add_argument(
        "--diversity", type=float, default=t.diversity, help="Hamming diversity strength"
    )
    p.set_defaults(func=translate)

    g = GenerateOptions()
    p = sub.add_parser(
        "generate",
        help="continue prompts (stdin, one per line) with a decoder-only LM, streaming",
    )
    p.add_argument(
        "--checkpoint", required=True,
        help="transformers Llama/Mistral/Qwen2 dir, zoo lm model dir or `zoo train` workdir",
    )  # fmt: skip
    p.add_argument("--tokenizer", help="tokenizer.json (default: the one in --checkpoint)")
    p.add_argument("--max-new-tokens", type=int, default=g.max_new_tokens)
    p.add_argument(
        "--temperature", type=float, default=g.temperature, help="0: greedy; > 0: sampling"
    )
    p.add_argument("--top-k", type=int, default=g.top_k, help="sampling: k best tokens (0: all)")
    p.add_argument("--top-p", type=float, default=g.top_p, help="sampling: nucleus mass")
    p.add_argument("--beam", type=int, default=g.beam, help="> 1: beam search (printed at end)")
    p.add_argument("--length-penalty", type=float, default=g.length_penalty)
    p.add_argument("--seed", type=int, default=g.seed, help="sampling's PRNG seed")
    p.set_defaults(func=generate)

    p = sub.add_parser(
        "transfer", help="switch a model to a new tokenizer (ZeTT hypernetwork, FVT or lexical)"
    )
    p.add_argument("--checkpoint", required=True, help="zoo mBART model dir or `zoo train` workdir")
    p.add_argument(
        "--tokenizer", required=True, help="new tokenizer: sentencepiece .model or tokenizer.json"
    )
    p.add_argument("--out", required=True, help="model dir to write (with the new tokenizer)")
    p.add_argument("--method", default="hypernet", choices=list(TRANSFER_METHODS))
    p.add_argument("--hypernet", help="hypernet: workdir of a tokenizer_transfer `zoo train` run")
    p.set_defaults(func=transfer)

    p = sub.add_parser("spm", help="train a sentencepiece model (mBART layout) on text files")
    p.add_argument("--input", nargs="+", required=True, help="text files, one sentence a line")
    p.add_argument("--model-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"])
    p.set_defaults(func=spm)

    p = sub.add_parser(
        "denovo", help="sequence peptides from MGF / mzML / mzXML spectra, write mzTab"
    )
    denovo_cli.add_arguments(p)
    p.set_defaults(func=denovo)

    p = sub.add_parser(
        "calibrate", help="fit a de novo model's PSM confidence on annotated spectra"
    )
    denovo_cli.add_arguments(p, calibrate=True)
    p.set_defaults(func=denovo_cli.calibrate_main)

    p = sub.add_parser("plot", help="learning curves of training runs (overlaid) as a PNG")
    p.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="run folders (metrics.jsonl)")
    p.add_argument("--out", help="PNG path; default WORKDIR/learning_curves.png for one run, "
                   "./learning_curves.png for several")  # fmt: skip
    p.add_argument("--labels", help="comma-separated legend names, one per WORKDIR")
    p.add_argument("--title", help="figure title")
    p.set_defaults(func=plot)
    return parser


def _quiet_logs() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):  # the bare handler importing orbax installs
        if type(handler) is logging.StreamHandler and handler.formatter is not None:
            if handler.formatter._fmt == logging.BASIC_FORMAT:
                root.removeHandler(handler)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        handler = logging.StreamHandler()  # stderr
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # TFDS warns on every load of a dataset whose parameters are not a predefined config;
    # ours (each family's builders) are parameterised on purpose.
    logging.getLogger("absl").addFilter(
        lambda r: "Using custom data configuration" not in r.getMessage()
    )


def main(argv=None) -> int:
    _quiet_logs()
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train" and not args.workdir and not args.print_config:
        parser.error("train needs --workdir DIR (rerunning with the same DIR resumes)")
    try:
        if args.command in _TAKES_OVERRIDES:
            return args.func(args, extra)
        if extra:
            raise ValueError(f"unrecognised arguments {extra}")
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        if os.environ.get("ZOO_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"zoo: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
