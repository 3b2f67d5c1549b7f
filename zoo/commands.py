"""`zoo convert` and `zoo translate`: the commands that use a trained or converted model."""

from __future__ import annotations

import json
import os
import sys

import ml_collections

SPM_NAMES = ("sentencepiece.bpe.model", "sentence.bpe.model", "spm.model")


def _find_spm(src: str) -> str | None:
    base = src if os.path.isdir(src) else os.path.dirname(src)
    return next(
        (os.path.join(base, n) for n in SPM_NAMES if os.path.exists(os.path.join(base, n))), None
    )


def convert_mbart(
    src: str,
    out: str,
    *,
    spm: str | None = None,
    style: str | None = None,
    cache_dir: str = "checkpoints",
) -> str:
    """transformers / fairseq mBART (local path, or Hub name with network) -> a zoo model dir."""
    from zoo.pretrained import mbart as pmbart
    from zoo.pretrained import modeldir

    if not os.path.exists(src) and src.count("/") == 1:
        src = pmbart.hub_download(src, cache_dir)  # says clearly when offline
    model, params = pmbart.load_mbart(src)
    config = model.config
    spm = spm or _find_spm(src)
    if style is None:
        style = "mbart50" if config.vocab_size == 250054 else "cc25"
    files = {"sentencepiece.bpe.model": spm} if spm else {}
    tokenizer = {"style": style, "spm": "sentencepiece.bpe.model" if spm else ""}
    modeldir.save(
        out,
        family="mbart",
        config=config.to_dict(),
        params=params,
        tokenizer=tokenizer,
        files=files,
    )
    return out


def translation_config(checkpoint: str, src_lang: str, tgt_lang: str):
    """The task config to translate with a model dir (`zoo convert`) or a training workdir."""
    from zoo.pretrained import modeldir

    if os.path.exists(os.path.join(checkpoint, "model.json")):
        meta = modeldir.read_meta(checkpoint)
        if meta["family"] != "mbart":
            raise ValueError(f"{checkpoint} holds a {meta['family']} model, not mbart")
        tok = meta.get("tokenizer", {})
        if not tok.get("spm"):
            raise ValueError(f"{checkpoint} has no sentencepiece model; convert again with --spm")
        c = ml_collections.ConfigDict(
            {
                "seed": 0,
                "task": {
                    "name": "translation",
                    "spm_model": os.path.join(checkpoint, tok["spm"]),
                    "tokenizer_style": tok.get("style", "cc25"),
                    "label_smoothing": 0.0,
                },
                "model": meta["config"],
            }
        )
    elif os.path.exists(os.path.join(checkpoint, "config.json")):
        with open(os.path.join(checkpoint, "config.json")) as f:
            c = ml_collections.ConfigDict(json.load(f))
        if c.task.name not in ("translation", "csr", "denoising"):
            raise ValueError(f"{checkpoint} was trained on task {c.task.name!r}, not translation")
        c.task.name = "translation"
    else:
        raise FileNotFoundError(
            f"--checkpoint {checkpoint} is neither a `zoo convert` output (model.json) nor a "
            "`zoo train` workdir (config.json)"
        )
    c.task.src_lang, c.task.tgt_lang = src_lang, tgt_lang
    return c


def translate(args) -> int:
    from tqdm import tqdm

    from zoo import tasks
    from zoo.pretrained import modeldir

    config = translation_config(args.checkpoint, args.src_lang, args.tgt_lang)
    task = tasks.get_task(config)
    tok = task.tokenizer()
    tok.lang_id(args.src_lang), tok.lang_id(args.tgt_lang)  # unknown codes: clear error now
    params = modeldir.load_params(args.checkpoint)
    stream = open(args.input) if args.input else sys.stdin
    with stream:
        lines = [line.rstrip("\n") for line in stream]
    bar = tqdm(total=len(lines), unit="sent", disable=not args.input, file=sys.stderr)
    out = task.translate(
        params,
        lines,
        beam_size=args.beam,
        length_penalty=args.length_penalty,
        max_len_a=args.max_len_a,
        max_len_b=args.max_len_b,
        num_groups=args.diverse_groups,
        diversity_strength=args.diversity,
        on_batch=bar.update,
    )
    bar.close()
    for line in out:
        print(line)
    return 0


