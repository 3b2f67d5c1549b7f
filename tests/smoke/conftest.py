"""The reverse-task dataset fixtures the data tests use, shared with the builder's own tests."""

from tests.data.conftest import reverse_data, train_source  # noqa: F401  (pytest fixtures)
