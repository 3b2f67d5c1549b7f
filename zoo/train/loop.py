"""THE training loop: every model family trains through `train(config, workdir, task)`.

Read top to bottom: mesh -> optimizer and sharded state -> data -> restore or
init -> steps (with metrics one step behind, so logging never stalls the
device) -> checkpoints, eval, preemption.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from zoo.io import modeldir
from zoo.io.paths import as_path, is_remote
from zoo.train import checkpoint as zckpt
from zoo.train import mesh as zmesh
from zoo.train import metrics as zmetrics
from zoo.train import optim as zoptim
from zoo.train import plot as zplot
from zoo.train import step as zstep

log = logging.getLogger("zoo.train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; nothing from that state was saved."""


class PreemptedError(RuntimeError):
    """SIGTERM arrived; the step finished and a checkpoint was saved."""


# (key, lowest allowed value, what it means, a value to suggest): what check_config enforces.
_RANGES = (
    ("train.num_steps", 1, "optimizer steps of the run", 1000),
    ("train.log_every", 1, "steps between metrics rows", 50),
    ("eval.every_steps", 0, "steps between evals; 0 = never", 0),
    ("checkpoint.every_steps", 0, "steps between checkpoints; 0 = only at the end", 0),
    ("optim.grad_accum_steps", 1, "microbatches per step; 1 = none", 1),
)


def check_config(config, workdir: str) -> None:
    """Clear errors for out-of-range keys and a --workdir that is a file, before anything
    is built or written (a 0 there would otherwise fail deep inside, e.g. `step % 0`)."""
    for key, low, meaning, example in _RANGES:
        section, name = key.split(".")
        value = config[section][name]
        if value < low:
            raise ValueError(
                f"{key}={value} must be >= {low} ({meaning}); pass e.g. --config.{key}={example}"
            )
    max_seconds = config.train.get("max_seconds", 0.0)
    if not (isinstance(max_seconds, (int, float)) and max_seconds >= 0):
        raise ValueError(
            f"train.max_seconds={max_seconds!r} must be a number >= 0 (a training wall-time "
            "budget; 0 = none); pass e.g. --config.train.max_seconds=600"
        )
    root = as_path(workdir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"--workdir {workdir} is a file; pass a directory")


def check_batch_config(config, mesh) -> int:
    """The data-parallel size every global batch must be a multiple of (clear error if not)."""
    bp = zmesh.batch_parallelism(mesh)
    multiple = math.lcm(bp, jax.process_count())
    d = config.data
    if d.mode in ("pad", "pack") and d.global_batch_size < 1:
        raise ValueError(
            f"data.global_batch_size={d.global_batch_size} must be >= 1 (sequences per step "
            f"in {d.mode} mode); pass e.g. --config.data.global_batch_size={multiple}"
        )
    if d.mode in ("pad", "pack") and d.global_batch_size % multiple:
        raise ValueError(
            f"data.global_batch_size={d.global_batch_size} is not divisible by the data-parallel "
            f"size {multiple} (mesh data x fsdp = {bp}, processes = {jax.process_count()}); "
            f"use a multiple of {multiple}, e.g. --config.data.global_batch_size="
            f"{max(multiple, d.global_batch_size // multiple * multiple)}"
        )
    accum = int(config.optim.grad_accum_steps)
    if accum > 1 and d.mode in ("pad", "pack") and d.global_batch_size % (multiple * accum):
        raise ValueError(
            f"data.global_batch_size={d.global_batch_size} must split into optim.grad_accum_steps="
            f"{accum} microbatches that are each a multiple of {multiple}; use a multiple of "
            f"{multiple * accum}"
        )
    return multiple * max(accum, 1)


def _global_batch(local: dict[str, np.ndarray], setup: zstep.Setup) -> dict[str, jax.Array]:
    return {
        k: jax.make_array_from_process_local_data(setup.batch_sharding[k], np.asarray(v))
        for k, v in local.items()
        if k in setup.batch_sharding
    }


def evaluate(task, config, setup: zstep.Setup, params, multiple: int) -> dict[str, float]:
    """Summed eval metrics over the validation split (or its first num_batches batches)."""
    ds = task.dataset(
        config.eval.split,
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        batch_multiple=multiple,
        train=False,
    )
    totals: dict[str, float] = {}
    for i, local in enumerate(ds):
        if config.eval.num_batches and i >= config.eval.num_batches:
            break
        out = jax.device_get(setup.eval_step(params, _global_batch(local, setup)))
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    weight = max(totals.pop("weight", 0.0), 1.0)
    return {f"eval_{k}": v / weight for k, v in totals.items()}


