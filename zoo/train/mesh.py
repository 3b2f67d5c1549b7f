"""Device mesh and THE logical-axis rules table.

Modules name logical axes; this table alone maps them to mesh axes
(`data`, `fsdp`, `tensor`). Flax assigns each mesh axis at most once per
array, in the order of the array's axes, so e.g. activations named
('batch', 'length', 'embed') shard batch over data+fsdp and leave embed whole,
while parameters named ('embed', 'mlp') shard embed over fsdp (ZeRO-3 style).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("length", None),
    ("positions", None),
)

BATCH_AXES = ("data", "fsdp")  # mesh axes a batch is split over


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, int, int]:
    """Resolves config.mesh {data, fsdp, tensor} (-1 = fill with the remaining devices)."""
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be positive or -1")
    known = math.prod(s for s in sizes if s != -1)
    if fill:
        if num_devices % known:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))} does not divide the {num_devices} devices: "
                f"the fixed axes multiply to {known}; set --config.mesh.* so their product "
                f"divides {num_devices}"
            )
        sizes[fill[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
            f"{num_devices} are available; set one axis to -1 (e.g. --config.mesh.data=-1) "
            "to fill the rest"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(mesh_config, devices: Sequence[Any] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    try:  # topology-aware placement (TPU ICI rings); may refuse odd CPU layouts
        device_array = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def batch_parallelism(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules=RULES) -> Any:
    """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, list(rules))


def batch_sharding(mesh: Mesh, axes: dict[str, tuple], rules=RULES) -> dict[str, NamedSharding]:
    return {
        k: NamedSharding(mesh, nn.logical_to_mesh_axes(v, list(rules))) for k, v in axes.items()
    }


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
