"""Generic data: grain pipelines, batch plans (pad / bucket / pack), sources, prefetching.

Part of the core: nothing here knows a model family. A family's datasets (text corpora,
spectra, simulated data) live in its folder and hand this layer random-access sources of
examples; `make_dataset` batches them with deterministic, per-process, resumable plans.
"""

from zoo.data.pipeline import (
    BatchingConfig,
    DataStats,
    bucket_batch_sizes,
    dropped_examples,
    make_dataset,
    make_fixed_dataset,
    required_multiple,
)
from zoo.data.sources import load_source, scan_shared

__all__ = [
    "BatchingConfig",
    "DataStats",
    "bucket_batch_sizes",
    "dropped_examples",
    "load_source",
    "make_dataset",
    "make_fixed_dataset",
    "required_multiple",
    "scan_shared",
]
