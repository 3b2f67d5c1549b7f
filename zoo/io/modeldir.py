"""A zoo model directory: what `zoo convert` writes and `train.init_from` / `zoo translate` read.

Layout of DIR:
  model.json    {"family": "mbart", "config": {...model config...}, "tokenizer": {...}}
  params/       orbax checkpoint of the parameter tree (float32)
  <tokenizer files named in model.json, e.g. sentencepiece.bpe.model>

A training workdir (WORKDIR/checkpoints/<step>/state) can stand in wherever
only parameters are needed: its latest checkpoint's params are used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from zoo.io.paths import as_path


def save(
    out_dir: str,
    *,
    family: str,
    config: dict,
    params: Any,
    tokenizer: dict | None = None,
    files: dict[str, str] | None = None,
) -> None:
    """Writes DIR; `files` maps a name in DIR to a source path to copy (tokenizer files)."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(os.path.join(out_dir, "model.json")):
        raise FileExistsError(f"{out_dir} already holds a model; choose another output directory")
    os.makedirs(out_dir, exist_ok=True)
    for name, src in (files or {}).items():
        shutil.copyfile(src, os.path.join(out_dir, name))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(out_dir, "params"), jax.tree.map(np.asarray, params))
    meta = {"family": family, "config": config, "tokenizer": tokenizer or {}}
    with open(os.path.join(out_dir, "model.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def read_meta(path: str) -> dict:
    return json.loads((as_path(path) / "model.json").read_text())


def is_model_dir(path: str) -> bool:
    """Whether `path` is a zoo model directory (it holds model.json)."""
    return (as_path(path) / "model.json").exists()


def read_run_config(path: str, tasks: Sequence[str], flag: str = "--checkpoint"):
    """The config a `zoo train` workdir was created with (its config.json), whose task.name
    must be one of `tasks`; `flag` names the command-line flag that gave `path`."""
    config_path = as_path(path) / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(
            f"{flag} {path} is neither a zoo model directory (model.json) nor a `zoo train` "
            f"workdir (config.json) of task {' or '.join(tasks)}"
        )
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    if config.task.name not in tasks:
        raise ValueError(
            f"{flag} {path} was trained on task {config.task.name!r}, not {' or '.join(tasks)}"
        )
    return config


def _latest_state(workdir: str) -> epath.Path:
    """WORKDIR/checkpoints/<newest step>/state, passing over step folders that are obviously
    incomplete (empty, or no state/_METADATA): `zoo train` moves damaged steps aside when it
    resumes, but a reader (init_from, zoo translate) may come to the workdir first."""
    ckpt_dir = as_path(workdir) / "checkpoints"
    steps = (
        sorted((int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()), reverse=True)
        if ckpt_dir.is_dir()
        else []
    )
    skipped = []
    for step in steps:
        state = ckpt_dir / str(step) / "state"
        if (state / "_METADATA").exists():
            if skipped:
                logging.getLogger(__name__).warning(
                    "%s: passed over incomplete checkpoint steps %s (no state/_METADATA); "
                    "reading step %d",
                    workdir,
                    skipped,
                    step,
                )
            return state
        skipped.append(step)
    if skipped:
        raise FileNotFoundError(
            f"{workdir} has no complete checkpoint: checkpoints/{{{','.join(map(str, skipped))}}} "
            "have no state/_METADATA (damaged or unfinished); pass another workdir or a "
            "`zoo convert` model directory"
        )
    raise FileNotFoundError(
        f"{workdir} is neither a zoo model directory (no model.json) nor a training "
        "workdir with a finished checkpoint (no checkpoints/<step>/); pass the output of "
        "`zoo convert` or a workdir of `zoo train`"
    )


def restore_numpy(path) -> Any:
    """An orbax pytree checkpoint as host NumPy arrays, whatever devices wrote it.

    Restoring with the saved shardings would need the saving run's devices (a
    checkpoint from a 2-process or TPU-pod run names devices this process lacks)."""
    # Asked for an item folder, orbax also looks for the step's metadata file and warns
    # that it is absent; that is expected here.
    quiet = lambda record: "Metadata file does not exist" not in record.getMessage()  # noqa: E731
    absl_log = logging.getLogger("absl")
    with ocp.PyTreeCheckpointer() as ckptr:
        absl_log.addFilter(quiet)
        try:
            tree = ckptr.metadata(path).item_metadata.tree
        finally:
            absl_log.removeFilter(quiet)
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return ckptr.restore(path, restore_args=args)


def load_params(path: str) -> Any:
    """Parameter tree (NumPy) of a model directory or of a training workdir's latest checkpoint."""
    path = as_path(path)
    if (path / "model.json").exists():
        return restore_numpy(path / "params")
    return restore_numpy(_latest_state(path))["params"]


def check_compatible(params: Any, abstract_params: Any, source: str) -> None:
    """Clear error if `params` (from `source`) does not fit the model being trained."""
    have = traverse_util.flatten_dict(params, sep="/")
    want = traverse_util.flatten_dict(abstract_params, sep="/")
    for key in sorted(set(have) | set(want)):
        a, b = have.get(key), want.get(key)
        if a is None or b is None or tuple(a.shape) != tuple(b.shape):
            shape = lambda x: "absent" if x is None else list(x.shape)  # noqa: E731
            raise ValueError(
                f"parameters from {source} do not fit this model: {key} is {shape(a)} there "
                f"but {shape(b)} here; make the recipe's model config match the checkpoint "
                "(or drop train.init_from)"
            )


def check_fits(params: Any, shapes: dict[str, tuple[int, ...]], source: str, fix: str) -> None:
    """Clear error unless `params` (read from `source`) has exactly these '/'-joined paths
    and shapes (a model.json edited after `params/` was written, or a mismatched pair)."""
    have = traverse_util.flatten_dict(params, sep="/")
    for key in sorted(set(have) | set(shapes)):
        a = tuple(np.shape(have[key])) if key in have else None
        b = tuple(shapes[key]) if key in shapes else None
        if a != b:
            raise ValueError(
                f"{source}: parameter {key} is {list(a) if a else 'absent'} in params/ but the "
                f"model config makes it {list(b) if b else 'absent'}; {fix}"
            )
