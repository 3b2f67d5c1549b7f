"""`zoo denovo`: peak files (MGF, mzML, mzXML) -> preprocessed spectra -> peptides -> mzTab.

    zoo denovo --checkpoint casanovo_v5 --spectra run1.mzML run2.mgf --out results.mztab
    zoo denovo --checkpoint casanovo_v5 --spectra annotated.mgf --out r.mztab --evaluate

Settings come from, in increasing precedence: the defaults (Casanovo 5.2.1's config.yaml
values: `DenovoSettings`), a Casanovo-style YAML file (`--config`, Casanovo's own
config.yaml keys where they mean the same: `CASANOVO_KEYS`; its other keys are ignored), and
the flags. The decoding rules default to Casanovo 5.2.1's for a `zoo convert casanovo` model
(so converted weights give Casanovo's peptides) and to zoo's for a model trained here;
`--rules` asks for others.

A run never stops for one spectrum: spectra that preprocessing rejects (too few peaks,
charge outside 1..max_charge, nothing left in the m/z range) are skipped and counted per
reason, as Casanovo drops them, and summarised per file at the end. A malformed record is
an error naming the file, spectrum and field (or, with --skip-bad, a counted skip).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from zoo.peptide import calibration, features, mztab, peakfiles
from zoo.peptide.metrics import evaluate, peptide_matches
from zoo.peptide.sequence import DEFAULTS, Sequencer, empty_prediction, load_model, to_psm
from zoo.peptide.spectra import LowQualitySpectrum, MgfReport, PreprocessConfig

RULES = ("auto", "casanovo", "zoo", "zoo-no-filter")
_MAX_CONFIG_BYTES = 1 << 20


@dataclasses.dataclass
class DenovoSettings:
    """Every setting that shapes `zoo denovo`'s output (all written to the mzTab)."""

    rules: str = "auto"  # auto: casanovo for a converted Casanovo model, zoo otherwise
    beam: int = DEFAULTS.beam
    top_match: int = 1  # PSMs per spectrum, best first (Casanovo's top_match)
    min_length: int = DEFAULTS.min_length
    tolerance_ppm: float = DEFAULTS.tolerance_ppm
    batch_size: int = DEFAULTS.batch_size
    peak_bucket: int = DEFAULTS.peak_bucket
    # Casanovo 5.2.1's preprocessing (PreprocessConfig's defaults).
    min_mz: float = PreprocessConfig.min_mz
    max_mz: float = PreprocessConfig.max_mz
    min_intensity: float = PreprocessConfig.min_intensity
    remove_precursor_tol: float = PreprocessConfig.remove_precursor_tol
    n_peaks: int = PreprocessConfig.n_peaks
    min_peaks: int = PreprocessConfig.min_peaks
    max_charge: int = PreprocessConfig.max_charge

    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig(
            min_mz=self.min_mz,
            max_mz=self.max_mz,
            remove_precursor_tol=self.remove_precursor_tol,
            min_intensity=self.min_intensity,
            n_peaks=self.n_peaks,
            min_peaks=self.min_peaks,
            max_charge=self.max_charge,
        )


# Casanovo config.yaml key -> DenovoSettings field (same meaning, same unit).
CASANOVO_KEYS = {
    "n_beams": "beam",
    "top_match": "top_match",
    "min_peptide_len": "min_length",
    "precursor_mass_tol": "tolerance_ppm",
    "predict_batch_size": "batch_size",
    "min_mz": "min_mz",
    "max_mz": "max_mz",
    "min_intensity": "min_intensity",
    "remove_precursor_tol": "remove_precursor_tol",
    "n_peaks": "n_peaks",
    "max_charge": "max_charge",
}
# CLI flag (argparse dest) -> DenovoSettings field.
FLAGS = {
    "rules": "rules",
    "beam": "beam",
    "top_match": "top_match",
    "min_length": "min_length",
    "tolerance_ppm": "tolerance_ppm",
    "batch_size": "batch_size",
    "peak_bucket": "peak_bucket",
    "min_mz": "min_mz",
    "max_mz": "max_mz",
    "min_intensity": "min_intensity",
    "remove_precursor_tol": "remove_precursor_tol",
    "n_peaks": "n_peaks",
    "min_peaks": "min_peaks",
    "max_charge": "max_charge",
}


