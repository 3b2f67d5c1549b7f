"""Time of one ZeTT hypernetwork train step (forward + backward), before and after the packed
encoder, and of predicting a 250k-token vocabulary in chunks (time, peak memory).

The step is the hypernetwork's part of a tokenizer_transfer train step at demo size: the
gradient of a loss on the predicted embeddings and biases of V tokens w.r.t. the
hypernetwork's parameters (the frozen base model is not included). "before" is
zoo/zett/hypernet.py at --before-rev (the [V, 7, H] encoder over every slot), loaded from git,
with the same parameters; the two are timed interleaved, so both see the same machine load.
The decompositions are synthetic: each token has 1..7 real pieces drawn from --lengths (the
weights of lengths 1..7; most tokens of a sampled vocabulary are one or two source pieces,
zett.md section 2), padded with the pad id. --lengths 0,0,0,0,0,0,1 is the worst case: every
slot real, the packed layout does not fit and the padded one runs.

  nice -n 10 python benchmarks/zett_step.py [--vocab 3000 --source 3000 --width 128]
  nice -n 10 python benchmarks/zett_step.py --predict 250000 --chunk 16384  # + prediction
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_before(rev: str):
    """zoo.zett.hypernet as of git rev `rev`, as a fresh module."""
    src = subprocess.run(
        ["git", "-C", REPO, "show", f"{rev}:zoo/zett/hypernet.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = os.path.join(tempfile.mkdtemp(), "hypernet_before.py")
    with open(path, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("hypernet_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def surfaces(rng, n: int, source: int, weights, pad_id: int = 1):
    import numpy as np

    p = np.asarray(weights, np.float64)
    lengths = rng.choice(np.arange(1, 8), size=n, p=p / p.sum())
    ids = rng.integers(4, source, (n, 7)).astype(np.int32)
    ids[np.arange(7)[None] >= lengths[:, None]] = pad_id
    return ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=3000, help="tokens per step (V)")
    ap.add_argument("--source", type=int, default=3000, help="source vocabulary (S)")
    ap.add_argument("--width", type=int, default=128, help="base d_model = hypernet width")
    ap.add_argument("--lengths", default="45,30,14,6,3,1,1", help="weights of 1..7 pieces")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before-rev", default="591f8a1")
    ap.add_argument("--predict", type=int, default=0, help="also predict this many tokens")
    ap.add_argument("--chunk", type=int, default=16384)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import linen as nn

    from zoo.zett import hypernet as zett

    weights = [float(w) for w in args.lengths.split(",")]
    rng = np.random.default_rng(0)
    config = zett.HypernetConfig(source_vocab_size=args.source, embed_dim=args.width)
    E = rng.normal(0, 0.02, (args.source, args.width)).astype(np.float32)
    surface = surfaces(rng, args.vocab, args.source, weights)
    models = {
        "before": load_before(args.before_rev).Hypernet(config),
        "after": zett.Hypernet(config),
    }
    params = nn.unbox(models["after"].init(jax.random.PRNGKey(0), surface[:2], E)["params"])
    target = jnp.asarray(E[surface[:, 0]])

    def step_fn(model):
        def loss(p, surface, target):
            out = model.apply({"params": p}, surface, E)
            return jnp.mean(jnp.square(out["in"] - target)) + jnp.mean(jnp.square(out["bias"]))

        step = jax.jit(jax.value_and_grad(loss))
        return lambda p: step(p, surface, target)  # batch arrays as arguments, as in training

    steps = {k: step_fn(m) for k, m in models.items()}
    for name, fn in steps.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(params))
        print(f"{name}: compile + first step {time.perf_counter() - t0:.1f} s", flush=True)
    (lb, gb), (la, ga) = steps["before"](params), steps["after"](params)
    err = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), ga, gb)))
    times = {k: [] for k in steps}
    for _ in range(args.repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params))
            times[name].append(time.perf_counter() - t0)
    pieces = int((surface != 1).sum())
    print(
        f"V={args.vocab} S={args.source} width={args.width} pieces={pieces} "
        f"({pieces / surface.size:.0%} of slots; packed rows {config.packed_rows(args.vocab)}); "
        f"|loss diff| {abs(float(la - lb)):.1e}, max |grad diff| {err:.1e}"
    )
    for name, ts in times.items():
        print(f"  train step {name:6s}: median {np.median(ts):.3f} s, min {min(ts):.3f} s")

    if args.predict:
        big = surfaces(rng, args.predict, args.source, weights)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        t0 = time.perf_counter()
        out = zett.predict_embeddings(models["after"], params, big, E, chunk=args.chunk)
        dt = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(
            f"predict V={args.predict} in chunks of {args.chunk}: {dt:.1f} s (with compile), "
            f"out {out['in'].shape}, process peak RSS {peak:.2f} GiB "
            f"({rss0:.2f} GiB before it)"
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    sys.exit(main())
