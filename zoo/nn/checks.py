"""Range checks for model configs: what a real model has, so that a config from a file (a
checkpoint's config.json, a Lightning checkpoint's hyper-parameters) that asks for something
absurd is one clear error at load time, not a crash or a 20 GB allocation later."""

from __future__ import annotations

import math
from typing import Any

# The largest sizes a real model of any zoo family has, with room to spare.
MAX_WIDTH = 1 << 16  # d_model, FFN width
MAX_VOCAB = 1 << 22  # 4M tokens
MAX_LAYERS = 512
MAX_HEADS = 1024
MAX_LENGTH = 1 << 20  # positions, decoded tokens


def int_in(name: str, value: Any, lo: int, hi: int) -> int:
    """value, which must be an int (not a bool, float or string) with lo <= value <= hi."""
    if type(value) is not int or not lo <= value <= hi:
        kind = type(value).__name__
        raise ValueError(f"{name}={value!r} ({kind}) must be an integer from {lo} to {hi}")
    return value


def fraction(name: str, value: Any) -> float:
    """A probability such as a dropout rate: a number with 0 <= value < 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name}={value!r} must be a number from 0 up to (not including) 1")
    return float(value)


def positive(name: str, value: Any, hi: float = math.inf) -> float:
    """A finite number with 0 < value <= hi (an epsilon, a scale)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= hi
    ):
        raise ValueError(f"{name}={value!r} must be a finite number above 0 (at most {hi})")
    return float(value)


def one_of(name: str, value: Any, allowed) -> Any:
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; use one of {sorted(allowed)}")
    return value
