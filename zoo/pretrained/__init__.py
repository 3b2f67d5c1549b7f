"""Pretrained checkpoints: readers, converters and the zoo model directory.

- `zoo.pretrained.mbart`: `load_mbart` (transformers / fairseq files) and `save_mbart_hf`.
- `zoo.pretrained.torch_pickle`: torch-free reader of `torch.save` files.
- `zoo.pretrained.casanovo`: `load_casanovo` (Casanovo 5 Lightning .ckpt -> peptide model),
  `convert`, `warm_start_hybrid`.
- `zoo.pretrained.modeldir`: the directory `zoo convert` writes.

`load_mbart`/`save_mbart_hf` are also reachable here; they are imported on first use so that
`import zoo.pretrained.torch_pickle` does not pull in jax and flax.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "load_mbart": "zoo.pretrained.mbart",
    "save_mbart_hf": "zoo.pretrained.mbart",
    "load_casanovo": "zoo.pretrained.casanovo",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo.pretrained' has no attribute {name!r}")
