"""MFU of a recipe's train step (and forward-only eval step) on the local accelerator.

    python benchmarks/gpu_mfu.py --config recipes/mbart_csr_wmt16_enro.py:full \\
        --config.model.dtype=bfloat16 --config.model.remat=none --batch 16
    python benchmarks/gpu_mfu.py --config recipes/denovo_nine_species.py:full \\
        --config.model.dtype=bfloat16 --batch 32

The step is the loop's own (zoo.train.step.build: sharded state, donated, jitted) on
the recipe's largest batch shape (task.example_batch), so no data is read. MFU =
task.flops_per_batch / (step time x device peak x devices), the loop's definition;
peaks are spec-sheet bf16 dense figures (zoo.train.metrics.PEAK_FLOPS). Prints JSON.
On CPU it runs too (peak = measured matmul), which is how it is checked here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from zoo import tasks  # noqa: E402
from zoo.train import config as zconfig  # noqa: E402
from zoo.train import mesh as zmesh  # noqa: E402
from zoo.train import metrics as zmetrics  # noqa: E402
from zoo.train import optim as zoptim  # noqa: E402
from zoo.train import step as zstep  # noqa: E402


def timed(fn, n: int) -> float:
    """Median seconds of n calls of fn() (each blocks until its result is ready)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="recipes/NAME.py:VARIANT")
    ap.add_argument("--batch", type=int, help="global batch rows (default: the recipe's largest)")
    ap.add_argument("--steps", type=int, default=10)
    args, overrides = ap.parse_known_args()

    config = zconfig.apply_overrides(zconfig.load(args.config), overrides)
    task = tasks.get_task(config)
    mesh = zmesh.make_mesh(config.mesh)
    tx, schedule = zoptim.make_optimizer(config.optim, int(config.train.num_steps))
    setup = zstep.build(task, config, mesh, tx, schedule)
    state = setup.init(jax.random.PRNGKey(0))
    if args.batch:
        size = args.batch
    elif config.data.mode == "bucket":
        size = max(1, config.data.tokens_per_batch // max(config.data.bucket_boundaries))
    else:
        size = config.data.global_batch_size
    size = -(-size // zmesh.batch_parallelism(mesh)) * zmesh.batch_parallelism(mesh)
    batch = {
        k: jax.device_put(v, setup.batch_sharding[k])
        for k, v in task.example_batch(size).items()
        if k in setup.batch_sharding
    }
    shapes = {k: v.shape for k, v in batch.items()}
    rng = jax.random.PRNGKey(1)

    t0 = time.perf_counter()
    state, m = setup.train_step(state, batch, rng)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def train():
        holder["state"], out = setup.train_step(holder["state"], batch, rng)
        return out

    train_s = timed(train, args.steps)
    jax.block_until_ready(setup.eval_step(holder["state"].params, batch))
    eval_s = timed(lambda: setup.eval_step(holder["state"].params, batch), args.steps)

    dtype = config.model.get("dtype", "float32")
    peak, source = zmetrics.device_peak_flops(dtype=dtype)
    flops = task.flops_per_batch(shapes)
    n = jax.device_count()
    stats = jax.devices()[0].memory_stats() or {}
    print(
        json.dumps(
            {
                "config": args.config,
                "overrides": overrides,
                "device": f"{n} x {jax.devices()[0].device_kind}",
                "jax": jax.__version__,
                "dtype": dtype,
                "remat": config.model.get("remat", "none"),
                "batch": {k: list(v) for k, v in shapes.items()},
                "compile_s": round(compile_s, 1),
                "train_step_s": train_s,
                "train_mfu": flops / (train_s * peak * n),
                # forward only: a third of the train step's model FLOPs
                "eval_step_s": eval_s,
                "eval_mfu": flops / 3 / (eval_s * peak * n),
                "peak_flops_per_device": peak,
                "peak_source": source,
                "peak_memory_gib": stats.get("peak_bytes_in_use", 0) / 2**30,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
