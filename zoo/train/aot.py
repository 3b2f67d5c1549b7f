"""AOT-compile a recipe's train step for a Cloud TPU topology on a machine without a TPU.

`jax.experimental.topologies` + libtpu compile the exact sharded step that the
loop would run, so XLA's memory analysis tells whether the recipe fits the
slice's HBM before anyone rents it. `main` is `zoo compile`.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import topologies

from zoo.train import config as zconfig
from zoo.train import mesh as zmesh
from zoo.train import metrics as zmetrics
from zoo.train import optim as zoptim
from zoo.train import step as zstep


class TpuUnavailableError(RuntimeError):
    """libtpu is not installed, or another process on this machine holds it."""


def tpu_topology(name: str):
    """'v5e:2x4' -> a TopologyDescription (needs libtpu, not a TPU)."""
    try:  # optional (the `tpu` extra): only `zoo compile` needs it
        import libtpu  # noqa: F401
    except ImportError as e:
        raise TpuUnavailableError("zoo compile needs libtpu: pip install -e '.[tpu]'") from e

    chip = name.split(":")[0].lower()
    if chip not in zmetrics.HBM_BYTES:
        raise ValueError(
            f"--topology {name!r}: chip {chip!r} is not one of "
            f"{sorted(zmetrics.HBM_BYTES)} (write e.g. v5e:2x4 or v4:2x2x1)"
        )
    try:
        return topologies.get_topology_desc(platform="tpu", topology_name=name)
    except Exception as e:  # libtpu's message for a malformed shape is long and cryptic
        if "lockfile" in str(e):
            raise TpuUnavailableError(
                "libtpu is in use by another process on this machine (it allows one at a "
                "time; a `zoo compile` or a TPU job may be running): wait for it to finish, "
                "remove /tmp/libtpu_lockfile if no such process is left, or, on a machine "
                "with no TPU attached, set ALLOW_MULTIPLE_LIBTPU_LOAD=1"
            ) from e
        raise ValueError(
            f"--topology {name!r} is not a TPU topology libtpu knows "
            f"({type(e).__name__}); write CHIP:AxB or CHIP:AxBxC, e.g. v5e:2x4, "
            "v4:2x2x1, v5p:2x2x1, v6e:2x4"
        ) from e


def device_hbm_bytes(topology: str, num_devices: int) -> float:
    """HBM of one JAX device: the chip's HBM split over its devices (v4 shows 2 per chip)."""
    chip, _, dims = topology.partition(":")
    num_chips = math.prod(int(d) for d in dims.lower().split("x"))
    return zmetrics.HBM_BYTES[chip.lower()] * num_chips / num_devices


def abstract_batch(task, config, setup: zstep.Setup) -> dict[str, jax.ShapeDtypeStruct]:
    """The largest global batch the data produces, as sharded ShapeDtypeStructs."""
    d = config.data
    if d.mode == "bucket":
        longest = max(d.bucket_boundaries)
        multiple = zmesh.batch_parallelism(setup.mesh)
        size = max(multiple, d.tokens_per_batch // longest // multiple * multiple)
    else:
        size = d.global_batch_size
    example = task.example_batch(size)
    return {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=setup.batch_sharding[k])
        for k, v in example.items()
        if k in setup.batch_sharding
    }


def lower_step(config, task, devices) -> tuple[Any, dict[str, Any], zstep.Setup]:
    mesh = zmesh.make_mesh(config.mesh, devices)
    tx, schedule = zoptim.make_optimizer(config.optim, int(config.train.num_steps))
    setup = zstep.build(task, config, mesh, tx, schedule)
    batch = abstract_batch(task, config, setup)
    rng = jax.ShapeDtypeStruct((2,), np.uint32, sharding=zmesh.replicated(mesh))
    lowered = setup.train_step.lower(setup.abstract_state, batch, rng)
    return lowered, batch, setup


_OOM = re.compile(
    r"total memory required for (.+?) \(([\d.]+)([KMGT])\) exceeds available "
    r"HBM \(([\d.]+)([KMGT])\)"
)


def _bytes(number: str, unit: str) -> float:
    return float(number) * 2.0 ** (10 * "KMGT".index(unit) + 10)


