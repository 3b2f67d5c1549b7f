"""Peak files as a TFDS dataset (ArrayRecord, no TensorFlow): the nine-species benchmark,
MassIVE-KB, or any directory of annotated spectra. Files may be MGF, mzML or mzXML (read by
`zoo.peptide.peakfiles`, the format by content); only MGF carries peptide labels (SEQ=), so
mzML / mzXML splits hold unlabeled spectra (peptide '') for prediction and featurization.

These datasets are distributed as directories of MGF files that you download yourself, so the
directory is the builder's `manual_dir`. A split is a list of glob patterns relative to it; the
nine-species leave-one-species-out setting, for instance, maps eight species' files to train
and the ninth to test:

    builder = mgf_builder("/data/tfds", "/data/nine-species", {
        "train": ["*mouse*.mgf", "*yeast*.mgf", ...], "test": ["*human*.mgf"]})
    test = zoo.data.load_source(builder, "test")  # test[i]: {"mz": [k] f32, ...}
    mgf_stats(builder)                    # per split and file: read / skipped per reason

Each spectrum is preprocessed as Casanovo 5.2.1 does (`zoo.peptide.spectra.preprocess`). Records
that are malformed (see `zoo.peptide.spectra.iter_mgf`) or that Casanovo would drop (charge
outside 1..max_charge, too few peaks) are skipped and counted per reason; the counts are logged
and stored in the dataset's metadata, so they are reported, not lost. With on_error="raise" a
malformed record stops the build with an error naming file, record and field.

Features (shared with the simulated-spectra builder, `zoo.peptide.simulated_tfds`):
    mz [k] f32 ascending, intensity [k] f32 (preprocessed), precursor_mz f64 (exact; a 0-d
    array when read), precursor_charge i32, peptide (Casanovo notation, '' if unlabeled),
    title.
Text features come back as UTF-8 bytes (TFDS without TensorFlow).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from zoo.peptide import peakfiles
from zoo.peptide.features import spectrum_example
from zoo.peptide.residues import CASANOVO, Residues
from zoo.peptide.spectra import ON_ERROR, LowQualitySpectrum, MgfReport, PreprocessConfig

# name -> TFDS feature; wrap in tfds.features.FeaturesDict(...) in a builder's _info.
SPECTRUM_FEATURES: dict[str, tfds.features.FeatureConnector] = {
    "mz": tfds.features.Tensor(shape=(None,), dtype=np.float32),
    "intensity": tfds.features.Tensor(shape=(None,), dtype=np.float32),
    # Raw bytes: a tf.train.Example stores floats as f32 (a Scalar f64 comes back rounded to
    # f32, ~0.1 ppm at m/z 2000); read back as a 0-d f64 array, float() it.
    "precursor_mz": tfds.features.Tensor(
        shape=(), dtype=np.float64, encoding=tfds.features.Encoding.BYTES
    ),
    "precursor_charge": tfds.features.Scalar(dtype=np.int32),
    "peptide": tfds.features.Text(),
    "title": tfds.features.Text(),
}


def spectrum_features() -> tfds.features.FeaturesDict:
    """A FeaturesDict of SPECTRUM_FEATURES."""
    return tfds.features.FeaturesDict(dict(SPECTRUM_FEATURES))


@dataclasses.dataclass(eq=False)
class MgfConfig(tfds.core.BuilderConfig):
    """Which files, and how they are read.

    splits: split name -> glob patterns relative to manual_dir (e.g. {"test": ["human/*.mgf"]}).
        A file may belong to one split only.
    preprocess: Casanovo's peak preprocessing and drop rules.
    residues: the vocabulary SEQ must parse with; peptides are stored in its notation.
    on_error: "skip" (count malformed records and go on) or "raise" (stop at the first).
    """

    splits: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    preprocess: PreprocessConfig = PreprocessConfig()
    residues: Residues = CASANOVO
    on_error: str = "skip"


def resolve_splits(
    manual_dir: str | os.PathLike, splits: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """split -> sorted file paths relative to manual_dir. Raises naming the pattern and the
    directory when a pattern matches nothing, and naming both splits when a file is in two."""
    root = Path(manual_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"manual_dir {root} is not a directory; download the MGF files there (the "
            f"nine-species benchmark and MassIVE-KB are distributed as directories of MGF files)"
        )
    if not splits:
        raise ValueError("splits is empty; map at least one split to glob patterns")
    owner: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for split, patterns in splits.items():
        if isinstance(patterns, str):
            raise TypeError(f"splits[{split!r}] is the string {patterns!r}; give a list of globs")
        files: set[str] = set()
        for pattern in patterns:
            if Path(pattern).is_absolute():
                raise ValueError(
                    f"splits[{split!r}]: pattern {pattern!r} must be relative to manual_dir {root}"
                )
            matched = sorted(p for p in root.glob(pattern) if p.is_file())
            if not matched:
                present = sorted(
                    p.relative_to(root).as_posix()
                    for p in root.rglob("*")
                    if p.suffix.lower() in (".mgf", ".mzml", ".mzxml")
                )
                raise FileNotFoundError(
                    f"splits[{split!r}]: pattern {pattern!r} matches no file under {root}; peak "
                    f"files there: {present[:10]}{' ...' if len(present) > 10 else ''}"
                )
            files.update(p.relative_to(root).as_posix() for p in matched)
        for f in files:
            if f in owner and owner[f] != split:
                raise ValueError(
                    f"{f} matches the patterns of splits {owner[f]!r} and {split!r}; a file may "
                    f"belong to one split only (it would leak between them)"
                )
            owner[f] = split
        out[split] = sorted(files)
    return out


def _config_name(name: str, root: Path, files: dict[str, list[str]], config: dict[str, Any]) -> str:
    """name + a hash of every parameter and of the files' names and sizes, so a changed file
    set, vocabulary or preprocessing never reuses an old dataset directory."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for split in sorted(files):
        for f in files[split]:
            digest.update(f"{split}\0{f}\0{(root / f).stat().st_size}\0".encode())
    return f"{name}_{digest.hexdigest()[:12]}"