def _initial_state(config, setup: zstep.Setup, task) -> zstep.TrainState:
    """Random init, or config.train.init_from's parameters with a fresh optimizer.

    init_from is a `zoo convert` model directory or another run's workdir (e.g. CSR stage 2
    starts from stage 1 with the optimizer, schedule and step counter reset). With
    train.init_from_patterns, only the parameters whose '/'-joined path matches one of
    those regexes are taken from init_from (a warm start, e.g. a hybrid peptide model's
    encoder and AR decoder from a converted Casanovo model); the rest keep their random init.
    """
    source = config.train.get("init_from", "")
    if not source:
        return _finish_init(task, setup, setup.init(jax.random.PRNGKey(config.seed)).params)
    params = modeldir.load_params(source)
    patterns = tuple(config.train.get("init_from_patterns", ()) or ())
    if patterns:  # leaves the patterns do not select keep their random init
        picked, fresh = _select(params, setup, patterns, source, config.seed)
        params = jax.tree.map(
            lambda p, f: f if p is None else p, picked, fresh, is_leaf=lambda x: x is None
        )
    else:
        modeldir.check_compatible(params, setup.abstract_state.params, source)
    log.info("initialised parameters from %s", source)
    return _finish_init(task, setup, params)


def _finish_init(task, setup: zstep.Setup, params) -> zstep.TrainState:
    """Lets the task fill in parameters (Task.finish_init), then builds a fresh train state.

    Host-array leaves (init_from's, or the task's) are placed on the devices: every process
    holds the full arrays and each device takes its shard."""
    params = task.finish_init(params)

    def place(x, a):
        if isinstance(x, jax.Array):
            return x
        x = np.asarray(x)
        return jax.make_array_from_callback(a.shape, a.sharding, lambda i: x[i])

    return setup.init_from_params(jax.tree.map(place, params, setup.abstract_state.params))


def _select(params, setup: zstep.Setup, patterns, source: str, seed: int):
    """(loaded leaves where a pattern matches else None, randomly initialised params)."""
    regexes = [re.compile(p) for p in patterns]
    want = traverse_util.flatten_dict(setup.abstract_state.params, sep="/")
    have = traverse_util.flatten_dict(params, sep="/")
    picked = {}
    for key, abstract in want.items():
        if not any(r.search(key) for r in regexes):
            picked[key] = None
            continue
        if key not in have or tuple(have[key].shape) != tuple(abstract.shape):
            got = "absent" if key not in have else list(have[key].shape)
            raise ValueError(
                f"train.init_from_patterns selects {key}, which is {got} in {source} but "
                f"{list(abstract.shape)} here; match the model sizes or narrow the patterns"
            )
        picked[key] = have[key]
    if all(v is None for v in picked.values()):
        raise ValueError(
            f"train.init_from_patterns={list(patterns)} match no parameter of this model"
        )
    fresh = setup.init(jax.random.PRNGKey(seed)).params
    return traverse_util.unflatten_dict(picked, sep="/"), fresh


def _write_learning_curves(workdir: str) -> None:
    """WORKDIR/learning_curves.png at the end of a run; a failure to draw only warns (the
    run and its checkpoints are done; `zoo plot WORKDIR` draws it again)."""
    if is_remote(workdir):
        return  # matplotlib writes local files; `zoo plot` on a copy draws it
    try:
        zplot.plot_runs([workdir], os.path.join(workdir, zplot.FILENAME))
    except Exception as e:  # noqa: BLE001 - a picture never fails a finished run
        log.warning("learning curves not drawn for %s: %s: %s", workdir, type(e).__name__, e)


def train(config, workdir: str, task) -> dict[str, Any]:
    """Trains `task` as `config` says, in `workdir`; resumes from its latest checkpoint.

    Returns a summary {'step', 'loss', 'eval_*'...}. Raises PreemptedError after
    saving on SIGTERM, NonFiniteLossError on a NaN/Inf loss, and ValueError for a bad
    config, a workdir another run holds, or one whose every checkpoint is damaged.
    """
    check_config(config, workdir)
    with zckpt.WorkdirLock(workdir):  # held until the run ends, however it ends
        return _train(config, workdir, task)


