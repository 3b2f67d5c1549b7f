"""Test-wide setup: CPU only, 8 forced host devices for in-process tests, one persistent XLA
compilation cache for the whole run.

Tests that need another device count (1 vs 8, several processes) start
`python -m zoo.cli` in a subprocess with their own XLA_FLAGS.

The cache: dozens of tests train the same tiny recipes, in process and in `zoo train`
subprocesses, and each would compile the same init and train step again (most of a tiny
run's seconds on 2 cores). A cached executable is the very binary a compile gives, so
bit-exact comparisons still hold. It lives in the run's pytest temp root, shared by the
xdist workers and every subprocess they start (JAX_COMPILATION_CACHE_DIR is inherited).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # .../pytest-N/popen-gwK: share pytest-N
        root = root.parent
    cache = root / "xla_cache"
    cache.mkdir(exist_ok=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory):
    """One generated-data folder for the whole session (datasets are keyed by their parameters)."""
    return str(tmp_path_factory.mktemp("tfds"))
