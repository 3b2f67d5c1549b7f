"""Weight files of transformers checkpoints as NumPy: safetensors, torch `.bin`, sharded indexes.

    state = read_transformers_weights("dir/model.safetensors")        # {key: np.ndarray}
    state = read_transformers_weights("dir/model.safetensors.index.json")

`.bin` files go through `zoo.io.torch_pickle` (no torch, no code from the file runs).
"""

from __future__ import annotations

import json
import os

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, for safetensors' numpy API)
import numpy as np
from safetensors import SafetensorError, safe_open

from zoo.io import torch_pickle

# What a transformers `save_pretrained` directory may hold, in the order they are looked for.
TRANSFORMERS_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

# safetensors dtypes that numpy's API of safetensors cannot name (ml_dtypes registers bfloat16
# with numpy, but not these): read through its flax API on the host CPU instead.
_FLAX_ONLY_DTYPES = ("F8_E4M3", "F8_E5M2", "F8_E8M0")


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """All tensors of a .safetensors file, read by the `safetensors` library, which checks the
    header length and JSON, dtypes, shapes and that the data offsets are in bounds,
    contiguous and non-overlapping. bfloat16 / float8 come as ml_dtypes arrays. Raises
    ValueError naming the file and the problem."""
    try:
        out = {}
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                if f.get_slice(name).get_dtype() not in _FLAX_ONLY_DTYPES:
                    out[name] = f.get_tensor(name)
            rest = [n for n in f.keys() if n not in out]
        if rest:
            with jax.default_device(jax.devices("cpu")[0]), safe_open(path, "flax") as f:
                out.update({n: np.array(f.get_tensor(n)) for n in rest})
        return out
    except SafetensorError as e:
        raise ValueError(f"{path}: not a valid safetensors file ({_one_line(e)})") from None
    except (TypeError, AttributeError) as e:  # a dtype numpy cannot represent
        raise ValueError(f"{path}: unsupported safetensors dtype ({_one_line(e)})") from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def read_weights(path: str) -> dict[str, np.ndarray]:
    """One weights file: `.safetensors`, or a torch state dict (`pytorch_model.bin`)."""
    if path.endswith(".safetensors"):
        return read_safetensors(path)
    return torch_pickle.load_state_dict(path)


def read_sharded(index_path: str) -> dict[str, np.ndarray]:
    """Every shard named by a `*.index.json` weight map, merged. Shard names must be plain
    file names inside the index's directory (never `../` or absolute paths), and every key
    the map names must come from the shard it names."""
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{index_path}: not a JSON weight index ({_one_line(e)})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise ValueError(
            f'{index_path}: has no "weight_map" of tensor name -> shard file name strings'
        )
    folder = os.path.realpath(os.path.dirname(os.path.abspath(index_path)))
    out: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        path = os.path.realpath(os.path.join(folder, shard))
        if os.path.isabs(shard) or os.path.dirname(path) != folder:
            raise ValueError(
                f"{index_path}: shard {shard[:80]!r} is not a file in the checkpoint's folder; "
                "an index may only name shards beside it"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{index_path}: names shard {shard!r}, which does not exist")
        tensors = read_weights(path)
        missing = [k for k, v in weight_map.items() if v == shard and k not in tensors]
        if missing:
            raise ValueError(f"{path}: lacks {missing[:3]}, which {index_path} says it holds")
        out.update(tensors)
    return out


def read_transformers_weights(path: str) -> dict[str, np.ndarray]:
    """A weights file or a sharded index (by its `.index.json` ending)."""
    return read_sharded(path) if path.endswith(".index.json") else read_weights(path)
