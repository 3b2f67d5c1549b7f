"""Recipe configs: `path/to/recipe.py[:variant]` plus `--config.key=value` overrides."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence

import ml_collections


def load(spec: str) -> ml_collections.ConfigDict:
    """Loads `recipes/NAME.py[:VARIANT]` by calling its get_config(VARIANT); locks it."""
    path, _, variant = spec.partition(":")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"config file {path!r} does not exist (from --config {spec!r}); "
            "pass e.g. --config recipes/smoke.py:tiny"
        )
    if not os.path.isfile(path):
        raise ValueError(
            f"--config {spec!r}: {path} is a directory; pass a recipe file, e.g. "
            "--config recipes/smoke.py:tiny"
        )
    name = "zoo_recipe_" + os.path.splitext(os.path.basename(path))[0]
    # A recipe imports its folder's shared blocks (`import common`, recipes/common.py).
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ValueError(f"recipe {path}, line {e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - a recipe is user code; say where it failed
        raise ValueError(f"recipe {path} failed to load: {_where(e, path)}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{path} has no get_config(variant) function")
    try:
        config = module.get_config(variant) if variant else module.get_config()
    except Exception as e:  # noqa: BLE001
        raise ValueError(
            f"recipe {path}: get_config({variant!r}) failed: {_where(e, path)}"
        ) from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ValueError(
            f"recipe {path}: get_config returned {type(config).__name__}, not a ConfigDict"
        )
    config.lock()
    return config


def _where(error: Exception, path: str) -> str:
    """`Error: message (line N)`, N the recipe's line where it was raised."""
    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    at = f" (line {lines[-1]})" if lines else ""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}{at}"


def _parse_value(text: str, old, key: str):
    if isinstance(old, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(f"--config.{key}={text!r}: expected true or false")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(old, (tuple, list)) and isinstance(value, (int, float, str)):
        value = type(old)([value])
    if old is not None and not isinstance(value, type(old)):
        raise ValueError(
            f"--config.{key}={text!r} is a {type(value).__name__} but {key} is a "
            f"{type(old).__name__} (currently {old!r})"
        )
    return value


def all_keys(config, prefix="") -> list[str]:
    out = []
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            out += all_keys(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """Applies ['--config.a.b=value', ...] (also '--config.a.b value' split in two)."""
    items = list(overrides)
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("--config."):
            raise ValueError(
                f"unrecognised argument {arg!r}; overrides look like "
                "--config.optim.learning_rate=1e-3"
            )
        body = arg[len("--config.") :]
        if "=" in body:
            key, text = body.split("=", 1)
        elif i + 1 < len(items):
            key, text = body, items[i + 1]
            i += 1
        else:
            raise ValueError(f"{arg} has no value; write {arg}=VALUE")
        *parents, leaf = key.split(".")
        node = config
        known = all_keys(config)
        for p in parents:
            if p not in node or not isinstance(node[p], ml_collections.ConfigDict):
                node = None
                break
            node = node[p]
        if node is None or leaf not in node:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"unknown config key {key!r} (from {arg}){hint} "
                f"Run `zoo train --config FILE --print-config` to list the keys."
            )
        node[leaf] = _parse_value(text, node[leaf], key)
        i += 1
    return config
