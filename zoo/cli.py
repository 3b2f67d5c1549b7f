"""`zoo train | compile | convert | translate | transfer | spm | denovo`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def _distributed(args) -> None:
    """Joins a multi-process run when asked; otherwise this is a single-process run.

    Explicit: --coordinator/--num-processes/--process-id or ZOO_COORDINATOR,
    ZOO_NUM_PROCESSES, ZOO_PROCESS_ID (localhost tests; CPU collectives use gloo).
    Automatic: ZOO_DISTRIBUTED=auto lets jax.distributed.initialize() read the
    cluster itself: every worker of a Cloud TPU slice (tpu/run.sh sets it), or a
    SLURM job step with one task per GPU (gpu/slurm.sbatch).
    """
    coordinator = args.coordinator or os.environ.get("ZOO_COORDINATOR")
    auto = os.environ.get("ZOO_DISTRIBUTED", "").lower()
    if auto not in ("", "0", "auto"):
        raise ValueError(f"ZOO_DISTRIBUTED={auto!r}: use 'auto' (TPU slice, SLURM) or leave unset")
    if not coordinator and auto != "auto":
        return
    import jax

    if jax.config.jax_platforms in ("cpu", None) or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not coordinator:
        jax.distributed.initialize()
        return
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=int(args.num_processes or os.environ["ZOO_NUM_PROCESSES"]),
        process_id=int(
            args.process_id if args.process_id is not None else os.environ["ZOO_PROCESS_ID"]
        ),
    )


def _load_config(args, extra):
    from zoo import config as zconfig

    config = zconfig.load(args.config)
    return zconfig.apply_overrides(config, extra)


def cmd_train(args, extra) -> int:
    config = _load_config(args, extra)
    if args.print_config:
        print(config)
        return 0
    _distributed(args)
    from zoo import tasks
    from zoo.train import loop
    from zoo.train.checkpoint import PREEMPTED_EXIT_CODE

    task = tasks.get_task(config)
    try:
        summary = loop.train(config, args.workdir, task)
    except loop.PreemptedError as e:
        print(f"zoo: preempted: {e}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except loop.NonFiniteLossError as e:
        print(f"zoo: {e}", file=sys.stderr)
        return 3
    shown = {k: v for k, v in summary.items() if k not in ("state", "peak_flops_source")}
    print(
        f"zoo: metrics in {args.workdir}/metrics.jsonl, checkpoints in {args.workdir}/checkpoints"
    )
    print(
        "zoo: done "
        + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    )
    return 0


def cmd_compile(args, extra) -> int:
    config = _load_config(args, extra)
    from zoo import tasks
    from zoo.train import aot

    task = tasks.get_task(config)
    t0 = time.perf_counter()
    try:
        report = aot.compile_for_topology(config, task, args.topology)
    except aot.TpuUnavailableError as e:  # libtpu missing or busy: a message, not a traceback
        print(f"zoo: error: {e}", file=sys.stderr)
        return 2
    report["compile_seconds"] = round(time.perf_counter() - t0, 1)
    print(aot.format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
    return 0 if report["fits"] else 1


def cmd_convert(args, extra) -> int:
    from zoo import commands

    if extra:
        raise ValueError(f"unrecognised arguments {extra}")
    from zoo.pretrained.mbart import HubUnavailableError

    if args.family == "casanovo":
        from zoo.pretrained import casanovo

        casanovo.convert(args.src, args.out)
        print(f"zoo: wrote {args.out} (model.json, params/; family peptide, mode ar)")
        return 0
    try:
        out = commands.convert_mbart(
            args.src, args.out, spm=args.spm, style=args.tokenizer_style, cache_dir=args.cache_dir
        )
    except HubUnavailableError as e:  # offline, or huggingface_hub not installed
        print(f"zoo: error: {e}", file=sys.stderr)
        return 2
    print(f"zoo: wrote {out} (model.json, params/, tokenizer)")
    return 0


def cmd_translate(args, extra) -> int:
    from zoo import commands

    if extra:
        raise ValueError(f"unrecognised arguments {extra}")
    return commands.translate(args)


def cmd_denovo(args, extra) -> int:
    from zoo import commands

    if extra:
        raise ValueError(f"unrecognised arguments {extra}")
    return commands.denovo(args)


def cmd_transfer(args, extra) -> int:
    from zoo.tasks import tokenizer_transfer

    if extra:
        raise ValueError(f"unrecognised arguments {extra}")
    for flag, path in (("--checkpoint", args.checkpoint), ("--tokenizer", args.tokenizer)):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{flag} {path} does not exist")
    out = tokenizer_transfer.transfer_checkpoint(
        args.checkpoint,
        args.tokenizer,
        args.out,
        method=args.method,
        hypernet_dir=args.hypernet,
    )
    print(
        f"zoo: wrote {out} ({args.method} embeddings for {args.tokenizer}); use it with "
        f"`zoo translate --checkpoint {out}` or --config.train.init_from={out}"
    )
    return 0


def cmd_spm(args, extra) -> int:
    from zoo.data.tokenizer import train_sentencepiece

    if extra:
        raise ValueError(f"unrecognised arguments {extra}")
    for f in args.input:
        if not os.path.exists(f):
            raise FileNotFoundError(f"--input {f} does not exist")
    path = train_sentencepiece(
        args.model_prefix, args.vocab_size, files=args.input, model_type=args.model_type
    )
    print(f"zoo: wrote {path} (mBART id layout: unk 0, bos 1, eos 2 in sentencepiece)")
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src", "orbax", "tensorflow_datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # TFDS warns on every load of a dataset whose parameters are not a predefined config;
    # ours (zoo/data) are parameterised on purpose.
    logging.getLogger("absl").addFilter(
        lambda r: "Using custom data configuration" not in r.getMessage()
    )
    parser = argparse.ArgumentParser(prog="zoo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a recipe; rerun the same command to resume")
    p.add_argument("--config", required=True, help="recipes/NAME.py[:VARIANT]")
    p.add_argument("--workdir", help="run folder; rerunning with the same one resumes")
    p.add_argument("--print-config", action="store_true", help="print the config and exit")
    p.add_argument("--coordinator", help="host:port of process 0 (multi-process runs)")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "compile",
        help="AOT-compile a recipe's train step for a Cloud TPU "
        "topology (no TPU needed; needs the `tpu` extra)",
    )
    p.add_argument("--config", required=True, help="recipes/NAME.py[:VARIANT]")
    p.add_argument("--topology", required=True, help="e.g. v5e:2x4, v4:2x2x1, v5p:2x2x1, v6e:2x4")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("convert", help="import a pretrained checkpoint into a zoo model dir")
    p.add_argument("family", choices=["mbart", "casanovo"])
    p.add_argument(
        "src",
        help="mbart: transformers dir, fairseq model.pt, or a Hub name (network); "
        "casanovo: a Casanovo 5 .ckpt",
    )
    p.add_argument("out", help="output directory (must not hold a model already)")
    p.add_argument("--spm", help="sentencepiece model (default: found beside SRC)")
    p.add_argument("--tokenizer-style", choices=["cc25", "mbart50"])
    p.add_argument("--cache-dir", default="checkpoints", help="where Hub downloads go")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("translate", help="translate lines from stdin or --input")
    p.add_argument("--checkpoint", required=True, help="zoo model dir or `zoo train` workdir")
    p.add_argument("--src-lang", required=True, help="e.g. en_XX")
    p.add_argument("--tgt-lang", required=True, help="e.g. de_DE")
    p.add_argument("--input", help="a file of sentences, one per line (default: stdin)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--length-penalty", type=float, default=1.0)
    p.add_argument("--max-len-a", type=float, default=1.2, help="max length = a*src_len + b")
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--diverse-groups", type=int, default=1, help="> 1: diverse beam search")
    p.add_argument("--diversity", type=float, default=0.0, help="Hamming diversity strength")
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser(
        "transfer", help="switch a model to a new tokenizer (ZeTT hypernetwork, FVT or lexical)"
    )
    p.add_argument("--checkpoint", required=True, help="zoo mBART model dir or `zoo train` workdir")
    p.add_argument(
        "--tokenizer", required=True, help="new tokenizer: sentencepiece .model or tokenizer.json"
    )
    p.add_argument("--out", required=True, help="model dir to write (with the new tokenizer)")
    p.add_argument("--method", default="hypernet", choices=["hypernet", "fvt", "lexical"])
    p.add_argument("--hypernet", help="hypernet: workdir of a tokenizer_transfer `zoo train` run")
    p.set_defaults(func=cmd_transfer)

    p = sub.add_parser("spm", help="train a sentencepiece model (mBART layout) on text files")
    p.add_argument("--input", nargs="+", required=True, help="text files, one sentence a line")
    p.add_argument("--model-prefix", required=True, help="writes PREFIX.model and PREFIX.vocab")
    p.add_argument("--vocab-size", type=int, required=True)
    p.add_argument("--model-type", default="unigram", choices=["unigram", "bpe"])
    p.set_defaults(func=cmd_spm)

    p = sub.add_parser("denovo", help="sequence peptides from MGF spectra, write mzTab")
    p.add_argument("--checkpoint", required=True, help="`zoo convert casanovo` dir or a workdir")
    p.add_argument("--mgf", nargs="+", required=True, help="MGF files")
    p.add_argument("--out", required=True, help="mzTab file to write")
    p.add_argument("--mode", choices=["ar", "nar", "nar_pmc", "hybrid"], help="default: model's")
    p.add_argument("--beam", type=int, default=1, help="AR beams (Casanovo's n_beams)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--no-precursor-filter", action="store_true", help="AR: no ppm filter or miss penalty"
    )
    p.add_argument(
        "--casanovo-compatible",
        action="store_true",
        help="AR: Casanovo 5.2.1's beam search rules, quirks included (no precursor filter)",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) malformed spectra")
    p.set_defaults(func=cmd_denovo)

    args, extra = parser.parse_known_args(argv)
    if args.command == "train" and not args.workdir and not args.print_config:
        parser.error("train needs --workdir DIR (rerunning with the same DIR resumes)")
    try:
        return args.func(args, extra)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as e:
        if os.environ.get("ZOO_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"zoo: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