def _train(config, workdir: str, task) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    num_steps = int(config.train.num_steps)

    # ---------------------------------------------------------------- mesh
    mesh = zmesh.make_mesh(config.mesh)
    multiple = check_batch_config(config, mesh)

    # ---------------------------------------- optimizer and sharded state
    tx, schedule = zoptim.make_optimizer(config.optim, num_steps)
    setup = zstep.build(task, config, mesh, tx, schedule)
    ckpt = zckpt.Checkpointer(workdir, config, setup.abstract_state)

    # ---------------------------------------------------------------- data
    if is_main:  # generate/prepare once, then everyone reads
        task.prepare_data()
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("zoo: data prepared")
    train_iter = iter(
        task.dataset(
            "train",
            seed=config.seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            batch_multiple=multiple,
            train=True,
        )
    )

    # ---------------------------------------------------- restore or init
    # The newest complete step whose checksums match; damaged newer ones are moved aside.
    try:
        restored = ckpt.restore_latest()
    except BaseException:
        ckpt.close()
        raise
    if restored is not None:
        start, state, data_state = restored
        train_iter.set_state(data_state)
        log.info("resumed from %s/checkpoints/%d", workdir, start)
    else:
        start = 0
        state = _initial_state(config, setup, task)
    dropout_rng = jax.random.PRNGKey(config.seed + 1)
    peak, peak_source = zmetrics.device_peak_flops(dtype=config.model.get("dtype", "float32"))
    num_devices = jax.device_count()

    # Rows of steps after `start` (and a torn last line) go: those steps run again.
    writer = zmetrics.MetricsWriter(workdir, enabled=is_main, start_step=start)
    bar = zmetrics.progress_bar(num_steps, start, enabled=is_main and config.train.progress_bar)
    summary: dict[str, Any] = {"step": start}
    pending = None  # (step, metrics on device, global batch shapes, local tokens, positions)
    last_time = time.perf_counter()
    max_seconds = float(config.train.get("max_seconds", 0.0) or 0.0)
    # Seconds spent in training steps, counted on across resumes: each row's `train_seconds`.
    # Not counted: the first step of each start (it compiles) and evaluations, so a budget
    # buys the same updates whether or not the compilation cache was warm.
    train_seconds = writer.train_seconds

    def run_ends_at(step: int) -> bool:
        """After `step`: num_steps reached, or the budget train.max_seconds of training-step
        time spent (process 0's count decides for every process)."""
        if step >= num_steps:
            return True
        if max_seconds <= 0:
            return False
        spent = train_seconds >= max_seconds
        if jax.process_count() > 1:
            spent = bool(multihost_utils.broadcast_one_to_all(np.asarray(spent)))
        return spent

    final_step = num_steps  # the step the run ends at (earlier when the budget runs out)

    def finish_step(p) -> None:
        """Fetches one step's metrics (one step late) and logs them; NaN guard."""
        nonlocal last_time, train_seconds
        step, m, shapes, tokens, (real, padded) = p
        m = jax.device_get(m)
        now = time.perf_counter()
        dt, last_time = now - last_time, now
        if step > start + 1:  # the first step of a start compiles
            train_seconds += dt
        loss = float(m["loss"])
        if not (math.isfinite(loss) and math.isfinite(float(m["grad_norm"]))):
            raise NonFiniteLossError(
                f"loss={loss}, grad_norm={float(m['grad_norm'])} at step {step}: training "
                f"stopped and this state was not saved; the last good checkpoint is step "
                f"{ckpt.latest_step()} in {workdir}/checkpoints. Lower optim.learning_rate, "
                "raise optim.warmup_steps or set optim.clip_norm, then rerun."
            )
        summary.update(step=step, loss=loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if step % config.train.log_every == 0 or step == final_step:
            row = {k: float(v) for k, v in m.items() if k != "weight"}
            row["step_time"] = dt
            row["train_seconds"] = train_seconds
            row["tokens_per_sec"] = tokens * jax.process_count() / dt
            row["examples_per_sec"] = shapes[next(iter(shapes))][0] / dt
            row["mfu"] = task.flops_per_batch(shapes) / (dt * peak * num_devices)
            if padded:  # this process's share; every process pads alike
                row["padding_fraction"] = 1.0 - real / padded
            writer.write(step, row)

    # ---------------------------------------------------------------- steps
    with zckpt.PreemptionWatcher() as watcher:
        try:
            step = start
            done = run_ends_at(step)
            if done and step < num_steps:
                log.info("train.max_seconds=%s already spent at step %d", max_seconds, step)
            while not done:
                local = next(train_iter)
                data_state = train_iter.get_state()
                batch = _global_batch(local, setup)
                state, m = setup.train_step(state, batch, dropout_rng)
                step += 1
                if pending is not None:
                    finish_step(pending)
                pending = (
                    step,
                    m,
                    {k: v.shape for k, v in batch.items()},
                    task.tokens_in_batch(local),
                    task.positions_in_batch(local),
                )

                preempted = watcher.requested(step)
                done = run_ends_at(step)
                if done:
                    final_step = step
                if ckpt.should_save(step) or preempted or done:
                    finish_step(pending)  # NaN guard runs before anything is saved
                    pending = None
                    ckpt.save(step, state, data_state, force=True)
                if config.eval.every_steps and (step % config.eval.every_steps == 0 or done):
                    if pending is not None:
                        finish_step(pending)
                        pending = None
                    ev = evaluate(task, config, setup, state.params, multiple)
                    writer.write(step, ev)
                    summary.update(ev)
                    last_time = time.perf_counter()  # eval time is not step time
                if preempted:
                    ckpt.close()
                    raise PreemptedError(
                        f"SIGTERM: saved step {step} to {workdir}/checkpoints; rerun the same "
                        "command to resume"
                    )
            if pending is not None:
                finish_step(pending)
        finally:
            bar.close()
            writer.close()
            ckpt.close()
    if is_main:
        _write_learning_curves(workdir)
    summary["peak_flops_source"] = peak_source
    summary["state"] = state
    return summary