class MgfSpectra(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over a directory of MGF files; pass an `MgfConfig` (see `mgf_builder`)."""

    name = "zoo_mgf_spectra"
    # See zoo/smoke/data.py: avoids TFDS's importlib_resources lookup.
    code_path = epath.Path(__file__)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[MgfConfig]] = [MgfConfig(name="mgf_default")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the MGF files (e.g. the nine-species benchmark, MassIVE MSV000090982, or "
        "MassIVE-KB) into one directory and pass it as manual_dir."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Annotated MS/MS spectra from MGF files, preprocessed as Casanovo 5.2.1.",
            features=spectrum_features(),
            metadata=tfds.core.MetadataDict(),
            # Keep file order on disk: example i of a split is the i-th kept spectrum.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        config = self.builder_config
        root = Path(dl_manager.manual_dir)
        files = resolve_splits(root, config.splits)
        # Filled while the splits are written; TFDS saves the metadata after that.
        self.info.metadata["skipped"] = {}
        return {split: self._generate_examples(split, root, f) for split, f in files.items()}

    def _generate_examples(
        self, split: str, root: Path, paths: list[str]
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        config = self.builder_config
        stats: dict[str, dict] = {}
        self.info.metadata["skipped"][split] = stats
        total = MgfReport()
        for rel in paths:
            report = MgfReport()
            spectra = peakfiles.iter_spectra(  # MGF, mzML or mzXML, by content
                root / rel, residues=config.residues, on_error=config.on_error, report=report
            )
            for spectrum in spectra:
                try:
                    example = spectrum_example(spectrum, config.residues, config.preprocess)
                except LowQualitySpectrum as e:
                    report.read -= 1  # read, then dropped: count it once, as skipped
                    report.count(
                        e.reason,
                        f"{root / rel}: spectrum {spectrum.index} (TITLE={spectrum.title!r}): {e}",
                    )
                    continue
                yield f"{rel}:{spectrum.index}", example
            stats[rel] = report.to_dict()
            total.merge(report)
            if report.skipped:
                logging.warning("%s %s: %s", split, rel, report)
        logging.info("split %s: %s from %d file(s)", split, total, len(paths))
        if total.read == 0:  # TFDS would only say "No examples were yielded"
            examples = [m for messages in total.examples.values() for m in messages][:3]
            raise ValueError(
                f"split {split!r}: no spectrum kept from {paths} under {root} ({total}); "
                f"first reasons: {examples}"
            )


def mgf_builder(
    data_dir: str | os.PathLike,
    manual_dir: str | os.PathLike,
    splits: Mapping[str, Sequence[str]],
    *,
    name: str = "mgf",
    preprocess: PreprocessConfig | None = None,
    residues: Residues = CASANOVO,
    on_error: str = "skip",
) -> MgfSpectra:
    """Prepares (once per file set and parameters) and returns the MGF builder.

    Data lives in `data_dir/zoo_mgf_spectra/<name>_<hash>/1.0.0/`; the hash covers splits,
    preprocessing (default PreprocessConfig()), residues, on_error and the matched files'
    names and sizes. Needs no network. Raises FileNotFoundError naming the pattern when a
    split matches no file.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; use one of {ON_ERROR}")
    preprocess = preprocess or PreprocessConfig()
    root = Path(manual_dir).absolute()
    files = resolve_splits(root, splits)
    params = {
        "splits": {s: list(p) for s, p in splits.items()},
        "preprocess": dataclasses.asdict(preprocess),
        "residues": [dict(residues.masses), dict(residues.aliases), residues.replace_isoleucine],
        "on_error": on_error,
    }
    config = MgfConfig(
        name=_config_name(name, root, files, params),
        description=f"{name}: MGF files under {root}",
        splits={s: tuple(p) for s, p in splits.items()},
        preprocess=preprocess,
        residues=residues,
        on_error=on_error,
    )
    builder = MgfSpectra(data_dir=os.fspath(data_dir), config=config, file_format="array_record")
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        logging.info("reading MGF files under %s into %s", root, builder.data_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(
                manual_dir=os.fspath(root), try_download_gcs=False
            )
        )
    return builder


def mgf_stats(builder: tfds.core.DatasetBuilder) -> dict[str, dict[str, dict]]:
    """split -> file -> {"read", "skipped": {reason: count}, "examples": {reason: [message]}},
    as recorded when the builder was prepared."""
    return json.loads(json.dumps(dict(builder.info.metadata["skipped"])))
