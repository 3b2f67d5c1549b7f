"""Learning curves from metrics.jsonl: `zoo plot WORKDIR...` and the PNG a run ends with.

Every training run writes WORKDIR/learning_curves.png when it finishes (process 0). The
same figure overlays several runs: `zoo plot runs/a runs/b --out cmp.png`. Rows: the train
loss, then each eval metric the runs logged (`eval_*`); columns: against the step and
against wall time (metrics.jsonl's `wall_time`, seconds of training including eval).
matplotlib draws off-screen (Agg); nothing here changes the process's backend for others.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from zoo.train.metrics import parse_rows

FILENAME = "learning_curves.png"
# Most eval rows a figure draws (the first ones in sorted order); more make it unreadable.
MAX_EVAL_ROWS = 4


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """The whole JSON rows of WORKDIR/metrics.jsonl (a torn or foreign line is skipped)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics.jsonl; is {workdir} a training run's workdir?")
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_rows(f.read())


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float], list[float]]:
    """(steps, wall times, values) of the rows holding a finite number under `key`."""
    steps, walls, values = [], [], []
    for row in rows:
        v = row.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            steps.append(row["step"])
            walls.append(float(row.get("wall_time", math.nan)))
            values.append(float(v))
    return steps, walls, values


def plot_runs(
    workdirs: Sequence[str],
    out: str,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Overlays the runs' learning curves into one PNG at `out`; returns `out`."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # no pyplot: no global figure state

    labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
    if len(labels) != len(workdirs):
        raise ValueError(f"{len(labels)} labels for {len(workdirs)} workdirs")
    runs = [read_metrics(w) for w in workdirs]
    eval_keys = sorted({k for rows in runs for r in rows for k in r if k.startswith("eval_")})
    keys = ["loss", *eval_keys[:MAX_EVAL_ROWS]]
    fig = Figure(figsize=(11, 3.0 * len(keys) + 0.6))
    axes = fig.subplots(len(keys), 2, squeeze=False)
    for row, key in enumerate(keys):
        for i, (label, rows) in enumerate(zip(labels, runs)):
            steps, walls, values = _series(rows, key)
            if not values:
                continue
            # One colour per run in every panel, whichever runs logged the metric.
            style = {"color": f"C{i % 10}", "label": label}
            style |= {"marker": "o", "markersize": 3} if key != "loss" else {"linewidth": 1}
            axes[row][0].plot(steps, values, **style)
            axes[row][1].plot(walls, values, **style)
        axes[row][0].set_ylabel("train loss" if key == "loss" else key)
        for ax in axes[row]:
            ax.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("step")
    axes[-1][1].set_xlabel("wall time (s)")
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def main(args) -> int:
    """`zoo plot WORKDIR... [--out PNG] [--labels a,b]`."""
    labels = args.labels.split(",") if args.labels else None
    out = args.out or (
        os.path.join(args.workdirs[0], FILENAME) if len(args.workdirs) == 1 else FILENAME
    )
    plot_runs(args.workdirs, out, labels, title=args.title)
    print(out)
    return 0