def add_arguments(p, calibrate: bool = False) -> None:
    """`zoo denovo`'s flags (defaults None: a flag given overrides --config and defaults);
    `zoo calibrate` takes the same but writes a calibration instead of an mzTab."""
    d = DenovoSettings()
    p.add_argument("--checkpoint", required=True, help="`zoo convert casanovo` dir or a workdir")
    p.add_argument(
        "--spectra",
        "--mgf",
        dest="spectra",
        nargs="+",
        required=True,
        help="peak files: MGF, mzML or mzXML (the format is read from the content)",
    )
    if calibrate:
        p.add_argument(
            "--out", help=f"calibration file to write (default CHECKPOINT/{calibration.FILENAME})"
        )
    else:
        p.add_argument("--out", required=True, help="mzTab file to write")
    p.add_argument("--mode", choices=["ar", "nar", "nar_pmc", "hybrid"], help="default: model's")
    p.add_argument("--config", help="Casanovo-style YAML of settings (Casanovo's own keys)")
    p.add_argument(
        "--rules",
        choices=RULES,
        help="AR decoding rules: casanovo (5.2.1's, quirks included), zoo (constraints and "
        "Casanovo 4's precursor filter), zoo-no-filter; default auto: casanovo for a "
        "converted Casanovo model, zoo for one trained with zoo",
    )
    p.add_argument(
        "--casanovo-compatible", action="store_true", help="the same as --rules casanovo"
    )
    p.add_argument(
        "--no-precursor-filter", action="store_true", help="the same as --rules zoo-no-filter"
    )
    p.add_argument("--beam", type=int, help=f"AR beams (Casanovo's n_beams; {d.beam})")
    p.add_argument(
        "--top-match", type=int, help="PSMs per spectrum, best first (Casanovo's top_match; 1)"
    )
    p.add_argument("--min-length", type=int, help=f"shortest peptide, AR ({d.min_length})")
    p.add_argument("--tolerance-ppm", type=float, help=f"precursor tolerance ({d.tolerance_ppm})")
    p.add_argument("--batch-size", type=int, help=f"spectra per model call ({d.batch_size})")
    p.add_argument(
        "--peak-bucket",
        type=int,
        help="pad a batch's peaks to a multiple of this (spectra sorted by peaks); 0 = max "
        f"({d.peak_bucket})",
    )
    for flag, help_ in (
        ("--min-mz", f"preprocessing: lowest fragment m/z kept ({d.min_mz})"),
        ("--max-mz", f"preprocessing: highest fragment m/z kept ({d.max_mz})"),
        ("--min-intensity", f"preprocessing: relative intensity floor ({d.min_intensity})"),
        (
            "--remove-precursor-tol",
            f"preprocessing: Da around the precursor removed ({d.remove_precursor_tol})",
        ),
    ):
        p.add_argument(flag, type=float, help=help_)
    for flag, help_ in (
        ("--n-peaks", f"preprocessing: most intense peaks kept ({d.n_peaks})"),
        ("--min-peaks", f"preprocessing: fewer peaks left: spectrum skipped ({d.min_peaks})"),
        ("--max-charge", f"preprocessing: higher charge: spectrum skipped ({d.max_charge})"),
    ):
        p.add_argument(flag, type=int, help=help_)
    p.add_argument("--skip-bad", action="store_true", help="skip (and count) malformed spectra")
    if calibrate:
        return
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="annotated input: print and write (OUT.metrics.json) AA precision / AA recall / "
        "peptide recall per file and overall, and plot precision vs coverage "
        "(OUT.precision_coverage.png) with the 1%% and 5%% false-peptide cuts",
    )


