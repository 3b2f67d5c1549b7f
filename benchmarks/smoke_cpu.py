"""Smoke-recipe step time, tokens/s and MFU on this machine, next to its measured matmul peak.

Both numbers come from the same process, so MFU is against what this CPU really
does on a large f32 matmul, not a spec sheet.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/smoke_cpu.py [--variant demo] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from zoo import tasks  # noqa: E402
from zoo.train import config as zconfig  # noqa: E402
from zoo.train import mesh as zmesh  # noqa: E402
from zoo.train import optim as zoptim  # noqa: E402
from zoo.train import step as zstep  # noqa: E402


def matmul_peak(n: int, repeats: int = 10) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="demo")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--matmul", type=int, default=4096)
    args = ap.parse_args()

    peak = matmul_peak(args.matmul)
    config = zconfig.load(f"recipes/smoke.py:{args.variant}")
    # Fixed shapes (pad mode) so every timed step runs the same compiled program.
    zconfig.apply_overrides(
        config,
        ["--config.data.mode=pad", f"--config.task.data_dir={tempfile.gettempdir()}/zoo_bench"],
    )
    task = tasks.get_task(config)
    mesh = zmesh.make_mesh(config.mesh)
    tx, schedule = zoptim.make_optimizer(config.optim, config.train.num_steps)
    setup = zstep.build(task, config, mesh, tx, schedule)
    state = setup.init(jax.random.PRNGKey(0))
    it = iter(
        task.dataset(
            "train",
            seed=0,
            process_index=0,
            process_count=1,
            batch_multiple=zmesh.batch_parallelism(mesh),
            train=True,
        )
    )
    batches = [next(it) for _ in range(args.steps + 3)]
    rng = jax.random.PRNGKey(1)
    placed = [
        {k: jax.device_put(v, setup.batch_sharding[k]) for k, v in b.items()} for b in batches
    ]
    for b in placed[:3]:  # compile + warm up
        state, m = setup.train_step(state, b, rng)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for b in placed[3:]:
        state, m = setup.train_step(state, b, rng)
    jax.block_until_ready((state, m))
    step_time = (time.perf_counter() - t) / args.steps
    shapes = {k: v.shape for k, v in placed[0].items()}
    flops = task.flops_per_batch(shapes)
    tokens = np.mean([task.tokens_in_batch(b) for b in batches[3:]])
    padded = sum(int(np.prod(s)) for s in shapes.values())
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__,
        "variant": args.variant,
        "batch": {k: list(v) for k, v in shapes.items()},
        "step_time_s": step_time,
        "tokens_per_s": tokens / step_time,
        "padded_tokens_per_s": padded / step_time,
        "model_flops_per_step": flops,
        "achieved_flops": flops / step_time,
        f"matmul_{args.matmul}_peak_flops": peak,
        "mfu_vs_matmul_peak": flops / step_time / peak,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
