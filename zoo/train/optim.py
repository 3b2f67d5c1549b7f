"""Optimizer: AdamW, schedules, clipping, frozen-parameter masks."""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

SCHEDULES = ("constant", "cosine", "linear", "polynomial", "inverse_sqrt")


def check(c) -> None:
    """The optimizer block's values in range (one clear line, with the flag to fix it)."""

    def number(key: str, lo: float, hi: float = math.inf, *, lo_open: bool = False) -> None:
        v = c[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < lo or (lo_open and v == lo) or v > hi:
            bound = f"above {lo}" if lo_open else f"at least {lo}"
            raise ValueError(
                f"optim.{key}={v!r} must be a finite number {bound}"
                + (f" and at most {hi}" if hi != math.inf else "")
                + f"; set --config.optim.{key}=..."
            )

    number("learning_rate", 0.0)
    number("end_learning_rate_ratio", 0.0, 1.0)
    number("power", 0.0, lo_open=True)
    number("b1", 0.0, 1.0)
    number("b2", 0.0, 1.0)
    number("eps", 0.0, lo_open=True)
    number("weight_decay", 0.0)
    number("clip_norm", 0.0)
    if type(c.warmup_steps) is not int or c.warmup_steps < 0:
        raise ValueError(
            f"optim.warmup_steps={c.warmup_steps!r} must be an integer >= 0; set "
            "--config.optim.warmup_steps=..."
        )


def make_schedule(c, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to c.learning_rate over c.warmup_steps, then c.schedule."""
    check(c)
    peak, warm = c.learning_rate, c.warmup_steps
    decay_steps = max(total_steps - warm, 1)
    end = peak * c.end_learning_rate_ratio
    if c.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif c.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=c.end_learning_rate_ratio)
    elif c.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    elif c.schedule == "polynomial":
        after = optax.polynomial_schedule(peak, end, c.power, decay_steps)
    elif c.schedule == "inverse_sqrt":
        # fairseq/Vaswani: lr = peak * sqrt(warmup / step) after warmup.
        w = max(warm, 1)
        after = lambda s: peak * jnp.sqrt(w / jnp.maximum(s + w, 1.0))  # noqa: E731
    else:
        raise ValueError(f"optim.schedule={c.schedule!r}; use one of {SCHEDULES}")
    if warm <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), after], [warm])


def param_labels(params: Any, frozen_patterns) -> Any:
    """'frozen' for every parameter whose '/'-joined path matches a pattern, else 'trained'."""
    regexes = [re.compile(p) for p in frozen_patterns]
    flat = traverse_util.flatten_dict(params, sep="/")
    labels = {k: "frozen" if any(r.search(k) for r in regexes) else "trained" for k in flat}
    if regexes and all(v == "frozen" for v in labels.values()):
        raise ValueError(
            f"optim.frozen={list(frozen_patterns)} freezes every parameter; nothing would train"
        )
    for p, r in zip(frozen_patterns, regexes):
        if not any(r.search(k) for k in flat):
            raise ValueError(
                f"optim.frozen pattern {p!r} matches no parameter; parameter paths "
                f"look like {next(iter(flat))!r}"
            )
    return traverse_util.unflatten_dict(labels, sep="/")


def make_optimizer(c, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Clip by global norm, AdamW (decay skips biases and norm scales), frozen masks."""
    schedule = make_schedule(c, total_steps)
    decay_mask = lambda p: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, x: x.ndim > 1, p
    )
    adamw = optax.adamw(
        schedule, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=decay_mask
    )
    chain = [optax.clip_by_global_norm(c.clip_norm)] if c.clip_norm else []
    tx = optax.chain(*chain, adamw)
    if c.frozen:
        frozen = tuple(c.frozen)
        tx = optax.multi_transform(
            {"trained": tx, "frozen": optax.set_to_zero()}, lambda p: param_labels(p, frozen)
        )
    return tx, schedule