def read_config(path: str) -> dict:
    """The settings a Casanovo-style YAML file gives, as DenovoSettings fields."""
    import yaml

    if os.path.getsize(path) > _MAX_CONFIG_BYTES:
        raise ValueError(f"--config {path}: larger than 1 MiB; a settings file is small")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)  # plain data only: no tags, no code
        except yaml.YAMLError as e:
            raise ValueError(f"--config {path}: not YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: a mapping of settings, not {type(data).__name__}")
    out = {}
    fields = {f.name: f for f in dataclasses.fields(DenovoSettings)}
    for key, value in data.items():
        name = CASANOVO_KEYS.get(key, key if key in fields else None)
        if name is None:
            continue  # Casanovo's training / model keys: not about sequencing
        if key == "isotope_error_range" or name not in fields:
            continue
        kind = type(getattr(DenovoSettings(), name))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            raise ValueError(
                f"--config {path}: {key}: {value!r} is not a {kind.__name__}; fix the value "
                f"or pass --{name.replace('_', '-')}"
            )
        out[name] = value
    iso = data.get("isotope_error_range")
    if iso is not None and list(iso) != [0, 1]:
        raise ValueError(
            f"--config {path}: isotope_error_range {iso}: zoo's precursor test allows "
            "isotopes 0 and 1 only; use [0, 1]"
        )
    return out


def resolve_settings(args) -> DenovoSettings:
    values = read_config(args.config) if getattr(args, "config", None) else {}
    for dest, name in FLAGS.items():
        v = getattr(args, dest, None)
        if v is not None:
            values[name] = v
    if getattr(args, "casanovo_compatible", False):
        values["rules"] = "casanovo"
    if getattr(args, "no_precursor_filter", False):
        values["rules"] = "zoo-no-filter"
    s = DenovoSettings(**values)
    for name in ("beam", "top_match", "min_length", "batch_size", "n_peaks", "max_charge"):
        if getattr(s, name) < 1:
            flag = name.replace("_", "-")
            raise ValueError(f"--{flag} {getattr(s, name)} must be >= 1")
    if s.min_peaks < 0 or s.peak_bucket < 0 or s.tolerance_ppm <= 0:
        raise ValueError("--min-peaks and --peak-bucket must be >= 0, --tolerance-ppm > 0")
    return s


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_checksum(checkpoint: str) -> str:
    """sha256 over the checkpoint's files (relative path and content), in name order."""
    root = Path(checkpoint)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and "tensorboard" not in q.parts):
        if p.suffix in (".png", ".jsonl", ".lock") or p.name == calibration.FILENAME:
            continue  # a workdir's pictures, metrics, lock and calibration are not the model
        h.update(str(p.relative_to(root)).encode() + b"\0" + file_sha256(str(p)).encode())
    return h.hexdigest()


def zoo_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("zoo")
    except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        return "unknown"