def compile_for_topology(config, task, topology: str) -> dict[str, Any]:
    """Compiles the train step for `topology`; a report dict (see format_report)."""
    topo = tpu_topology(topology)
    lowered, batch, setup = lower_step(config, task, topo.devices)
    shapes = {k: v.shape for k, v in batch.items()}
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(setup.abstract_state.params))
    report = {
        "topology": topology,
        "devices": len(topo.devices),
        "mesh": dict(setup.mesh.shape),
        "device_kind": topo.devices[0].device_kind,
        "params": n_params,
        "batch": {k: list(v) for k, v in shapes.items()},
        "hbm_bytes": device_hbm_bytes(topology, len(topo.devices)),
        "model_flops_per_step": task.flops_per_batch(shapes),
    }
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        # The TPU compiler refuses a program that cannot fit; its message has the sizes.
        m = _OOM.search(str(e))
        if "RESOURCE_EXHAUSTED" not in str(e) or m is None:
            raise
        report.update(
            fits=False,
            what=m.group(1),
            total_bytes=_bytes(m.group(2), m.group(3)),
            hbm_bytes=_bytes(m.group(4), m.group(5)),
        )
        return report
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    total = (
        mem.argument_size_in_bytes
        + mem.output_size_in_bytes
        + mem.temp_size_in_bytes
        - mem.alias_size_in_bytes
        + mem.generated_code_size_in_bytes
    )
    report.update(
        argument_bytes=mem.argument_size_in_bytes,
        output_bytes=mem.output_size_in_bytes,
        temp_bytes=mem.temp_size_in_bytes,
        alias_bytes=mem.alias_size_in_bytes,
        code_bytes=mem.generated_code_size_in_bytes,
        total_bytes=total,
        # XLA:TPU refuses (E1000, RESOURCE_EXHAUSTED) any program that cannot fit in HBM,
        # so a successful compile is the verdict; the buffer sum is shown for information.
        fits=True,
        xla_flops_per_device=float(cost.get("flops", float("nan"))),
    )
    return report


def format_report(r: dict[str, Any]) -> str:
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    lines = [
        f"topology {r['topology']}: {r['devices']} x {r['device_kind']}, mesh {r['mesh']}",
        f"parameters: {r['params'] / 1e6:.1f}M; global batch {r['batch']}",
    ]
    if "argument_bytes" not in r:  # the compiler refused: only its totals are known
        return "\n".join(
            lines
            + [
                f"per-device memory: {r['what']} need {gib(r['total_bytes'])} of "
                f"{gib(r['hbm_bytes'])} HBM -> DOES NOT FIT (more fsdp/tensor sharding, a smaller "
                "batch, remat or bf16 would help)",
                f"FLOPs per step: model {r['model_flops_per_step']:.3e} (all devices)",
            ]
        )
    lines += [
        "per-device memory:",
        f"  arguments   {gib(r['argument_bytes'])}",
        f"  outputs     {gib(r['output_bytes'])} ({gib(r['alias_bytes'])} aliased to arguments)",
        f"  temporaries {gib(r['temp_bytes'])}",
        f"  code        {gib(r['code_bytes'])}",
        f"  sum         {gib(r['total_bytes'])}; HBM {gib(r['hbm_bytes'])} per device",
        "fits: the TPU compiler accepted it (it refuses any program that does not fit HBM)"
        + (
            "; note its reported buffer sum exceeds HBM, so the margin is thin"
            if r["total_bytes"] > r["hbm_bytes"]
            else ""
        ),
        f"FLOPs per step: model {r['model_flops_per_step']:.3e} (all devices), "
        f"XLA {r['xla_flops_per_device']:.3e} per device",
    ]
    return "\n".join(lines)


def main(args, overrides: Sequence[str], *, get_task) -> int:
    """`zoo compile --config RECIPE[:VARIANT] --topology v5e:2x4 [--json FILE]`: 0 if it fits."""
    config = zconfig.apply_overrides(zconfig.load(args.config), overrides)
    task = get_task(config)
    t0 = time.perf_counter()
    try:
        report = compile_for_topology(config, task, args.topology)
    except TpuUnavailableError as e:  # libtpu missing or busy: a message, not a traceback
        print(f"zoo: error: {e}", file=sys.stderr)
        return 2
    report["compile_seconds"] = round(time.perf_counter() - t0, 1)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, sort_keys=True)
    return 0 if report["fits"] else 1
