"""Simulated spectra as a TFDS builder (ArrayRecord, no TensorFlow): the embedded default data.

Peptides are the tryptic digest of a protein FASTA (default: the mouse proteins shipped in
`zoo/peptide/resources/proteins.fasta`). The split is PEPTIDE-DISJOINT: each unique peptide,
identified by its residue letters with I written as L (`simulate.peptide_key`, so neither
I/L nor modifications can leak a peptide across splits), is assigned to train, validation
or test by a seeded hash of that key, so a peptide keeps its split when the pool changes
(other lengths, another FASTA holding it). Test peptide recall therefore measures de novo
sequencing of peptides the model never saw.

Spectra are drawn by cycling through a seeded shuffle of the split's peptides: validation
and test have one spectrum per peptide as long as they have enough peptides, train has
several spectra per peptide (different modifications, charge, noise). Each spectrum is
simulated (`zoo.peptide.simulate`) and preprocessed exactly as Casanovo preprocesses measured
spectra, and stored with the same features as the MGF builder (`zoo.peptide.spectra_tfds`).

Usage (generated once per parameter set, later calls reuse it):

    builder = simulated_builder("/tmp/zoo_data", num_train=20_000, max_length=12)
    test = zoo.data.load_source(builder, "test")  # test[i] -> {"mz", "intensity", ...}
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from zoo.peptide.features import spectrum_example
from zoo.peptide.residues import CASANOVO, Residues
from zoo.peptide.simulate import (
    SimulationConfig,
    embedded_fasta,
    fasta_digest,
    file_digest,
    peptide_key,
    random_tryptic_peptide,
    residue_frequencies,
    simulate,
)
from zoo.peptide.spectra import LowQualitySpectrum, PreprocessConfig, Spectrum
from zoo.peptide.spectra_tfds import spectrum_features

__all__ = [
    "DIGEST_TEST",
    "SPLITS",
    "SimulatedConfig",
    "SimulatedSpectra",
    "peptide_splits",
    "simulated_builder",
]

# TFDS warns, with the whole config printed, whenever a config is not one of the class's
# predefined ones: every parameter set here is such a config, so the warning is noise.
logging.getLogger("absl").addFilter(
    lambda r: not r.getMessage().startswith("Using custom data configuration")
)

SPLITS = ("train", "validation", "test")
# pool="random" adds a second test set: spectra of the FASTA digest's test-split peptides.
DIGEST_TEST = "test_digest"
POOLS = ("digest", "random")
# A random peptide is drawn again until its key hashes to the wanted split: ~1/fraction
# draws on average; this many would mean a fraction of ~0.
MAX_PEPTIDE_DRAWS = 10_000
# A simulated spectrum that preprocessing would drop (too few peaks left) is re-drawn, at
# most this many times; short, heavily dropped-out peptides need it now and then.
MAX_DRAWS = 20


@dataclasses.dataclass(eq=False)
class SimulatedConfig(tfds.core.BuilderConfig):
    """Parameters of the simulated data set (the name is derived from them; see `config_name`).

    num_train, num_validation, num_test: spectra per split.
    min_length, max_length: residues per peptide (inclusive; modifications do not count).
    missed_cleavages: most missed tryptic cleavage sites in a peptide.
    validation_fraction, test_fraction: share of the unique peptides held out per split.
    seed: peptide split, peptide order and every spectrum derive from it.
    fasta: protein FASTA path; "" = the embedded mouse proteins.
    pool: "digest" (the FASTA's tryptic peptides: a few thousand, seen again and again in
        training) or "random" (every spectrum a fresh random tryptic-like peptide with the
        FASTA's residue frequencies: too many to memorise; adds the split "test_digest", the
        digest's test peptides, as a second test set of real sequences).
    simulation: the spectrum simulator's knobs (charge, modification rates, noise, ...).
    preprocess: Casanovo's peak preprocessing applied before storing.
    residues: the vocabulary (tokens the peptides are written in).
    """

    num_train: int = 20_000
    num_validation: int = 1_000
    num_test: int = 1_000
    min_length: int = 6
    max_length: int = 30
    missed_cleavages: int = 1
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    fasta: str = ""
    pool: str = "digest"
    simulation: SimulationConfig = SimulationConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    residues: Residues = CASANOVO


_DATA_FIELDS = (
    "num_train",
    "num_validation",
    "num_test",
    "min_length",
    "max_length",
    "missed_cleavages",
    "validation_fraction",
    "test_fraction",
    "seed",
    "fasta",
    "pool",
    "simulation",
    "preprocess",
    "residues",
)


def _fasta_path(config: SimulatedConfig) -> str:
    return config.fasta or embedded_fasta()


def config_name(config: SimulatedConfig) -> str:
    """Readable counts, lengths and seed, plus a hash of everything else (simulator knobs,
    preprocessing, vocabulary, fractions and the FASTA's content), so parameter sets never
    share a directory."""
    rest = repr(
        (
            config.missed_cleavages,
            config.validation_fraction,
            config.test_fraction,
            file_digest(_fasta_path(config)),
            dataclasses.asdict(config.simulation),
            dataclasses.asdict(config.preprocess),
            sorted(config.residues.masses.items()),
            config.residues.replace_isoleucine,
        )
        # The digest pool's names predate `pool`; keep them (and their caches) as they were.
        + (() if config.pool == "digest" else (config.pool,))
    )
    digest = hashlib.sha256(rest.encode()).hexdigest()[:10]
    return (
        f"train{config.num_train}_val{config.num_validation}_test{config.num_test}"
        f"_len{config.min_length}-{config.max_length}_seed{config.seed}_{digest}"
    )


def _validate(config: SimulatedConfig) -> None:
    for field in ("num_train", "num_validation", "num_test"):
        if getattr(config, field) < 1:
            raise ValueError(f"{field}={getattr(config, field)}; each split needs >= 1 spectrum")
    if not 1 <= config.min_length <= config.max_length:
        raise ValueError(
            f"need 1 <= min_length <= max_length; got min_length={config.min_length}, "
            f"max_length={config.max_length}"
        )
    held_out = config.validation_fraction + config.test_fraction
    if not (0 < config.validation_fraction and 0 < config.test_fraction and held_out < 1):
        raise ValueError(
            f"validation_fraction={config.validation_fraction} and test_fraction="
            f"{config.test_fraction} must be > 0 and sum to < 1 (the rest is train)"
        )
    if config.pool not in POOLS:
        raise ValueError(f"pool={config.pool!r}; use one of {POOLS}")
    if config.pool == "random" and config.min_length < 2:
        raise ValueError(f"pool='random' needs min_length >= 2, got {config.min_length}")
    if config.seed < 0:
        raise ValueError(f"seed={config.seed} must be >= 0 (numpy SeedSequence)")
    if config.fasta and not os.path.isfile(config.fasta):
        raise FileNotFoundError(
            f"fasta={config.fasta!r} does not exist; pass a protein FASTA path, or '' for the "
            f"embedded mouse proteins"
        )


def _split_of(key: str, seed: int, validation_fraction: float, test_fraction: float) -> str:
    """Seeded hash of a peptide key -> split; independent of which other peptides exist."""
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    u = int.from_bytes(h, "big") / 2.0**64
    if u < validation_fraction:
        return "validation"
    if u < validation_fraction + test_fraction:
        return "test"
    return "train"


def peptide_splits(
    peptides: list[str], *, seed: int, validation_fraction: float, test_fraction: float
) -> dict[str, list[str]]:
    """Peptides (plain letters) per split, sorted; peptides sharing a `peptide_key` (I/L
    variants) always land in the same split."""
    out: dict[str, list[str]] = {split: [] for split in SPLITS}
    for peptide in sorted(set(peptides)):
        key = peptide_key(peptide)
        out[_split_of(key, seed, validation_fraction, test_fraction)].append(peptide)
    return out


@functools.lru_cache(maxsize=4)
def _splits_for(
    fasta: str,
    digest: str,
    missed_cleavages: int,
    min_length: int,
    max_length: int,
    allowed: frozenset[str],
    seed: int,
    validation_fraction: float,
    test_fraction: float,
) -> dict[str, list[str]]:
    del digest  # Part of the cache key only: a changed file is read again.
    peptides = fasta_digest(
        fasta, missed_cleavages=missed_cleavages, min_length=min_length, max_length=max_length
    )
    peptides = [p for p in peptides if allowed.issuperset(p)]
    return peptide_splits(
        peptides,
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
    )


def config_splits(config: SimulatedConfig) -> dict[str, list[str]]:
    """The peptide pool of each split for this config (digest of its FASTA)."""
    fasta = _fasta_path(config)
    allowed = _allowed_letters(config)
    splits = _splits_for(
        fasta,
        file_digest(fasta),
        config.missed_cleavages,
        config.min_length,
        config.max_length,
        allowed,
        config.seed,
        config.validation_fraction,
        config.test_fraction,
    )
    for split, peptides in splits.items():
        if not peptides:
            raise ValueError(
                f"{fasta}: no {split} peptides of {config.min_length}-{config.max_length} "
                f"residues; use a larger FASTA, wider lengths or larger split fractions"
            )
    return splits


def splits_of(config: SimulatedConfig) -> tuple[str, ...]:
    """The builder's splits: train, validation, test, and test_digest for pool='random'."""
    return SPLITS + ((DIGEST_TEST,) if config.pool == "random" else ())


def _allowed_letters(config: SimulatedConfig) -> frozenset[str]:
    """Unmodified residue letters the vocabulary can write (modified forms are drawn later)."""
    allowed = frozenset(t for t in config.residues.masses if len(t) == 1 and t.isalpha())
    if "C+57.021" in config.residues.masses:
        allowed |= {"C"}
    return allowed


def _random_peptides(config: SimulatedConfig, split: str, num: int) -> Iterator[str]:
    """Random tryptic-like peptides of one split: peptide i from its own Generator (seed,
    split, i, 1), drawn again until its key hashes to `split`, so the splits are disjoint
    by the same rule as the digest pool's."""
    split_index = SPLITS.index(split)
    frequencies = residue_frequencies(_fasta_path(config), _allowed_letters(config))
    fractions = (config.validation_fraction, config.test_fraction)
    for i in range(num):
        rng = np.random.default_rng([config.seed, split_index, i, 1])
        for _ in range(MAX_PEPTIDE_DRAWS):
            length = int(rng.integers(config.min_length, config.max_length + 1))
            peptide = random_tryptic_peptide(rng, length, frequencies)
            if _split_of(peptide_key(peptide), config.seed, *fractions) == split:
                break
        else:
            raise ValueError(f"no random {split} peptide in {MAX_PEPTIDE_DRAWS} draws")
        yield peptide


def _cycled(peptides: list[str], num: int, order_rng: np.random.Generator) -> Iterator[str]:
    """`num` peptides cycling through fresh seeded permutations of `peptides`."""
    perm = np.empty(0, dtype=np.int64)
    for i in range(num):
        if i % len(peptides) == 0:
            perm = order_rng.permutation(len(peptides))
        yield peptides[perm[i % len(peptides)]]


def generate_examples(config: SimulatedConfig, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (key, example) for one split; deterministic in the config.

    Digest pool (and the test_digest split): spectrum i of a split uses peptide perm[i % n]
    of that split's n peptides (a fresh seeded permutation every n spectra). Random pool:
    spectrum i has a random peptide of its own. Every spectrum has its own Generator seeded
    (seed, split, i), so any example can be regenerated alone.
    """
    split_index = splits_of(config).index(split)
    num = (config.num_train, config.num_validation, config.num_test, config.num_test)[split_index]
    if config.pool == "random" and split != DIGEST_TEST:
        peptides = _random_peptides(config, split, num)
    else:
        pool = config_splits(config)["test" if split == DIGEST_TEST else split]
        peptides = _cycled(pool, num, np.random.default_rng([config.seed, split_index]))
    for i, peptide in enumerate(peptides):
        rng = np.random.default_rng([config.seed, split_index, i])
        for draw in range(MAX_DRAWS):
            simulated = simulate(peptide, rng, config.simulation, config.residues)
            spectrum = Spectrum(
                mz=simulated.mz,
                intensity=simulated.intensity,
                precursor_mz=simulated.precursor_mz,
                precursor_charge=simulated.precursor_charge,
                peptide=config.residues.to_string(simulated.tokens),
                title=f"sim:{split}:{i}",
                index=i,
            )
            try:
                example = spectrum_example(spectrum, config.residues, config.preprocess)
            except LowQualitySpectrum as e:
                if draw == MAX_DRAWS - 1:
                    raise ValueError(
                        f"simulated {split} spectrum {i} of {peptide!r}: preprocessing dropped "
                        f"all {MAX_DRAWS} draws ({e}); lower fragment_drop_rate or "
                        f"preprocess.min_peaks, or raise noise_peaks"
                    ) from e
                continue
            break
        yield i, example


class SimulatedSpectra(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of simulated spectra; pass a `SimulatedConfig` (see `simulated_builder`)."""

    name = "zoo_simulated_spectra"
    # TFDS 4.9.10 computes code_path via `importlib_resources`, not installed on Python >= 3.9.
    code_path = epath.Path(__file__)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[SimulatedConfig]] = []  # filled below (name needs a hash)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Simulated b/y-ion spectra of tryptic peptides, preprocessed as Casanovo does; "
                "peptide-disjoint train/validation/test splits."
            ),
            features=spectrum_features(),  # the schema shared with the MGF builder
            # Keep generation order on disk so example i is the i-th generated example.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # Everything is generated locally.
        _validate(self.builder_config)
        splits = splits_of(self.builder_config)
        return {split: self._generate_examples(split=split) for split in splits}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        yield from generate_examples(self.builder_config, split)


def _make_config(**kwargs: Any) -> SimulatedConfig:
    sim_fields = {f.name for f in dataclasses.fields(SimulationConfig)}
    data = {k: v for k, v in kwargs.items() if k in _DATA_FIELDS}
    knobs = {k: v for k, v in kwargs.items() if k in sim_fields}
    unknown = set(kwargs) - set(data) - set(knobs)
    if unknown:
        raise TypeError(
            f"unknown simulated data parameters {sorted(unknown)}; known: "
            f"{sorted(_DATA_FIELDS)} and SimulationConfig fields {sorted(sim_fields)}"
        )
    if knobs:
        if "simulation" in data:
            raise TypeError("pass either simulation=SimulationConfig(...) or its fields, not both")
        data["simulation"] = SimulationConfig(**knobs)
    config = SimulatedConfig(name="unnamed", **data)
    _validate(config)
    config.name = config_name(config)
    return config


SimulatedSpectra.BUILDER_CONFIGS = [_make_config()]


def simulated_builder(data_dir: str | os.PathLike, **config: Any) -> SimulatedSpectra:
    """Prepares (once) and returns the simulated-spectra builder for these parameters.

    `config`: any `SimulatedConfig` field (num_train, max_length, seed, fasta, ...) and any
    `SimulationConfig` field (noise_peaks, oxidation_rate, ...), or simulation=... whole.
    Data lives in `data_dir/zoo_simulated_spectra/<config name>/1.0.0/` as ArrayRecord
    files. Preparing is idempotent and needs no network; in multi-process runs prepare on
    one process first.
    """
    built = _make_config(**config)
    default = SimulatedSpectra.BUILDER_CONFIGS[0]
    if built.name == default.name:
        # TFDS refuses a custom config that shares a name with a class config; use the latter.
        built = default
    builder = SimulatedSpectra(
        data_dir=os.fspath(data_dir), config=built, file_format="array_record"
    )
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        logging.info("generating %s in %s", built.name, data_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return builder