def sequence_files(args, *, annotated: bool):
    """Reads, preprocesses and sequences `args.spectra` as the flags say -> (items
    [(path, Spectrum, example)], predictions, run info). Per file, what was read, dropped by
    preprocessing and skipped is printed to stderr."""
    settings = resolve_settings(args)
    config, params, residues, task_config = load_model(args.checkpoint)
    converted = task_config is None  # a `zoo convert casanovo` model dir
    rules = settings.rules if settings.rules != "auto" else ("casanovo" if converted else "zoo")
    max_peaks = int(task_config.task.max_peaks) if task_config else DEFAULTS.max_peaks
    mode = args.mode or config.mode
    prep = settings.preprocess_config()
    on_error = "skip" if args.skip_bad else "raise"

    paths = [os.path.abspath(p) for p in args.spectra]
    for given, path in zip(args.spectra, paths):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--spectra {given} does not exist")
    if len(set(paths)) != len(paths):
        raise ValueError("--spectra lists a file twice; pass each file once")
    items, summaries = [], []
    for path in paths:
        report, dropped = MgfReport(), MgfReport()
        for s in peakfiles.iter_spectra(
            path, residues=residues if annotated else None, on_error=on_error, report=report
        ):
            try:
                example = features.spectrum_example(s, residues=None, preprocess_config=prep)
            except LowQualitySpectrum as e:
                dropped.count(e.reason, f"{s.source}: spectrum {s.index} ({s.title}): {e}")
                continue
            items.append((path, s, example))
        summaries.append((path, report, dropped))
    for path, report, dropped in summaries:
        kept = report.read - dropped.total_skipped
        parts = [f"{report.read} MS2 spectra read, {kept} sequenced"]
        if dropped.skipped:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(dropped.skipped.items()))
            parts.append(f"{dropped.total_skipped} dropped by preprocessing ({reasons})")
        if report.skipped:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(report.skipped.items()))
            parts.append(f"{report.total_skipped} skipped ({reasons})")
        print(f"zoo: {path}: " + "; ".join(parts), file=sys.stderr)
    if not items:
        raise ValueError(
            f"no spectra to sequence in {' '.join(args.spectra)}: every spectrum was skipped "
            "(see the counts above; e.g. lower --min-peaks)"
        )

    seq = Sequencer(
        config,
        params,
        residues,
        max_peaks=max_peaks,
        beam=settings.beam,
        min_length=settings.min_length,
        tolerance_ppm=settings.tolerance_ppm,
        precursor_filter=rules == "zoo",
        casanovo_compatible=rules == "casanovo",
        peak_bucket=settings.peak_bucket,
        top_match=settings.top_match,
    )
    bar = tqdm(total=len(items), unit="spectrum", file=sys.stderr)
    tops = seq.predict_all(
        [e for _, _, e in items],
        mode,
        batch_size=settings.batch_size,
        on_batch=bar.update,
        top=True,
    )
    bar.close()
    # The best of each spectrum answers for it (evaluation, calibration); all go to the mzTab.
    preds = [t[0] if t else empty_prediction() for t in tops]
    run = {"settings": settings, "rules": rules, "mode": mode, "paths": paths, "tops": tops}
    run["residues"] = residues
    return items, preds, run


def _correct(items, preds, residues) -> np.ndarray:
    """[n] bool: each sequenced spectrum's prediction is its annotated peptide."""
    truth = [s.peptide for _, s, _ in items]
    missing = [f"{Path(p).name}: spectrum {s.index}" for (p, s, _), t in zip(items, truth) if not t]
    if missing:
        raise ValueError(
            f"annotated spectra needed (MGF SEQ=); {len(missing)} have none, e.g. "
            f"{missing[0]}; annotate them or drop the unannotated ones"
        )
    return peptide_matches(truth, [p.peptide or None for p in preds], residues=residues)


def calibrate_main(args) -> int:
    """`zoo calibrate`: fits the confidence of a model's PSMs on annotated spectra and
    stores it next to the model (CHECKPOINT/calibration.json)."""
    items, preds, run = sequence_files(args, annotated=True)
    correct = _correct(items, preds, run["residues"])
    cal = calibration.fit([p.score for p in preds], correct)
    out = args.out or args.checkpoint
    path = cal.save(out)
    cuts = ", ".join(
        f"{float(q):.0%} false: score >= {t:.4g}" if t is not None else f"{float(q):.0%}: none"
        for q, t in cal.thresholds.items()
    )
    print(f"zoo: wrote {path}: {cal.n} PSMs, {cal.n_correct} correct; {cuts}", file=sys.stderr)
    return 0


