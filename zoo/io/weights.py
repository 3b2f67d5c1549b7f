"""Weight files of transformers checkpoints as NumPy: safetensors, torch `.bin`, sharded indexes.

    state = read_transformers_weights("dir/model.safetensors")        # {key: np.ndarray}
    state = read_transformers_weights("dir/model.safetensors.index.json")

`.bin` files go through `zoo.io.torch_pickle` (no torch, no code from the file runs).
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

from zoo.io import torch_pickle

# What a transformers `save_pretrained` directory may hold, in the order they are looked for.
TRANSFORMERS_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# safetensors dtype names -> numpy; BF16 through ml_dtypes (numpy has no bfloat16).
_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file (format: u64 header size, JSON header, raw bytes).

    Read directly rather than with safetensors.numpy, which cannot represent BF16.
    """
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {key!r} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        dtype = np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
        out[key] = np.frombuffer(data[start:end], dtype).reshape(info["shape"])
    return out


def read_weights(path: str) -> dict[str, np.ndarray]:
    """One weights file: `.safetensors`, or a torch state dict (`pytorch_model.bin`)."""
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    return torch_pickle.load_state_dict(path)


def read_sharded(index_path: str) -> dict[str, np.ndarray]:
    """Every shard named by a `*.index.json` weight map, merged."""
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        out.update(read_weights(os.path.join(os.path.dirname(index_path), shard)))
    return out


def read_transformers_weights(path: str) -> dict[str, np.ndarray]:
    """A weights file or a sharded index (by its `.index.json` ending)."""
    return read_sharded(path) if path.endswith(".index.json") else read_weights(path)
