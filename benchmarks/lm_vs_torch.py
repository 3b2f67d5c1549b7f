"""zoo's JAX decoder-only LM (zoo.lm) vs transformers' PyTorch `LlamaForCausalLM` on CPU.

One process, f32, the same config and the same random weights on both sides (the HF model
is built with a fixed torch seed, saved with save_pretrained(safe_serialization=True) and
read back with `zoo.lm.convert.load`). Two measurements, timed runs interleaved (torch,
zoo, torch, zoo, ...) so that load from other users of a shared machine falls on both
sides alike:

1. Training: forward + backward + AdamW update on one fixed [--batch, --length] batch of
   random ids (no padding). PyTorch: eager, `model.train()`, next-token cross-entropy
   (mean over the B * (L - 1) targets), `clip_grad_norm_(1.0)` + `torch.optim.AdamW` (no
   decay on the 1-D RMSNorm scales, as zoo's mask; betas / eps / decay from the recipe).
   zoo: the real loop's step, `zoo.train.step.build` over the `causal_lm` task
   (recipes/lm.py:demo with this model, data.mode="pad": `tokens` + `real`, all real;
   clip + optax AdamW, donated state), AOT-compiled; compile time reported separately.
2. Greedy generation: --gen-batch prompts of --prompt-len random ids, --new-tokens new
   tokens each, no EOS (the config has no eos_token_id, so every row runs the whole budget).
   PyTorch: `model.generate(do_sample=False, num_beams=1, max_new_tokens=...)` under
   inference_mode (its default dynamic KV cache). zoo: `zoo.decode.greedy_search` over
   `zoo.lm.model.prefill / decode_step`, wired as `zoo.lm.generate.generate()` does (the
   prompt but its last token prefilled, that token starting the search), in one jitted
   function, AOT-compiled; its output is also checked against the public `generate()`.

Generation runs first (training changes the torch weights in place). torch uses --threads
(default os.cpu_count()) threads and OMP_WAIT_POLICY=PASSIVE unless the environment sets it
(see below); XLA sizes its own pool. Reported: medians of the timed runs (warm-up runs
excluded), tokens/s, zoo / torch ratios, JAX compile times, a logits check on the training
batch (max |diff|, eval mode, before any update), both sides' first training loss, and how
many generated rows agree token for token. The CPU model (lscpu) and load average at start
and end go into the output: on a shared machine, read the ratios, not the absolute rates.

  JAX_PLATFORMS=cpu /work/benchenv/bin/python benchmarks/lm_vs_torch.py --json /tmp/lm_vs_torch.json
  JAX_PLATFORMS=cpu /work/benchenv/bin/python benchmarks/lm_vs_torch.py --only generate
  # smoke (seconds): checks the wiring, not the speed
  JAX_PLATFORMS=cpu /work/benchenv/bin/python benchmarks/lm_vs_torch.py --hidden 64 \\
      --layers 2 --intermediate 172 --vocab 512 --batch 2 --length 32 --new-tokens 8 \\
      --repeats 1 --warmup 1

Needs jax + zoo and torch + transformers in one environment (zoo never imports torch):
  python3 -m venv /work/benchenv && /work/benchenv/bin/pip install -e . \\
      torch==2.13.0 transformers==4.57.6
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))
from _peers import cpu_model, finish, median, print_ratio_rows  # noqa: E402  (benchmarks/, first on sys.path)

# torch's OpenMP threads spin-wait at barriers by default; on a machine shared with other
# jobs (load > cores) a spinning thread holds a core the others need (benchmarks/
# mbart_vs_torch.py measured a 3x slower torch training step). Passive waiting is the fair
# setting here; it must be set before torch loads OpenMP. Override from the environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from zoo import tasks  # noqa: E402
from zoo.decode import greedy_search  # noqa: E402
from zoo.decode.search import compiler_options  # noqa: E402
from zoo.lm import convert as lm_convert  # noqa: E402
from zoo.lm import model as lm  # noqa: E402
from zoo.lm.generate import generate as lm_generate  # noqa: E402
from zoo.train import config as zconfig  # noqa: E402
from zoo.train import mesh as zmesh  # noqa: E402
from zoo.train import optim as zoptim  # noqa: E402
from zoo.train import step as zstep  # noqa: E402

PAD = 0  # generation's pad id (never written: no EOS, so no row finishes early)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=512, help="hidden_size")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8, help="query heads")
    ap.add_argument("--kv-heads", type=int, default=4, help="key/value heads (GQA)")
    ap.add_argument("--intermediate", type=int, default=1376, help="SwiGLU width")
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--tie", action="store_true", help="tie_word_embeddings (default untied)")
    ap.add_argument("--batch", type=int, default=8, help="training rows per step")
    ap.add_argument("--length", type=int, default=256, help="training tokens per row")
    ap.add_argument("--gen-batch", type=int, default=None, help="prompts (default --batch)")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per side and measurement")
    ap.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="untimed runs per side first (training runs at least one: the loss check)",
    )
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--only", choices=("generate", "train"), help="run one measurement only")
    ap.add_argument("--json", default="", help="also write the JSON result here")
    args = ap.parse_args(argv)
    if args.gen_batch is None:
        args.gen_batch = args.batch
    if args.repeats < 1 or args.warmup < 0 or args.prompt_len < 1 or args.new_tokens < 1:
        ap.error("--repeats, --prompt-len and --new-tokens must be >= 1, --warmup >= 0")
    return args


# --------------------------------------------------------------------------- shared setup


def hf_model(args, tmpdir: str):
    """A randomly initialised HF Llama (fixed seed, no EOS), saved to tmpdir for zoo."""
    cfg = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        intermediate_size=args.intermediate,
        max_position_embeddings=max(args.length, args.prompt_len + args.new_tokens),
        tie_word_embeddings=args.tie,
        # No special ids: generation never stops early on either side (zoo reads a missing
        # eos_token_id as "no EOS"), so both produce exactly --new-tokens per row.
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).float()
    model.save_pretrained(tmpdir, safe_serialization=True)
    return model


def zoo_lm_config(args, model_fields: dict):
    """recipes/lm.py:demo with this benchmark's model, batch and optimizer (constant lr)."""
    root = os.path.dirname(BENCH_DIR)
    c = zconfig.load(os.path.join(root, "recipes", "lm.py") + ":demo")
    c.unlock()
    c.task.tokenizer = ""  # model.vocab_size is given, so no tokenizer is read or trained
    c.task.label_smoothing = 0.0
    c.model = ml_collections.ConfigDict(model_fields)
    c.data.mode = "pad"  # `tokens` + `real`: one unpadded row per example
    c.data.global_batch_size = args.batch
    c.data.max_length = args.length
    c.data.tokens_per_batch = args.batch * args.length
    c.data.bucket_boundaries = (args.length,)
    c.optim.learning_rate = args.lr
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.clip_norm = 1.0
    c.optim.grad_accum_steps = 1
    return c


