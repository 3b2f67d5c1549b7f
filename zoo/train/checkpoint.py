"""Checkpoints that survive preemption and defend themselves: orbax CheckpointManager +
data iterator state + per-leaf checksums, a fallback past damaged steps, a workdir lock.

Layout of WORKDIR (a local folder or gs://BUCKET/path; all I/O goes through etils.epath):
  config.json          the config of the run that created the workdir
  signature.json       parameter paths -> shapes/dtypes (checked on resume)
  train.lock           flock-ed by the running `zoo train` (local workdirs; says pid and host)
  checkpoints/<step>/  orbax items: state (train state), data (iterator JSON), checksums (JSON)
  checkpoints_damaged/ steps that failed to restore or verify, moved aside (never deleted)

orbax writes each step into a temporary folder and renames it only when the
save is complete, so a run killed mid-save (SIGKILL) leaves at worst a
temporary folder that is ignored (and cleaned) on restart. A step damaged after
that (a lost file, a truncated chunk, a flipped bit) is caught on restore: the
structure is checked, the restore must succeed, and the restored train state
must match the checksums computed on device when it was saved (OCDBT/zarr chunks
carry no checksum, so tensorstore restores a flipped byte silently).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from zoo.io.paths import as_path, is_remote
from zoo.train.step import TrainState

try:  # a private module: a JAX without it makes PreemptionWatcher fall back to an allgather
    from jax._src import distributed as _jax_distributed
except ImportError:
    _jax_distributed = None

log = logging.getLogger("zoo.train")

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: saved after SIGTERM; rerun the same command to resume
LOCK_FILE = "train.lock"
DAMAGED_DIR = "checkpoints_damaged"


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


def _all_agree(ok: bool) -> bool:
    """True when `ok` holds on every process (an allgather only when there are several)."""
    if jax.process_count() == 1:
        return ok
    return bool(multihost_utils.process_allgather(np.array(ok)).all())


# --- the workdir lock -------------------------------------------------------------------


class WorkdirLock:
    """Refuses a second `zoo train` on a workdir while one runs (two writers would interleave
    checkpoints and metrics, and orbax's cleanup would delete the other's in-flight save).

    Process 0 holds fcntl.flock on WORKDIR/train.lock for the whole run; the other processes
    of the same run take no lock and follow process 0's verdict. The OS drops the lock when
    the process exits or dies, so a stale file never blocks a rerun. gs:// workdirs get no
    lock: object stores have no flock, and two runs there are not detected.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self._fd: int | None = None

    def __enter__(self) -> WorkdirLock:
        holder = None
        if jax.process_index() == 0 and not is_remote(self.workdir):
            os.makedirs(self.workdir, exist_ok=True)
            path = os.path.join(self.workdir, LOCK_FILE)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
            else:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
                self._fd = fd
        if not _all_agree(holder is None):
            self.__exit__()
            raise ValueError(
                f"--workdir {self.workdir} is in use by another `zoo train` "
                f"({holder or 'seen by process 0'}, holding {LOCK_FILE}); wait for it to "
                "finish or use another --workdir"
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


# --- checksums --------------------------------------------------------------------------


def _words(x: jax.Array) -> jax.Array:
    """The bits of x as uint32 words: 8/16-bit dtypes widened, 64-bit ones split in two."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size in (4, 8):  # 64-bit: a trailing axis of two words
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    unsigned = {1: jnp.uint8, 2: jnp.uint16}[size]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _position_weights(shape: tuple[int, ...]) -> jax.Array:
    """2*i+1 (mod 2^32) for the row-major position i of each element, built from iotas so a
    sharded leaf stays sharded. An odd weight is invertible mod 2^32, so any change confined
    to one word changes the sum; distinct weights also catch two words swapped."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        iota = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
        index = index + iota * jnp.uint32(stride % 2**32)
        stride *= shape[axis]
    return 2 * index + 1


def _leaf_checksums(tree) -> dict[str, jax.Array]:
    """'/'-joined leaf path -> sum(words * position weights) with uint32 wraparound."""
    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        words = _words(x)
        key = jax.tree_util.keystr(path, simple=True, separator="/")
        out[key] = jnp.sum(words * _position_weights(words.shape), dtype=jnp.uint32)
    return out


def _data_checksum(data_state: Any) -> int:
    return zlib.crc32(json.dumps(data_state, sort_keys=True).encode())


def _first_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one short line: the innermost cause (tensorstore's own error names the
    key and the file), without the whole TensorStore spec orbax appends."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).split("\n")[0].split(" See full TensorStore details")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quiet_abandoned_reads() -> None:
    """After a failed restore orbax leaves the other reads in flight; as they finish, their
    callbacks meet its closed event loop and each prints an 'Event loop is closed' traceback
    (hundreds of lines). From then on sys.unraisablehook drops just those."""
    previous = sys.unraisablehook
    if getattr(previous, "zoo_quiet", False):
        return

    def hook(unraisable) -> None:
        exc, obj = unraisable.exc_value, unraisable.object
        closed_loop = isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
        code = getattr(obj, "cr_code", None)
        orbax_coroutine = code is not None and "orbax" in code.co_filename
        if not (closed_loop or orbax_coroutine):
            previous(unraisable)

    hook.zoo_quiet = True
    sys.unraisablehook = hook


def _missing_parts(step_dir: epath.Path) -> str | None:
    """Why a step folder is obviously incomplete (before reading any array), or None."""
    if not any(step_dir.iterdir()):
        return "empty step folder"
    for item in ("state", "data"):
        if not (step_dir / item).is_dir():
            return f"missing {item}/"
    if not (step_dir / "state" / "_METADATA").exists():
        return "missing state/_METADATA"
    return None


# --- the checkpointer -------------------------------------------------------------------


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
        self._dir = as_path(workdir) / "checkpoints"
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
            self._dir, options=options, item_names=("state", "data", "checksums")
        )
        # Restores go through the handlers, not the manager: its restore ends in a barrier
        # that would hang the processes that succeeded while another one failed.
        self._reader = ocp.CompositeCheckpointHandler(
            state=ocp.StandardCheckpointHandler(),
            data=ocp.JsonCheckpointHandler(),
            checksums=ocp.JsonCheckpointHandler(),
        )
        leaf = jax.tree.leaves(abstract_state)[0]
        repl = (
            NamedSharding(leaf.sharding.mesh, PartitionSpec())
            if isinstance(leaf.sharding, NamedSharding)
            else None
        )
        self._checksum_fn = jax.jit(_leaf_checksums, out_shardings=repl)
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

    # --- checksums -------------------------------------------------------------
    def checksums(self, state: TrainState) -> dict[str, int]:
        """Per-leaf checksums of `state`: one jitted reduction on device, replicated result."""
        out = jax.device_get(
            {k: v.addressable_data(0) for k, v in self._checksum_fn(state.as_dict()).items()}
        )
        return {k: int(v) for k, v in out.items()}

    def _verify(self, step: int, restored: dict) -> str | None:
        """Why the restored step does not match its saved checksums, or None (also None, with
        a warning, for a step saved before zoo wrote checksums)."""
        saved = restored.get("checksums")
        if saved is None:
            log.warning(
                "checkpoint step %d has no checksums (saved by an older zoo); "
                "restored it unverified",
                step,
            )
            return None
        got = self.checksums(TrainState.from_dict(restored["state"]))
        want = saved.get("state", {})
        bad = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            return f"checksum mismatch in {bad[0]}{more}"
        if "data" in saved and saved["data"] != _data_checksum(restored["data"]):
            return "checksum mismatch in the data-iterator state"
        return None

    # --- save / restore ---------------------------------------------------------
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def _step_folders(self) -> list[int]:
        """Step numbers of checkpoints/<digits> folders, newest first (orbax's temporary
        folders have other names). Listed directly: orbax also lists an empty folder."""
        if not self._dir.exists():
            return []
        return sorted((int(p.name) for p in self._dir.iterdir() if p.name.isdigit()), reverse=True)

    def _try_restore(self, step: int) -> tuple[str | None, dict | None]:
        """(why step is damaged or None, what it restored). Every process takes the same
        decision at each stage, so none waits at a collective another one skipped."""
        step_dir = self._dir / str(step)
        reason = _missing_parts(step_dir)
        if not _all_agree(reason is None):
            return reason or "damaged as seen by another process", None
        items = {"state": ocp.args.StandardRestore(self.abstract_state.as_dict())}
        items["data"] = ocp.args.JsonRestore()
        if (step_dir / "checksums").exists():
            items["checksums"] = ocp.args.JsonRestore()
        restored = None
        try:
            restored = self._reader.restore(step_dir, ocp.args.Composite(**items))
        except Exception as e:  # tensorstore raises plain Exceptions for unreadable chunks
            reason = f"restore failed: {_first_line(e)}"
            _quiet_abandoned_reads()
        if not _all_agree(restored is not None):
            return reason or "failed to restore on another process", None
        reason = self._verify(step, restored)  # the same replicated checksums everywhere
        if not _all_agree(reason is None):
            return reason or "failed to verify on another process", None
        return None, restored

    def _move_aside(self, steps: list[int]) -> list[epath.Path]:
        """Moves checkpoints/<step> to checkpoints_damaged/<step>[.N], N for a name already
        taken (process 0 moves; every process names the same destinations first)."""
        root = as_path(self.workdir) / DAMAGED_DIR
        dests = []
        for step in steps:
            dest, n = root / str(step), 0
            while dest.exists():
                n += 1
                dest = root / f"{step}.{n}"
            dests.append(dest)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("zoo: damaged checkpoints named")
        if jax.process_index() == 0:
            root.mkdir(parents=True, exist_ok=True)
            for step, dest in zip(steps, dests):
                (self._dir / str(step)).rename(dest)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("zoo: damaged checkpoints moved")
        self.manager.reload()  # forget the moved steps, so they can be saved again
        return dests

    def restore_latest(self) -> tuple[int, TrainState, Any] | None:
        """(step, train state, data-iterator state) of the newest step that is complete and
        matches its checksums; None when there is no checkpoint.

        Newer damaged steps are moved to WORKDIR/checkpoints_damaged (so nothing is lost and
        the step can be saved again), one warning line each. If every step is damaged this
        raises ValueError and moves nothing: a run that had checkpoints never silently
        restarts from scratch.
        """
        damaged: list[tuple[int, str]] = []
        for step in self._step_folders():
            reason, restored = self._try_restore(step)
            if reason is not None:
                damaged.append((step, reason))
                continue
            if damaged:
                dests = self._move_aside([s for s, _ in damaged])
                for (s, why), dest in zip(damaged, dests):
                    log.warning(
                        "checkpoint step %d is damaged (%s); moved to %s; resuming from step %d",
                        s,
                        why,
                        dest,
                        step,
                    )
            return step, TrainState.from_dict(restored["state"]), restored["data"]
        if damaged:
            listed = "; ".join(f"step {s}: {r}" for s, r in damaged)
            raise ValueError(
                f"every checkpoint in {self._dir} is damaged ({listed}); nothing was moved and "
                "the run was not restarted from scratch. Move the damaged steps aside (e.g. to "
                f"{as_path(self.workdir) / DAMAGED_DIR}) to start this run over, or use "
                "another --workdir"
            )
        return None

    def save(self, step: int, state: TrainState, data_state: Any, *, force: bool = False) -> bool:
        if not (force or self.manager.should_save(step)):
            return False
        sums = {"state": self.checksums(state), "data": _data_checksum(data_state)}
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state.as_dict()),
                data=ocp.args.JsonSave(data_state),
                checksums=ocp.args.JsonSave(sums),
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
        self._reader.close()
