"""Data layer: TFDS sources and grain pipelines (pad / bucket / pack batching)."""

from zoo.data.pipeline import (
    BatchingConfig,
    DataStats,
    bucket_batch_sizes,
    dropped_examples,
    make_dataset,
    required_multiple,
)
from zoo.data.synthetic import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    ReverseConfig,
    ReverseSequence,
    load_source,
    reverse_builder,
)

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "BatchingConfig",
    "DataStats",
    "ReverseConfig",
    "ReverseSequence",
    "bucket_batch_sizes",
    "dropped_examples",
    "load_source",
    "make_dataset",
    "required_multiple",
    "reverse_builder",
]
