"""The mBART training step of benchmarks/mbart_vs_torch.py under XLA variants, zoo alone.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/train_step_variants.py [--variants a,b]

Same model, batch and optimizer as the PyTorch comparison (d512, 6+6 layers, FFN 2048,
vocab 32000, 16 x 64 -> 64 tokens, dropout 0.1, label smoothing 0.1, clip 1 + AdamW), the
loop's own step (`zoo.train.step.build` over the translation task), random zoo weights. Each
variant is the same step compiled with other XLA options (or model options, see VARIANTS);
timed steps go round-robin over the variants (one step each per round), so load from other
jobs falls on all alike. Prints each variant's median step time and its ratio to `default`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from zoo import tasks  # noqa: E402
from zoo.train import config as zconfig  # noqa: E402
from zoo.train import mesh as zmesh  # noqa: E402
from zoo.train import optim as zoptim  # noqa: E402
from zoo.train import step as zstep  # noqa: E402

YNN = "xla_cpu_experimental_ynn_fusion_type"
# name -> (XLA compiler options, model config overrides)
VARIANTS = {
    "default": ({}, {}),
    "ynn_individual_dot": ({YNN: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}, {}),
    "no_ynn": ({YNN: ""}, {}),
    "no_multi_output_fusion": ({"xla_cpu_use_multi_output_fusion": False}, {}),
    "onednn": ({"xla_cpu_use_onednn": True}, {}),
    "fast_math": ({"xla_cpu_enable_fast_math": True}, {}),
    "concurrency_scheduler": ({"xla_cpu_enable_concurrency_optimized_scheduler": True}, {}),
    "legacy_emitters": ({"xla_cpu_use_fusion_emitters": False}, {}),
    "no_dropout": ({}, {"dropout": 0.0}),
}


def switch(name: str, value: str):
    """A context manager that sets the module switch zoo.nn.layers.NAME to VALUE while the
    step is traced, then puts it back."""

    @contextlib.contextmanager
    def patch():
        from zoo.nn import layers

        old = getattr(layers, name)
        setattr(layers, name, value)
        try:
            yield
        finally:
            setattr(layers, name, old)

    return patch


# LayerNorm differentiated by jax.grad instead of its hand-written backward (what zoo did
# before the custom VJP), and attention through jax.nn.dot_product_attention.
VARIANTS["autodiff_layer_norm"] = ({}, {}, switch("LAYER_NORM_GRAD", "autodiff"))
VARIANTS["dot_product_attention"] = ({}, {}, switch("ATTENTION", "dot_product_attention"))
# Rematerialisation per encoder/decoder layer (model.remat): recompute in the backward what
# the forward would otherwise keep. Fewer live buffers; whether XLA:CPU gains is measured.
for _policy in ("full", "dots_saveable", "dots_with_no_batch_dims_saveable"):
    VARIANTS[f"remat_{_policy}"] = ({}, {"remat": _policy})


def config(args, overrides):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = zconfig.load(os.path.join(root, "recipes", "mbart_demo.py") + ":demo")
    c.unlock()
    c.task.spm_model = ""
    c.task.label_smoothing = 0.1
    fields = dict(
        vocab_size=args.vocab, d_model=args.d_model, num_heads=args.heads, mlp_dim=args.ffn,
        encoder_layers=args.layers, decoder_layers=args.layers, max_length=256, dropout=0.1,
        decoder_start_token_id=args.vocab - 1,
    )  # fmt: skip
    fields.update(overrides)
    base = {k: v for k, v in c.model.to_dict().items()}
    base.update(fields)
    c.model = ml_collections.ConfigDict(base)
    c.data.mode, c.data.global_batch_size, c.data.max_length = "pad", args.batch, args.length
    c.optim.learning_rate, c.optim.schedule, c.optim.warmup_steps = 1e-4, "constant", 0
    c.optim.weight_decay, c.optim.clip_norm = 0.01, 1.0
    return c


def profile(run, key, out_dir, top=15):
    """Trace two steps (jax.profiler, Perfetto JSON beside the xplane) and sum the XLA:CPU
    op events by name: where the step's time goes, without TensorBoard."""
    import collections
    import glob
    import gzip

    with jax.profiler.trace(out_dir, create_perfetto_trace=True):
        for _ in range(2):
            run["state"], m = run["exe"](run["state"], run["batch"], key)
            float(m["loss"])
    (path,) = sorted(glob.glob(os.path.join(out_dir, "**", "*.trace.json.gz"), recursive=True))[-1:]
    with gzip.open(path) as f:
        events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    totals, kinds, counts = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or "dur" not in e or name.startswith(("$", "Thunk", "np.")):
            continue  # python frames and the executor's own spans enclose the ops
        totals[name] += e["dur"] / 2e6  # per step, seconds
        kind = name.rstrip("0123456789").rstrip(".")
        kinds[kind] += e["dur"] / 2e6
        counts[kind] += 1
    print(f"profile: {path}")
    print(f"  XLA ops {sum(totals.values()):.3f} s per step; by kind (ynn_fusion: GEMMs):")
    for kind, sec in kinds.most_common(top):
        print(f"  {sec:7.3f} s  x{counts[kind] // 2:<5d} {kind[:80]}")
    print("  largest single ops:")
    for name, sec in totals.most_common(top):
        print(f"  {sec:7.3f} s  {name[:80]}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--json", default="")
    ap.add_argument(
        "--profile",
        default="",
        help="write a jax.profiler trace of 2 steps of "
        "the first variant here and print the ops that take the most time",
    )
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, args.vocab - 8, size=(2, args.batch, args.length), dtype=np.int32)
    ids[:, :, -2] = 2
    runs = {}
    for name in args.variants.split(","):
        options, model, *patch = VARIANTS[name]
        c = config(args, model)
        task = tasks.get_task(c)
        mesh = zmesh.make_mesh(c.mesh)
        tx, schedule = zoptim.make_optimizer(c.optim, 1000)
        setup = zstep.build(task, c, mesh, tx, schedule)
        state = setup.init(jax.random.PRNGKey(0))
        batch = {
            k: jax.device_put(v, setup.batch_sharding[k])
            for k, v in {"inputs": ids[0], "targets": ids[1]}.items()
        }
        key = jax.random.PRNGKey(0)
        t0 = time.perf_counter()
        try:
            with patch[0]() if patch else contextlib.nullcontext():
                lowered = setup.train_step.lower(state, batch, key)
            exe = lowered.compile(compiler_options=options)
        except Exception as e:  # an option this jaxlib does not know
            print(f"{name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
            continue
        compile_s = time.perf_counter() - t0
        state, m = exe(state, batch, key)  # warm-up
        float(m["loss"])
        runs[name] = {
            "exe": exe,
            "state": state,
            "batch": batch,
            "times": [],
            "compile_s": compile_s,
        }
        print(f"{name}: compiled in {compile_s:.1f} s", flush=True)
    for _ in range(args.rounds):
        for r in runs.values():
            t = time.perf_counter()
            r["state"], m = r["exe"](r["state"], r["batch"], key)
            float(m["loss"])
            r["times"].append(time.perf_counter() - t)
    if args.profile and runs:
        profile(next(iter(runs.values())), key, args.profile)
    base = statistics.median(runs["default"]["times"]) if "default" in runs else None
    out = {"load_average": os.getloadavg(), "variants": {}}
    for name, r in runs.items():
        med = statistics.median(r["times"])
        out["variants"][name] = {"step_s_median": med, "step_s_all": r["times"],
                                 "compile_s": r["compile_s"]}  # fmt: skip
        ratio = f"{base / med:.2f}x" if base else ""
        print(f"{name:26s} {med:7.3f} s  (speed vs default {ratio})  all {np.round(r['times'], 2)}")
    print("load average", os.getloadavg())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
