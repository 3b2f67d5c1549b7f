"""In-process training tests share one persistent XLA compilation cache for the session.

Each in-process `zoo train` builds fresh jitted closures, so without it every run compiles
the same init and train step again (~8 s of a ~12 s tiny run on 2 CPU cores). A cached
executable is the very binary a compile would give, so bit-exact comparisons still hold.
Subprocess runs (`runner.run_train`) do not use it: they start cold, as a user's run does.
"""

from __future__ import annotations

import jax
import pytest


@pytest.fixture(scope="session", autouse=True)
def _compilation_cache(tmp_path_factory):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