def interleaved(sides: dict, warmup: int, repeats: int):
    """Warm-up runs, then `repeats` timed rounds (one run per side each): times, last outputs."""
    outputs = {}
    for _ in range(warmup):
        for name, run in sides.items():
            outputs[name] = run()
    times = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            t = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - t)
    return times, outputs


# --------------------------------------------------------------------------- training


def bench_train(args, hf, zoo_model, zoo_params, ids) -> dict:
    config = zoo_lm_config(args, zoo_model.config.to_dict())
    o = config.optim

    # PyTorch eager: the usual pre-training step.
    hf.train()
    decay = [p for p in hf.parameters() if p.ndim > 1]
    no_decay = [p for p in hf.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(o.b1, o.b2),
        eps=o.eps,
    )
    t_ids = torch.from_numpy(ids).long()
    t_targets = t_ids[:, 1:].reshape(-1)

    def torch_step() -> float:
        logits = hf(input_ids=t_ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), t_targets
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    # zoo: the loop's own train step over the causal_lm task.
    task = tasks.get_task(config)
    mesh = zmesh.make_mesh(config.mesh)
    tx, schedule = zoptim.make_optimizer(config.optim, 1000)
    setup = zstep.build(task, config, mesh, tx, schedule)
    state = setup.init_from_params(zoo_params)
    host_batch = {"tokens": ids, "real": np.ones_like(ids)}
    batch = {k: jax.device_put(v, setup.batch_sharding[k]) for k, v in host_batch.items()}
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    train_exec = setup.train_step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0

    def zoo_step() -> float:
        nonlocal state
        state, metrics = train_exec(state, batch, key)
        return float(metrics["loss"])  # float() waits for the step

    # The first (untimed, warm-up) step of each side, on identical weights and the same
    # batch, must give the same loss; it counts as one of the --warmup runs.
    first = {"torch": torch_step(), "zoo": zoo_step()}
    sides = {"torch": torch_step, "zoo": zoo_step}
    times = {name: [] for name in sides}
    losses = {name: [] for name in sides}
    for _ in range(max(args.warmup - 1, 0)):
        for run in sides.values():
            run()
    for _ in range(args.repeats):
        for name, run in sides.items():
            t = time.perf_counter()
            losses[name].append(run())
            times[name].append(time.perf_counter() - t)

    flops = task.flops_per_batch({"tokens": ids.shape})
    tokens = ids.size
    out = {
        "model_flops_per_step": flops,
        "jax_compile_s": compile_s,
        "first_step_loss": first,
        "optimizer": f"AdamW lr {args.lr} betas ({o.b1}, {o.b2}) eps {o.eps} "
        f"weight_decay {o.weight_decay} (not on 1-D), clip 1.0",
    }
    for name in sides:
        m = median(times[name])
        out[name] = {
            "step_s_median": m,
            "step_s_all": times[name],
            "tokens_per_s": tokens / m,
            "gflops_per_s": flops / m / 1e9,
            "loss_timed_first_last": [losses[name][0], losses[name][-1]],
        }
    out["ratio_zoo_over_torch"] = out["zoo"]["tokens_per_s"] / out["torch"]["tokens_per_s"]
    return out


