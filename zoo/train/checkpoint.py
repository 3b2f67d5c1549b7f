"""Checkpoints that survive preemption: orbax CheckpointManager + data iterator state.

Layout of WORKDIR (a local folder or gs://BUCKET/path; all I/O goes through etils.epath):
  config.json          the config of the run that created the workdir
  signature.json       parameter paths -> shapes/dtypes (checked on resume)
  checkpoints/<step>/  orbax items: state (train state), data (iterator JSON)

orbax writes each step into a temporary folder and renames it only when the
save is complete, so a run killed mid-save (SIGKILL) leaves at worst a
temporary folder that is ignored (and cleaned) on restart.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
from jax.experimental import multihost_utils

from zoo.io.paths import as_path
from zoo.train.step import TrainState

try:  # a private module: a JAX without it makes PreemptionWatcher fall back to an allgather
    from jax._src import distributed as _jax_distributed
except ImportError:
    _jax_distributed = None

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: saved after SIGTERM; rerun the same command to resume


class PreemptionWatcher:
    """Turns SIGTERM (what a preempted Cloud TPU VM gets) into a flag the loop polls.

    The loop finishes the step in flight, saves and exits with PREEMPTED_EXIT_CODE.
    With several processes all must save the same step. jax.distributed starts a
    preemption sync manager that catches SIGTERM itself and agrees on that step with
    the other processes through the coordination service, with no device work, so
    polling it every step costs nothing; then no Python handler is installed (it
    would hide the signal). Without it, the flag is OR-ed across processes with an
    allgather, which waits for the device every step.
    """

    def __init__(self):
        self._event = threading.Event()
        self._previous = None
        self._sync = jax.process_count() > 1 and _preemption_sync_manager() is not None

    def __enter__(self):
        if not self._sync and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame):
        self._event.set()

    def requested(self, step: int) -> bool:
        """Whether to save and stop after `step` (call once per step, on every process)."""
        if jax.process_count() == 1:
            return self._event.is_set()
        if self._sync:
            return multihost_utils.reached_preemption_sync_point(step)
        flag = np.array(self._event.is_set())
        return bool(multihost_utils.process_allgather(flag).any())


def _preemption_sync_manager():
    """jax.distributed's preemption sync manager, or None (not initialised, or a JAX without
    it: the watcher then falls back to a per-step allgather)."""
    if _jax_distributed is None:
        return None
    return getattr(_jax_distributed.global_state, "preemption_sync_manager", None)


def signature(abstract_state: TrainState) -> dict[str, str]:
    flat = traverse_util.flatten_dict(jax.tree.map(lambda x: x, abstract_state.params), sep="/")
    return {k: f"{v.dtype}{list(v.shape)}" for k, v in sorted(flat.items())}


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k, "<absent>"), new.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} (saved) vs {b!r} (now)")
    return out


class Checkpointer:
    """Owns WORKDIR/checkpoints; saves and restores train state + iterator state."""

    def __init__(self, workdir: str, config, abstract_state: TrainState):
        self.workdir = workdir
        self._closed = False
        self.abstract_state = abstract_state
        c = config.checkpoint
        self.every = int(c.every_steps)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=c.keep_last or None,
            keep_period=c.keep_every or None,
            enable_async_checkpointing=bool(c.async_save),
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            as_path(workdir) / "checkpoints",
            options=options,
            item_names=("state", "data"),
        )
        self._check_workdir(config)

    # --- compatibility --------------------------------------------------------
    def _check_workdir(self, config) -> None:
        root = as_path(self.workdir)
        sig_path, cfg_path = root / "signature.json", root / "config.json"
        sig = signature(self.abstract_state)
        new_cfg = json.loads(config.to_json_best_effort())
        if self.manager.latest_step() is not None and sig_path.exists():
            old_sig = json.loads(sig_path.read_text())
            if old_sig != sig:
                old_cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
                diff = _config_diff(old_cfg, new_cfg)
                mism = [k for k in sorted(set(old_sig) | set(sig)) if old_sig.get(k) != sig.get(k)]
                first = mism[0]
                raise ValueError(
                    f"workdir {self.workdir} holds a checkpoint of a different model: parameter "
                    f"{first} is {old_sig.get(first, '<absent>')} there but "
                    f"{sig.get(first, '<absent>')} now ({len(mism)} parameters differ). "
                    f"Config differences: {'; '.join(diff[:8]) or 'none recorded'}. "
                    "Use a new --workdir, or the saved config to resume; nothing was overwritten."
                )
            return
        if jax.process_index() == 0:
            root.mkdir(parents=True, exist_ok=True)
            cfg_path.write_text(json.dumps(new_cfg, indent=2, sort_keys=True))
            sig_path.write_text(json.dumps(sig, indent=1))

    # --- save / restore ---------------------------------------------------------
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, step: int) -> tuple[TrainState, Any]:
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(self.abstract_state.as_dict()),
                data=ocp.args.JsonRestore(),
            ),
        )
        return TrainState.from_dict(restored["state"]), restored["data"]

    def save(self, step: int, state: TrainState, data_state: Any, *, force: bool = False) -> bool:
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state.as_dict()), data=ocp.args.JsonSave(data_state)
            ),
            force=force,
        )

    def should_save(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for async saves to land, then releases the manager (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        self.manager.wait_until_finished()
        self.manager.close()
