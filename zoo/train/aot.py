"""AOT-compile a recipe's train step for a Cloud TPU topology on a machine without a TPU.

`jax.experimental.topologies` + libtpu compile the exact sharded step that the
loop would run, so XLA's memory analysis tells whether the recipe fits the
slice's HBM before anyone rents it.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from zoo.train import mesh as zmesh
from zoo.train import metrics as zmetrics
from zoo.train import optim as zoptim
from zoo.train import step as zstep


def tpu_topology(name: str):
    """'v5e:2x4' -> a TopologyDescription (needs libtpu, not a TPU)."""
    try:
        import libtpu  # noqa: F401
    except ImportError as e:
        raise RuntimeError("zoo compile needs libtpu: pip install -e '.[tpu]'") from e
    from jax.experimental import topologies
    chip = name.split(":")[0].lower()
    if chip not in zmetrics.HBM_BYTES:
        raise ValueError(f"--topology {name!r}: chip {chip!r} is not one of "
                         f"{sorted(zmetrics.HBM_BYTES)} (write e.g. v5e:2x4 or v4:2x2x1)")
    try:
        return topologies.get_topology_desc(platform="tpu", topology_name=name)
    except Exception as e:  # libtpu's message for a malformed shape is long and cryptic
        raise ValueError(f"--topology {name!r} is not a TPU topology libtpu knows "
                         f"({type(e).__name__}); write CHIP:AxB or CHIP:AxBxC, e.g. v5e:2x4, "
                         "v4:2x2x1, v5p:2x2x1, v6e:2x4") from e


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
    return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=setup.batch_sharding[k])
            for k, v in example.items() if k in setup.batch_sharding}


def compile_step(config, task, devices) -> tuple[Any, dict[str, Any], zstep.Setup]:
    mesh = zmesh.make_mesh(config.mesh, devices)
    tx, schedule = zoptim.make_optimizer(config.optim, int(config.train.num_steps))
    setup = zstep.build(task, config, mesh, tx, schedule)
    batch = abstract_batch(task, config, setup)
    rng = jax.ShapeDtypeStruct((2,), np.uint32, sharding=zmesh.replicated(mesh))
    compiled = setup.train_step.lower(setup.abstract_state, batch, rng).compile()
    return compiled, batch, setup


def compile_for_topology(config, task, topology: str) -> dict[str, Any]:
    topo = tpu_topology(topology)
    compiled, batch, setup = compile_step(config, task, topo.devices)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    chip = topology.split(":")[0].lower()
    hbm = zmetrics.HBM_BYTES[chip]
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
             - mem.alias_size_in_bytes + mem.generated_code_size_in_bytes)
    n_params = sum(math.prod(x.shape) for x in jax.tree.leaves(setup.abstract_state.params))
    shapes = {k: v.shape for k, v in batch.items()}
    return {
        "topology": topology, "devices": len(topo.devices), "mesh": dict(setup.mesh.shape),
        "device_kind": topo.devices[0].device_kind, "params": n_params,
        "batch": {k: list(v) for k, v in shapes.items()},
        "argument_bytes": mem.argument_size_in_bytes, "output_bytes": mem.output_size_in_bytes,
        "temp_bytes": mem.temp_size_in_bytes, "alias_bytes": mem.alias_size_in_bytes,
        "code_bytes": mem.generated_code_size_in_bytes,
        "total_bytes": total, "hbm_bytes": hbm, "fits": total <= hbm,
        "xla_flops_per_device": float(cost.get("flops", float("nan"))),
        "model_flops_per_step": task.flops_per_batch(shapes),
    }


def format_report(r: dict[str, Any]) -> str:
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    lines = [
        f"topology {r['topology']}: {r['devices']} x {r['device_kind']}, mesh {r['mesh']}",
        f"parameters: {r['params'] / 1e6:.1f}M; global batch {r['batch']}",
        "per-device memory:",
        f"  arguments   {gib(r['argument_bytes'])}",
        f"  outputs     {gib(r['output_bytes'])} ({gib(r['alias_bytes'])} aliased to arguments)",
        f"  temporaries {gib(r['temp_bytes'])}",
        f"  code        {gib(r['code_bytes'])}",
        f"  total       {gib(r['total_bytes'])} of {gib(r['hbm_bytes'])} HBM -> "
        + ("fits" if r["fits"] else "DOES NOT FIT"),
        f"FLOPs per step: model {r['model_flops_per_step']:.3e} (all devices), "
        f"XLA {r['xla_flops_per_device']:.3e} per device",
    ]
    return "\n".join(lines)
