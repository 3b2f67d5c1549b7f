"""Shared fixtures: one small reverse-task dataset per session, and one config per mode."""

import pytest

from zoo.data import BatchingConfig, load_source
from zoo.smoke.data import reverse_builder

VOCAB_SIZE = 16
MIN_LENGTH = 2
MAX_LENGTH = 12
NUM_TRAIN = 300
NUM_VALIDATION = 40

# Small batches so that an epoch has many batches and resuming crosses epoch boundaries.
# batch_multiple=2 in bucket mode keeps bucket batch sizes equal for 1 and 2 processes.
CONFIGS = {
    "pad": BatchingConfig("pad", global_batch_size=8, max_length=MAX_LENGTH),
    "bucket": BatchingConfig(
        "bucket", tokens_per_batch=96, bucket_boundaries=(4, 8, MAX_LENGTH), batch_multiple=2
    ),
    "pack": BatchingConfig("pack", global_batch_size=4, max_length=2 * MAX_LENGTH),
}


@pytest.fixture(scope="session")
def reverse_data(tmp_path_factory):
    return reverse_builder(
        tmp_path_factory.mktemp("tfds"),
        vocab_size=VOCAB_SIZE,
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
        num_train=NUM_TRAIN,
        num_validation=NUM_VALIDATION,
        seed=0,
    )


@pytest.fixture(scope="session")
def train_source(reverse_data):
    return load_source(reverse_data, "train")


@pytest.fixture(params=sorted(CONFIGS))
def batching(request) -> BatchingConfig:
    return CONFIGS[request.param]
