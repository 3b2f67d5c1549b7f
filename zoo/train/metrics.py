"""Metrics you can watch: metrics.jsonl, TensorBoard, a progress bar, MFU."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tensorboardX import SummaryWriter
from tqdm import tqdm

from zoo.io.paths import as_path, is_remote

# Dense peak FLOP/s per device (chip) for the compute dtype, from vendor spec sheets.
# TPU figures are bf16 (f32 matmuls run through bf16 passes on the MXU; we use the
# same peak). GPU figures are dense tensor-core rates (f32 = TF32 tensor cores).
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "tpu v4": {"bfloat16": 275e12, "float32": 275e12},
    "tpu v5 lite": {"bfloat16": 197e12, "float32": 197e12},  # v5e
    "tpu v5e": {"bfloat16": 197e12, "float32": 197e12},
    "tpu v5p": {"bfloat16": 459e12, "float32": 459e12},
    "tpu v5": {"bfloat16": 459e12, "float32": 459e12},  # v5p reports "TPU v5"
    "tpu v6 lite": {"bfloat16": 918e12, "float32": 918e12},  # v6e (Trillium)
    "tpu v6e": {"bfloat16": 918e12, "float32": 918e12},
    "h100": {"bfloat16": 989e12, "float32": 494e12},
    "h200": {"bfloat16": 989e12, "float32": 494e12},
    "a100": {"bfloat16": 312e12, "float32": 156e12},
}

# HBM per chip (a v4 chip appears as two JAX devices when compiling for a topology).
HBM_BYTES: dict[str, float] = {
    "v4": 32 * 2**30,
    "v5e": 16 * 2**30,
    "v5p": 95 * 2**30,
    "v6e": 32 * 2**30,
}

_cpu_peak_cache: dict[str, float] = {}


def measure_cpu_matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    """Best-of-N f32 matmul rate of this CPU device (all its cores), FLOP/s."""
    if "f32" in _cpu_peak_cache:
        return _cpu_peak_cache["f32"]
    dev = jax.local_devices(backend="cpu")[0]
    a = jax.device_put(jnp.ones((n, n), jnp.float32), dev)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    _cpu_peak_cache["f32"] = 2 * n**3 / best
    return _cpu_peak_cache["f32"]


def device_peak_flops(device=None, dtype: str = "float32") -> tuple[float, str]:
    """(peak FLOP/s of one device for `dtype`, where the figure comes from)."""
    device = device or jax.devices()[0]
    kind = device.device_kind.lower()
    if device.platform == "cpu":
        # Forced host devices share the same cores: one device's share of the machine.
        n = max(len(jax.local_devices()), 1)
        return measure_cpu_matmul_flops() / n, "measured f32 matmul on this CPU"
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key in kind:
            return PEAK_FLOPS[key].get(dtype, PEAK_FLOPS[key]["bfloat16"]), f"spec sheet ({key})"
    return float("nan"), f"unknown device kind {device.device_kind!r}"


def complete_rows(text: str, through_step: int) -> str:
    """The lines of a metrics.jsonl text that are whole JSON rows of steps <= through_step.

    A torn last line (a crash mid-write) goes, and so do the rows of steps after the
    checkpoint a run resumes from: those steps run again and write their rows anew."""
    kept = []
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        step = row.get("step") if isinstance(row, dict) else None
        if isinstance(step, int) and step <= through_step:
            kept.append(line)
    return "".join(kept)


def parse_rows(text: str) -> list[dict[str, Any]]:
    """The whole JSON rows of a metrics.jsonl text that have an integer `step` (a torn or
    foreign line is skipped)."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def _largest(text: str, key: str) -> float:
    """The largest finite `key` in a metrics.jsonl text (0 when none)."""
    values = [r.get(key) for r in parse_rows(text)]
    finite = [float(w) for w in values if isinstance(w, (int, float)) and math.isfinite(w)]
    return max(finite, default=0.0)


def _append(path: str, data: bytes) -> None:
    """Appends `data` whole or not at all: a failed write (disk full) is cut back off."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:  # unbuffered: each os.write lands in the file (or raises)
                view = view[os.write(fd, view) :]
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


class MetricsWriter:
    """Appends JSON lines to WORKDIR/metrics.jsonl and scalars to TensorBoard (process 0).

    With `start_step` (the step a run starts or resumes from) the existing file is first
    rewritten, atomically, to its complete rows of steps <= start_step, so a redone step
    replaces its rows instead of repeating them. Each row is appended whole or not at all.
    WORKDIR may be gs://...: object stores cannot append, so there the file is
    rewritten whole at each write (rows are small and come every log_every steps).
    """

    def __init__(self, workdir: str, enabled: bool = True, start_step: int | None = None):
        self.enabled = enabled
        self.remote = is_remote(workdir)
        self.path = as_path(workdir) / "metrics.jsonl"
        self._text = ""
        self._tb = None
        # Every row gets `wall_time`: seconds of this run's training so far, counted on
        # from the last kept row when a run resumes (learning curves against time).
        self._clock_start = time.perf_counter()
        self._wall_offset = 0.0
        self.train_seconds = 0.0  # the kept rows' `train_seconds` (the loop counts on)
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists():
                old = self.path.read_text()
                kept = old if start_step is None else complete_rows(old, start_step)
                self._wall_offset = _largest(kept, "wall_time")
                self.train_seconds = _largest(kept, "train_seconds")
                if self.remote:  # a resumed run keeps its earlier rows
                    self._text = kept
                if kept != old:
                    self._replace(kept)
            self._tb = SummaryWriter(os.path.join(str(workdir), "tensorboard"))

    def _replace(self, text: str) -> None:
        if self.remote:  # an object store replaces an object whole
            self.path.write_text(text)
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def elapsed(self) -> float:
        """Seconds of this run's training so far (the next row's `wall_time`): counted on
        across resumes on process 0; from this process's start elsewhere."""
        return self._wall_offset + time.perf_counter() - self._clock_start

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        for k, v in metrics.items():
            v = np.asarray(v).item() if not isinstance(v, (str, int, float)) else v
            row[k] = v
        row["wall_time"] = self.elapsed()
        line = json.dumps(row) + "\n"
        if self.remote:
            self.path.write_text(self._text + line)
            self._text += line
        else:
            _append(str(self.path), line.encode())
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and np.isfinite(v):
                self._tb.add_scalar(k, v, step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def progress_bar(total: int, initial: int, enabled: bool):
    """A live bar with ETA on stderr (tqdm); silent on processes other than 0."""
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        dynamic_ncols=True,
        file=sys.stderr,
        unit="step",
        mininterval=0.5,
        smoothing=0.1,
    )
