"""Paths that may be local folders or object-store URLs (gs://BUCKET/path)."""

from __future__ import annotations

import os

from etils import epath


def is_remote(path) -> bool:
    """gs://, s3://, ...: no appends, no os.* calls."""
    return "://" in str(path)


def as_path(path) -> epath.Path:
    """`path` as an epath: a URL stays as it is, a local path becomes absolute."""
    return epath.Path(path if is_remote(path) else os.path.abspath(path))
