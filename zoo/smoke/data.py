"""Synthetic "reverse a sequence" smoke task as a TFDS builder (ArrayRecord, no TensorFlow).

Each example is a random token sequence; the model must emit it reversed:

    inputs  = [t_1, ..., t_n, EOS]
    targets = [t_n, ..., t_1, EOS]

Token ids: 0 = PAD, 1 = BOS, 2 = EOS, content tokens in [3, vocab_size). BOS is never stored;
decoders add it when they shift targets right.

Usage (data is generated once per parameter set, later calls reuse it):

    builder = reverse_builder("/tmp/zoo_data", vocab_size=32, max_length=16)
    train = zoo.data.sources.load_source(builder, "train")  # train[i] -> dict of int32 arrays
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
FIRST_CONTENT_ID = 3

FEATURES = ("inputs", "targets")


@dataclasses.dataclass(eq=False)
class ReverseConfig(tfds.core.BuilderConfig):
    """Parameters of the reverse task.

    vocab_size: total vocabulary including PAD/BOS/EOS; content tokens are [3, vocab_size).
    min_length, max_length: bounds (inclusive) on the stored length of `inputs` and `targets`,
        EOS included, so an example has between min_length-1 and max_length-1 content tokens.
        Defining it this way lets a pipeline use `max_length` directly without dropping anything.
    num_train, num_validation: number of examples per split.
    seed: the generation seed; train and validation use independent streams derived from it.
    """

    vocab_size: int = 32
    min_length: int = 2
    max_length: int = 32
    num_train: int = 10_000
    num_validation: int = 1_000
    seed: int = 0


def config_name(
    *,
    vocab_size: int,
    min_length: int,
    max_length: int,
    num_train: int,
    num_validation: int,
    seed: int,
) -> str:
    """A config name that encodes every parameter, so parameter sets never share a directory."""
    return (
        f"v{vocab_size}_len{min_length}-{max_length}_train{num_train}"
        f"_val{num_validation}_seed{seed}"
    )


def _validate(config: ReverseConfig) -> None:
    if config.vocab_size <= FIRST_CONTENT_ID:
        raise ValueError(
            f"vocab_size={config.vocab_size} leaves no content tokens (ids 0..2 are PAD/BOS/EOS); "
            f"use vocab_size >= {FIRST_CONTENT_ID + 1}"
        )
    if not 2 <= config.min_length <= config.max_length:
        raise ValueError(
            f"need 2 <= min_length <= max_length (lengths include EOS, so 2 is one content "
            f"token); got min_length={config.min_length}, max_length={config.max_length}"
        )
    for field in ("num_train", "num_validation"):
        if getattr(config, field) < 1:
            raise ValueError(f"{field}={getattr(config, field)}; each split needs >= 1 example")
    if config.seed < 0:
        raise ValueError(f"seed={config.seed} must be >= 0 (numpy SeedSequence)")


def generate_examples(
    config: ReverseConfig, split_index: int
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yields (key, example) for one split; deterministic in (config.seed, split_index).

    example["inputs"], example["targets"]: [length] int32, min_length <= length <= max_length.
    """
    rng = np.random.default_rng([config.seed, split_index])
    num = config.num_train if split_index == 0 else config.num_validation
    # Draw everything at once: per-example rng calls would dominate generation time.
    lengths = rng.integers(config.min_length, config.max_length + 1, size=num)
    content = rng.integers(
        FIRST_CONTENT_ID, config.vocab_size, size=int((lengths - 1).sum()), dtype=np.int32
    )
    eos = np.array([EOS_ID], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths - 1)])
    for i in range(num):
        tokens = content[offsets[i] : offsets[i + 1]]
        yield (
            i,
            {
                "inputs": np.concatenate([tokens, eos]),
                "targets": np.concatenate([tokens[::-1], eos]),
            },
        )


class ReverseSequence(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for the reverse task; pass a `ReverseConfig` (see `reverse_builder`)."""

    # An explicit name keeps us clear of any catalog dataset called "reverse_sequence".
    name = "zoo_reverse_sequence"
    # TFDS 4.9.10 computes code_path via `importlib_resources`, which it does not install on
    # Python >= 3.9; naming this file directly avoids that import.
    code_path = epath.Path(__file__)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[ReverseConfig]] = [
        ReverseConfig(
            name=config_name(
                vocab_size=32,
                min_length=2,
                max_length=32,
                num_train=10_000,
                num_validation=1_000,
                seed=0,
            )
        )
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo directly (not dataset_info_from_configs), which would look for metadata
        # files next to this module.
        sequence = tfds.features.Tensor(shape=(None,), dtype=np.int32)
        return tfds.core.DatasetInfo(
            builder=self,
            description="Reverse a random token sequence; both features end with EOS (id 2).",
            features=tfds.features.FeaturesDict({"inputs": sequence, "targets": sequence}),
            supervised_keys=("inputs", "targets"),
            # Keep generation order on disk so example i is the i-th generated example.
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # Everything is generated locally.
        _validate(self.builder_config)
        return {
            "train": self._generate_examples(split_index=0),
            "validation": self._generate_examples(split_index=1),
        }

    def _generate_examples(self, split_index: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        yield from generate_examples(self.builder_config, split_index)


def reverse_builder(
    data_dir: str | os.PathLike,
    *,
    vocab_size: int = 32,
    min_length: int = 2,
    max_length: int = 32,
    num_train: int = 10_000,
    num_validation: int = 1_000,
    seed: int = 0,
) -> ReverseSequence:
    """Prepares (once) and returns the reverse-task builder for these parameters.

    Data lives in `data_dir/zoo_reverse_sequence/<config name>/1.0.0/` as ArrayRecord files.
    Preparing is idempotent and needs no network. In multi-process runs, prepare on one
    process (or before launching) so two processes do not race on the same directory.
    """
    config = ReverseConfig(
        name=config_name(
            vocab_size=vocab_size,
            min_length=min_length,
            max_length=max_length,
            num_train=num_train,
            num_validation=num_validation,
            seed=seed,
        ),
        vocab_size=vocab_size,
        min_length=min_length,
        max_length=max_length,
        num_train=num_train,
        num_validation=num_validation,
        seed=seed,
    )
    _validate(config)
    default = ReverseSequence.BUILDER_CONFIGS[0]
    if config.name == default.name:
        # TFDS refuses a custom config that shares a name with a class config; use the latter.
        config = default
    builder = ReverseSequence(
        data_dir=os.fspath(data_dir), config=config, file_format="array_record"
    )
    if not builder.is_prepared():
        # TFDS's nested progress bars garble the terminal and CI logs; one log line is enough.
        tfds.disable_progress_bar()
        logging.info("generating %s in %s", config.name, data_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return builder