# --------------------------------------------------------------------------- generation


def bench_generate(args, hf, zoo_model, zoo_params, rng) -> dict:
    ids = rng.integers(0, args.vocab, size=(args.gen_batch, args.prompt_len), dtype=np.int32)
    mask = np.ones_like(ids)
    new = args.new_tokens

    hf.eval()
    t_ids, t_mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()

    def torch_generate() -> np.ndarray:
        with torch.inference_mode():
            seqs = hf.generate(
                input_ids=t_ids,
                attention_mask=t_mask,
                do_sample=False,
                num_beams=1,
                max_new_tokens=new,
                min_new_tokens=new,
                pad_token_id=PAD,
            )
        return seqs[:, ids.shape[1] :].numpy()

    params = jax.device_put(zoo_params)

    def greedy(params, ids_BxP, mask_BxP):
        # As zoo.lm.generate: the prompt but its last token into the cache, that token
        # starts the search (decode_step feeds it), the cache sized P - 1 + new.
        prompt_len = ids_BxP.shape[1]
        max_length = prompt_len - 1 + new
        if prompt_len > 1:
            _, cache = lm.prefill(zoo_model, params, ids_BxP[:, :-1], mask_BxP[:, :-1], max_length)
        else:
            cache = lm.init_cache(zoo_model, params, mask_BxP[:, :0], max_length)
        return greedy_search(
            lambda tokens_B, c: lm.decode_step(zoo_model, params, c, tokens_B),
            cache,
            start_ids_B=ids_BxP[:, -1],
            max_len=new,
            eos_id=-1,  # no EOS: every row runs the whole budget
            pad_id=PAD,
        )

    t0 = time.perf_counter()
    gen_exec = (
        jax.jit(greedy, compiler_options=compiler_options()).lower(params, ids, mask).compile()
    )
    compile_s = time.perf_counter() - t0

    def zoo_generate() -> np.ndarray:
        return np.asarray(gen_exec(params, ids, mask))

    times, outputs = interleaved(
        {"torch": torch_generate, "zoo": zoo_generate}, args.warmup, args.repeats
    )
    api = lm_generate(zoo_model, params, ids, mask, max_new_tokens=new, method="greedy").tokens

    def same(a, b) -> str:
        if a.shape != b.shape:
            return f"0/{len(ids)} (shapes {a.shape} vs {b.shape})"
        return f"{int((a == b).all(axis=1).sum())}/{len(ids)}"

    t_out, z_out = outputs["torch"], outputs["zoo"]
    agree = (t_out == z_out) if t_out.shape == z_out.shape else None
    out = {
        "jax_compile_s": compile_s,
        "identical_rows": same(t_out, z_out),
        "identical_tokens": (
            f"{int(agree.sum())}/{agree.size}" if agree is not None else "shape mismatch"
        ),
        "zoo_generate_api_identical_rows": same(np.asarray(api), z_out),
    }
    if agree is not None and not agree.all():
        # greedy on random weights: a near-tie resolved differently in f32 shifts the rest
        first_diff = np.where(agree.all(1), new, np.argmin(agree, axis=1))
        out["first_differing_step_per_row"] = first_diff.tolist()
    new_tokens = ids.shape[0] * new
    for name in ("torch", "zoo"):
        m = median(times[name])
        out[name] = {
            "call_s_median": m,
            "call_s_all": times[name],
            "new_tokens_per_s": new_tokens / m,
            "output_shape": list(outputs[name].shape),
        }
    out["ratio_zoo_over_torch"] = out["zoo"]["new_tokens_per_s"] / out["torch"]["new_tokens_per_s"]
    return out


