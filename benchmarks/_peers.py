"""What the side-by-side benchmarks against PyTorch share: the CPU's name, medians, the
ratio table and the ending (table, JSON on stdout, optional JSON file)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Callable


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def cpu_model() -> str:
    """lscpu's "Model name" (what BENCHMARKS.md names), else what platform knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or platform.machine()


def print_ratio_rows(rows: list[tuple[str, float, float, float | None]]) -> None:
    """(label, torch, zoo, zoo/torch or None) rows under one header."""
    print(f"{'median':<20} {'torch':>10} {'zoo (jax)':>10} {'zoo/torch':>10}")
    for label, a, b, ratio in rows:
        rs = f"{ratio:9.2f}x" if ratio is not None else ""
        print(f"{label:<20} {a:10.4g} {b:10.4g} {rs:>10}")


def finish(result: dict, print_table: Callable[[dict], None], json_path: str | None) -> None:
    """Load average at the end, the table, the JSON on stdout and in json_path if given."""
    result["load_average_at_end"] = list(os.getloadavg())
    print_table(result)
    print(json.dumps(result, indent=1))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
