"""`zoo train`: run any task of any family through the loop (`zoo compile`: `zoo.train.aot`).

The task is looked up by the caller's `get_task` (`zoo.tasks.get_task`, given by `zoo.cli`),
so this core module knows no family.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence

import jax

from zoo.train import config as zconfig
from zoo.train import loop
from zoo.train.checkpoint import PREEMPTED_EXIT_CODE
from zoo.train.task import Task

NONFINITE_EXIT_CODE = 3  # the loss became NaN/Inf; the last good checkpoint is kept

GetTask = Callable[[object], Task]


def join_distributed(coordinator: str | None, num_processes, process_id) -> None:
    """Joins a multi-process run when asked; otherwise this is a single-process run.

    Explicit: --coordinator/--num-processes/--process-id or ZOO_COORDINATOR,
    ZOO_NUM_PROCESSES, ZOO_PROCESS_ID (localhost tests; CPU collectives use gloo).
    Automatic: ZOO_DISTRIBUTED=auto lets jax.distributed.initialize() read the
    cluster itself: every worker of a Cloud TPU slice (tpu/run.sh sets it), or a
    SLURM job step with one task per GPU (gpu/slurm.sbatch).
    """
    coordinator = coordinator or os.environ.get("ZOO_COORDINATOR")
    auto = os.environ.get("ZOO_DISTRIBUTED", "").lower()
    if auto not in ("", "0", "auto"):
        raise ValueError(f"ZOO_DISTRIBUTED={auto!r}: use 'auto' (TPU slice, SLURM) or leave unset")
    if not coordinator and auto != "auto":
        return
    if jax.config.jax_platforms in ("cpu", None) or os.environ.get("JAX_PLATFORMS") == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if not coordinator:
        jax.distributed.initialize()
        return
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=int(num_processes or os.environ["ZOO_NUM_PROCESSES"]),
        process_id=int(process_id if process_id is not None else os.environ["ZOO_PROCESS_ID"]),
    )


def _with_flag_hint(get_task: GetTask, config) -> Task:
    """get_task(config); a range error that names a config key (`model.dropout=2.0 must be ...`)
    gets the flag that fixes it appended."""
    try:
        return get_task(config)
    except ValueError as e:
        key = re.match(r"([a-z_]+(?:\.[a-z_0-9]+)+)=", str(e))
        if key and key.group(1) in zconfig.all_keys(config) and "--config." not in str(e):
            raise ValueError(f"{e}; set --config.{key.group(1)}=...") from None
        raise


def train(args, overrides: Sequence[str], *, get_task: GetTask) -> int:
    """`zoo train --config RECIPE[:VARIANT] --workdir DIR [--config.key=value ...]`."""
    config = zconfig.apply_overrides(zconfig.load(args.config), overrides)
    if args.print_config:
        print(config)
        return 0
    join_distributed(args.coordinator, args.num_processes, args.process_id)
    task = _with_flag_hint(get_task, config)
    try:
        summary = loop.train(config, args.workdir, task)
    except loop.PreemptedError as e:
        print(f"zoo: preempted: {e}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except loop.NonFiniteLossError as e:
        print(f"zoo: {e}", file=sys.stderr)
        return NONFINITE_EXIT_CODE
    shown = {k: v for k, v in summary.items() if k not in ("state", "peak_flops_source")}
    print(
        f"zoo: metrics in {args.workdir}/metrics.jsonl, checkpoints in {args.workdir}/checkpoints"
    )
    print(
        "zoo: done "
        + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())
    )
    return 0