def load_peptide_model(checkpoint: str):
    """(PeptideConfig, params, Residues, task config or None) from a `zoo convert casanovo`
    directory or a `zoo train` workdir of the denovo task."""
    from zoo.models import peptide
    from zoo.pretrained import casanovo, modeldir
    from zoo.tasks import denovo as tdenovo

    if os.path.exists(os.path.join(checkpoint, "model.json")):
        config, params, residues = casanovo.load_model_dir(checkpoint)
        return config, params, residues, None
    if os.path.exists(os.path.join(checkpoint, "config.json")):
        with open(os.path.join(checkpoint, "config.json")) as f:
            c = ml_collections.ConfigDict(json.load(f))
        if c.task.name != "denovo":
            raise ValueError(f"{checkpoint} was trained on task {c.task.name!r}, not denovo")
        config = peptide.PeptideConfig(**c.model.to_dict())
        return config, modeldir.load_params(checkpoint), tdenovo.residues_from_config(c), c
    raise FileNotFoundError(
        f"--checkpoint {checkpoint} is neither a `zoo convert casanovo` output (model.json) "
        "nor a `zoo train` workdir (config.json)"
    )


def denovo(args) -> int:
    """`zoo denovo`: MGF files -> preprocessed spectra -> predictions -> mzTab."""
    from tqdm import tqdm

    from zoo.data import mztab, spectra
    from zoo.tasks import denovo as tdenovo

    config, params, residues, task_config = load_peptide_model(args.checkpoint)
    max_peaks = int(task_config.task.max_peaks) if task_config else 150
    mode = args.mode or config.mode  # the decoder name: ar | hybrid | nar | nar_pmc
    items, reports = [], []
    for path in args.mgf:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--mgf {path} does not exist")
        found, report = spectra.read_mgf(
            path, residues=None, on_error="skip" if args.skip_bad else "raise"
        )
        reports.append((path, report))
        for s in found:
            mz, inten = spectra.preprocess_spectrum(s)
            items.append(
                (
                    s,
                    {
                        "mz": mz,
                        "intensity": inten,
                        "precursor_mz": s.precursor_mz,
                        "precursor_charge": s.precursor_charge,
                    },
                )
            )
    for path, report in reports:
        if report.total_skipped:
            print(f"zoo: {path}: {report}", file=sys.stderr)
    if not items:
        raise ValueError(f"no spectra to sequence in {args.mgf}")
    seq = tdenovo.Sequencer(
        config,
        params,
        residues,
        max_peaks=max_peaks,
        beam=args.beam,
        precursor_filter=not (args.no_precursor_filter or args.casanovo_compatible),
        casanovo_compatible=args.casanovo_compatible,
    )
    bar = tqdm(total=len(items), unit="spectrum", file=sys.stderr)
    preds = seq.predict_all(
        [e for _, e in items], mode, batch_size=args.batch_size, on_batch=bar.update
    )
    bar.close()
    psms = [tdenovo.to_psm(s, p) for (s, _), p in zip(items, preds) if p.peptide]
    mztab.write_mztab(
        args.out,
        psms,
        residues=residues,
        ms_runs=args.mgf,
        metadata={
            "checkpoint": os.path.abspath(args.checkpoint),
            "mode": mode,
            "beam": args.beam,
            "mgf": [os.path.abspath(p) for p in args.mgf],
        },
    )
    print(f"zoo: wrote {args.out}: {len(psms)} PSMs for {len(items)} spectra", file=sys.stderr)
    return 0