# --------------------------------------------------------------------------- main


def logits_check(hf, zoo_model, zoo_params, ids) -> float:
    """Max |logit difference| on the training batch in eval mode, before any update."""
    hf.eval()
    with torch.inference_mode():
        ref = hf(input_ids=torch.from_numpy(ids).long()).logits.numpy()
    ours = jax.jit(zoo_model.apply)({"params": zoo_params}, ids, np.ones_like(ids))
    return float(np.abs(np.asarray(ours) - ref).max())


def main(argv=None) -> None:
    args = parse_args(argv)
    run_gen = args.only in (None, "generate")
    run_train = args.only in (None, "train")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    train_ids = rng.integers(0, args.vocab, size=(args.batch, args.length), dtype=np.int32)
    load_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmpdir:
        hf = hf_model(args, tmpdir)
        zoo_model, zoo_params = lm_convert.load(tmpdir)
    n_params = sum(p.numel() for p in hf.parameters())
    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "load_average_at_start": load_start,
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "torch_attention": hf.config._attn_implementation,
        "model": {
            "hidden": args.hidden,
            "layers": args.layers,
            "heads": f"{args.heads}/{args.kv_heads} kv",
            "intermediate": args.intermediate,
            "vocab": args.vocab,
            "tied": args.tie,
            "params_M": round(n_params / 1e6, 2),
        },
        "repeats": args.repeats,
        "warmup": args.warmup,
        "logits_max_abs_diff": logits_check(hf, zoo_model, zoo_params, train_ids),
    }
    # Generation first: training updates the torch model in place (zoo's params stay as
    # loaded), so afterwards the two sides would no longer hold the same weights.
    if run_gen:
        result["generate"] = {
            "batch": f"{args.gen_batch} prompts x {args.prompt_len} tokens, greedy, "
            f"{args.new_tokens} new tokens, no EOS",
            **bench_generate(args, hf, zoo_model, zoo_params, rng),
        }
    if run_train:
        result["train"] = {
            "batch": f"{args.batch} x {args.length} tokens, no padding",
            **bench_train(args, hf, zoo_model, zoo_params, train_ids),
        }
    finish(result, print_table, args.json)


def print_table(r: dict) -> None:
    print(
        f"\n{r['machine']}; load average {r['load_average_at_start']} -> "
        f"{r['load_average_at_end']}\ntorch threads {r['torch_threads']}, attention "
        f"{r['torch_attention']}, OMP_WAIT_POLICY={r['omp_wait_policy']}; "
        f"{r['repeats']} timed runs per side after {r['warmup']} warm-up"
    )
    print(f"model {r['model']}; logits max |diff| {r['logits_max_abs_diff']:.2e}")
    rows = []
    if "train" in r:
        t = r["train"]
        rows.append(
            (
                "train tok/s",
                t["torch"]["tokens_per_s"],
                t["zoo"]["tokens_per_s"],
                t["ratio_zoo_over_torch"],
            )
        )
        rows.append(
            ("train step (s)", t["torch"]["step_s_median"], t["zoo"]["step_s_median"], None)
        )
    if "generate" in r:
        g = r["generate"]
        rows.append(
            (
                "greedy new tok/s",
                g["torch"]["new_tokens_per_s"],
                g["zoo"]["new_tokens_per_s"],
                g["ratio_zoo_over_torch"],
            )
        )
        rows.append(
            ("generate call (s)", g["torch"]["call_s_median"], g["zoo"]["call_s_median"], None)
        )
    print_ratio_rows(rows)
    for k in ("train", "generate"):
        if k in r:
            print(f"jax compile ({k}): {r[k]['jax_compile_s']:.1f} s")
    if "train" in r:
        f = r["train"]["first_step_loss"]
        print(f"first training loss: torch {f['torch']:.6f}, zoo {f['zoo']:.6f}")
    if "generate" in r:
        g = r["generate"]
        print(
            f"identical greedy rows, zoo vs torch: {g['identical_rows']} "
            f"(tokens {g['identical_tokens']}); zoo generate() API vs timed fn: "
            f"{g['zoo_generate_api_identical_rows']}"
        )


if __name__ == "__main__":
    main()