def main(args) -> int:
    items, preds, run = sequence_files(args, annotated=args.evaluate)
    settings, rules, paths, residues = run["settings"], run["rules"], run["paths"], run["residues"]
    cal = calibration.load(args.checkpoint) if os.path.isdir(args.checkpoint) else None
    psms = []
    for (path, s, _), ranked in zip(items, run["tops"]):
        for p in ranked:  # best first: the mzTab keeps a spectrum's PSMs in this order
            psm = to_psm(s, p)
            psm.spectrum_file = path
            psm.spectrum_ref = _spectrum_ref(s)
            if cal is not None:
                psm.confidence = float(cal.confidence([p.score])[0])
            psms.append(psm)
    metadata = {
        "zoo_version": zoo_version(),
        "checkpoint": os.path.abspath(args.checkpoint),
        "checkpoint_sha256": model_checksum(args.checkpoint),
        "mode": run["mode"],
        "rules": rules,
        "precursor_filter": rules == "zoo",
        **{k: v for k, v in dataclasses.asdict(settings).items() if k != "rules"},
        "isotope_error_range": "[0, 1]",
        "config": os.path.abspath(args.config) if args.config else "none",
        "calibration": "none"
        if cal is None
        else f"{calibration.FILENAME} (isotonic, {cal.n} PSMs; FPR cuts {cal.thresholds})",
        "spectra": [str(p) for p in paths],
    }
    mztab.write_mztab(args.out, psms, residues=residues, ms_runs=paths, metadata=metadata)
    print(f"zoo: wrote {args.out}: {len(psms)} PSMs for {len(items)} spectra", file=sys.stderr)
    if args.evaluate:
        write_evaluation(args.out, items, preds, residues, cal)
    return 0


def _spectrum_ref(s) -> str:
    """mzTab spectra_ref after `ms_run[i]:`: the native id of an mzML / mzXML spectrum
    (`controllerType=0 controllerNumber=1 scan=17`, `scan=17`), `index=N` for MGF."""
    return s.native_id or f"index={s.index}"


def write_evaluation(out: str, items, preds, residues, cal=None) -> dict:
    """--evaluate: metrics per file and overall (`zoo.peptide.metrics.evaluate`), printed and
    written to OUT.metrics.json, and the precision-coverage PNG. Every sequenced spectrum
    must carry its peptide."""
    correct = _correct(items, preds, residues)
    truth = [s.peptide for _, s, _ in items]
    guesses = [p.peptide or None for p in preds]
    scores = np.array([p.score for p in preds], np.float64)
    result = {"overall": evaluate(truth, guesses, residues=residues), "files": {}}
    result["overall"]["spectra"] = len(items)
    result["fpr_thresholds"] = {
        f"{q:g}": calibration.fpr_threshold(scores, correct, q) for q in calibration.RATES
    }
    if cal is not None:
        result["calibration_thresholds"] = cal.thresholds
    for path in dict.fromkeys(p for p, _, _ in items):
        rows = [i for i, (p, _, _) in enumerate(items) if p == path]
        m = evaluate([truth[i] for i in rows], [guesses[i] for i in rows], residues=residues)
        m["spectra"] = len(rows)
        result["files"][path] = m
    print(f"{'file':<40} {'spectra':>8} {'AA prec':>8} {'AA rec':>8} {'pep rec':>8}")
    for name, m in [*result["files"].items(), ("overall", result["overall"])]:
        label = Path(name).name if name != "overall" else "overall"
        print(
            f"{label:<40} {m['spectra']:>8} {m['aa_precision']:8.4f} {m['aa_recall']:8.4f} "
            f"{m['peptide_recall']:8.4f}"
        )
    stem = os.path.splitext(out)[0]
    png = calibration.plot_precision_coverage(
        f"{stem}.precision_coverage.png", scores, correct, cal, title=Path(out).name
    )
    with open(f"{stem}.metrics.json", "w") as f:
        json.dump(result, f, indent=1)
    print(f"zoo: wrote {stem}.metrics.json and {png}", file=sys.stderr)
    return result
