"""Test-wide setup: CPU only, 8 forced host devices for in-process tests.

Tests that need another device count (1 vs 8, several processes) start
`python -m zoo.cli` in a subprocess with their own XLA_FLAGS.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """One generated-data folder for the whole session (datasets are keyed by their parameters)."""
    return str(tmp_path_factory.mktemp("tfds"))
