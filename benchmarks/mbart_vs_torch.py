"""zoo's JAX mBART vs transformers' PyTorch `MBartForConditionalGeneration` (and CTranslate2).

One process, f32, the same config and the same random weights on all sides (the HF model
is built with a fixed torch seed, saved with save_pretrained and read back with
`zoo.mbart.convert.load_mbart`, and converted for CTranslate2). Two measurements, timed runs
interleaved (torch, zoo, torch, zoo, ...) so that load from other users of a shared machine
falls on all sides alike:

1. Training: forward + backward + AdamW update on one fixed batch of right-length
   sequences (no padding), dropout as configured (0.1). PyTorch: eager, `model.train()`,
   label-smoothed cross-entropy, `clip_grad_norm_` + `torch.optim.AdamW` (no decay on
   biases / LayerNorm, as zoo's mask). zoo: the real loop's step, `zoo.train.step.build`
   over the `translation` task (label-smoothed CE, clip + optax AdamW, donated state),
   AOT-compiled; compile time reported separately.
2. Generation: beam search (5 beams, HF `generate` semantics: early_stopping=False,
   length_penalty=1, forced EOS at the budget) of `--gen-batch` sentences.
   PyTorch: `model.generate(num_beams=5, max_new_tokens=..., decoder_start_token_id=lang)`
   under inference_mode. zoo: `zoo.decode.search.beam_search` over
   `zoo.mbart.model.encode / init_cache / decode_step`, wired as
   `zoo.mbart.translate.translate()` does, in one jitted function.
   CTranslate2 (unless --no-ct2): the saved HF model through
   `ctranslate2.converters.TransformersConverter` (float32; see benchmarks/_ct2_side.py),
   `Translator.translate_batch(beam_size=5, target_prefix=[[lang]],
   max_decoding_length=max_new_tokens, length_penalty=1)`, with `compute_type` float32 (the
   ratio) and int8 (a side figure), interleaved with the other two (torch, zoo, ct2, ct2
   int8, ...). CT2 has no forced EOS at the budget and stops an item once 5 hypotheses are
   finished (HF's early_stopping=True); outputs are compared with the last token of a
   budget-length hypothesis read as EOS (see `_ct2_side.forced_eos_at_budget`).

Generation runs first (training changes the torch weights in place). torch and CT2
(intra_threads; inter_threads=1) use --threads (default os.cpu_count()) threads and
OMP_WAIT_POLICY=PASSIVE unless the environment sets it (see below); XLA sizes its own pool.
Reported: medians of the timed runs (warm-up runs excluded), tokens/s and sentences/s,
zoo / torch and zoo / CT2 ratios, JAX compile and CT2 conversion times, a logits check that
zoo and torch run the same model, and how many beam outputs agree token for token.

  JAX_PLATFORMS=cpu /work/benchenv/bin/python benchmarks/mbart_vs_torch.py
  JAX_PLATFORMS=cpu /work/benchenv/bin/python benchmarks/mbart_vs_torch.py --only generate

Needs jax + zoo, torch + transformers and ctranslate2 in one environment (zoo never imports
torch or ctranslate2; --no-ct2 runs without it):
  python3 -m venv /work/benchenv && /work/benchenv/bin/pip install -e . \\
      torch==2.13.0 transformers==4.57.6 ctranslate2==4.8.5
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))
from _peers import finish, median, print_ratio_rows  # noqa: E402  (benchmarks/, first on sys.path)

# torch's OpenMP threads spin-wait at barriers by default; on a machine shared with other
# jobs (load > cores) a spinning thread holds a core the others need, and a training step
# of the default config measured 3x slower (18-21 s vs 5-9 s). Passive waiting is the fair
# setting here; it must be set before torch loads OpenMP. Override from the environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from zoo import tasks  # noqa: E402
from zoo.decode import search  # noqa: E402
from zoo.mbart import model as mbart  # noqa: E402
from zoo.mbart.convert import load_mbart  # noqa: E402
from zoo.train import config as zconfig  # noqa: E402
from zoo.train import mesh as zmesh  # noqa: E402
from zoo.train import optim as zoptim  # noqa: E402
from zoo.train import step as zstep  # noqa: E402

PAD, EOS = 1, 2


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6, help="encoder layers = decoder layers")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--max-pos", type=int, default=256, help="max_position_embeddings")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=16, help="training sentences per step")
    ap.add_argument("--src-len", type=int, default=64, help="training source tokens")
    ap.add_argument("--tgt-len", type=int, default=64, help="training target tokens")
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per side")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--gen-batch", type=int, default=16, help="sentences per generate call")
    ap.add_argument("--gen-src-len", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--beams", type=int, default=5)
    ap.add_argument("--gen-runs", type=int, default=3, help="timed generate calls per side")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and CT2 threads")
    ap.add_argument("--only", choices=("generate", "train"), help="run one measurement only")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-gen", action="store_true")
    ap.add_argument("--no-ct2", action="store_true", help="generation without CTranslate2")
    ap.add_argument("--json", default="", help="also write the JSON result here")
    return ap.parse_args(argv)


# --------------------------------------------------------------------------- shared setup


def hf_model(args, tmpdir: str):
    """A randomly initialised HF mBART (fixed seed), saved to tmpdir for zoo to load."""
    cfg = transformers.MBartConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        encoder_layers=args.layers,
        decoder_layers=args.layers,
        encoder_attention_heads=args.heads,
        decoder_attention_heads=args.heads,
        encoder_ffn_dim=args.ffn,
        decoder_ffn_dim=args.ffn,
        max_position_embeddings=args.max_pos,
        activation_function="gelu",
        dropout=args.dropout,
        attention_dropout=0.0,
        activation_dropout=0.0,
        scale_embedding=True,  # as every released mBART checkpoint
        pad_token_id=PAD,
        bos_token_id=0,
        eos_token_id=EOS,
        forced_eos_token_id=EOS,
    )
    torch.manual_seed(0)
    model = transformers.MBartForConditionalGeneration(cfg).float()
    model.save_pretrained(tmpdir)
    return model


def random_sentences(rng: np.random.Generator, batch: int, length: int, lang: int, vocab: int):
    """cc25 layout `X </s> [lang]`, every row full length (no padding): [batch, length] int32."""
    ids = rng.integers(3, vocab - 8, size=(batch, length), dtype=np.int32)
    ids[:, -2] = EOS
    ids[:, -1] = lang
    return ids


def zoo_translation_config(args, model_fields: dict):
    """The translation recipe's config with this benchmark's model, batch and optimizer."""
    import ml_collections

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = zconfig.load(os.path.join(root, "recipes", "mbart_demo.py") + ":demo")
    c.unlock()
    c.task.spm_model = ""  # no tokenizer: the model's vocab_size is taken as given
    c.task.label_smoothing = args.label_smoothing
    c.model = ml_collections.ConfigDict(model_fields)
    c.data.mode = "pad"
    c.data.global_batch_size = args.batch
    c.data.max_length = max(args.src_len, args.tgt_len)
    c.optim.learning_rate = args.lr
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 1.0
    return c


# --------------------------------------------------------------------------- training


def bench_train(args, hf, zoo_model, zoo_params, rng) -> dict:
    src_lang, tgt_lang = args.vocab - 2, args.vocab - 1  # stand-ins for language codes
    inputs = random_sentences(rng, args.batch, args.src_len, src_lang, args.vocab)
    targets = random_sentences(rng, args.batch, args.tgt_len, tgt_lang, args.vocab)

    # PyTorch eager: the usual fine-tuning step.
    hf.train()
    decay = [p for p in hf.parameters() if p.ndim > 1]
    no_decay = [p for p in hf.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    t_inputs = torch.from_numpy(inputs).long()
    t_targets = torch.from_numpy(targets).long()
    t_mask = t_inputs != PAD
    t_dec_in = transformers.models.mbart.modeling_mbart.shift_tokens_right(t_targets, PAD)

    def torch_step() -> float:
        logits = hf(
            input_ids=t_inputs,
            attention_mask=t_mask,
            decoder_input_ids=t_dec_in,
            decoder_attention_mask=t_targets != PAD,
        ).logits
        loss = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.shape[-1]),
            t_targets.view(-1),
            ignore_index=PAD,
            label_smoothing=args.label_smoothing,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    # zoo: the loop's own train step over the translation task.
    config = zoo_translation_config(args, zoo_model.config.to_dict())
    task = tasks.get_task(config)
    mesh = zmesh.make_mesh(config.mesh)
    tx, schedule = zoptim.make_optimizer(config.optim, 1000)
    setup = zstep.build(task, config, mesh, tx, schedule)
    state = setup.init_from_params(zoo_params)
    batch = {
        k: jax.device_put(v, setup.batch_sharding[k])
        for k, v in {"inputs": inputs, "targets": targets}.items()
    }
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    train_exec = setup.train_step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0

    def zoo_step() -> float:
        nonlocal state
        state, metrics = train_exec(state, batch, key)
        return float(metrics["loss"])  # float() waits for the step

    for _ in range(args.warmup_steps):
        torch_step()
        zoo_step()
    torch_times, zoo_times, torch_losses, zoo_losses = [], [], [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        torch_losses.append(torch_step())
        torch_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        zoo_losses.append(zoo_step())
        zoo_times.append(time.perf_counter() - t)

    flops = task.flops_per_batch({"inputs": inputs.shape, "targets": targets.shape})
    tgt_tokens, src_tokens = targets.size, inputs.size
    out = {"model_flops_per_step": flops, "jax_compile_s": compile_s}
    for name, times, losses in (
        ("torch", torch_times, torch_losses),
        ("zoo", zoo_times, zoo_losses),
    ):
        m = median(times)
        out[name] = {
            "step_s_median": m,
            "step_s_all": times,
            "tgt_tokens_per_s": tgt_tokens / m,
            "src_tokens_per_s": src_tokens / m,
            "gflops_per_s": flops / m / 1e9,
            "loss_first_last": [losses[0], losses[-1]],
        }
    out["ratio_zoo_over_torch"] = out["zoo"]["tgt_tokens_per_s"] / out["torch"]["tgt_tokens_per_s"]
    return out


# --------------------------------------------------------------------------- generation


def bench_generate(args, hf, zoo_model, zoo_params, rng, ct2_translators: dict) -> dict:
    """ct2_translators: {} or {"ctranslate2": fp32 Translator, "ctranslate2_int8": ...}."""
    src_lang, tgt_lang = args.vocab - 2, args.vocab - 1
    ids = random_sentences(rng, args.gen_batch, args.gen_src_len, src_lang, args.vocab)
    mask = np.ones_like(ids, dtype=bool)
    max_new, beams = args.max_new_tokens, args.beams

    hf.eval()
    t_ids, t_mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()

    def torch_generate() -> np.ndarray:
        with torch.inference_mode():
            seqs = hf.generate(
                input_ids=t_ids,
                attention_mask=t_mask,
                num_beams=beams,
                max_new_tokens=max_new,
                decoder_start_token_id=tgt_lang,
                early_stopping=False,
                length_penalty=1.0,
                do_sample=False,
            )
        return seqs[:, 1:].numpy()  # drop the start token, as zoo returns

    params = jax.device_put(zoo_params)

    def generate(params, ids_BxS, mask_BxS):
        encoded = mbart.encode(zoo_model, params, ids_BxS, mask_BxS)
        cache = mbart.init_cache(zoo_model, params, encoded, mask_BxS, max_new)
        start_B = jnp.full((ids_BxS.shape[0],), tgt_lang, jnp.int32)
        seqs_BxKxT, _ = search.beam_search(
            lambda tokens, c: mbart.decode_step(zoo_model, params, c, tokens),
            cache,
            start_ids_B=start_B,
            beam_size=beams,
            max_len=max_new,
            eos_id=EOS,
            pad_id=PAD,
            length_penalty=1.0,
            forced_eos_id=EOS,
            max_steps=max_new,
        )
        return seqs_BxKxT[:, 0]

    t0 = time.perf_counter()
    gen_exec = (
        jax.jit(generate, compiler_options=search.compiler_options())
        .lower(params, ids, mask)
        .compile()
    )
    compile_s = time.perf_counter() - t0

    def zoo_generate() -> np.ndarray:
        return np.asarray(gen_exec(params, ids, mask))

    sides = {"torch": torch_generate, "zoo": zoo_generate}
    if ct2_translators:
        import _ct2_side as ct2

        sides.update(
            ct2.generate_fns(ct2_translators, ids, tgt_lang, args.vocab, beams, max_new, 1.0, PAD)
        )

    outputs = {name: run() for name, run in sides.items()}  # warm-up
    times = {name: [] for name in sides}
    for _ in range(args.gen_runs):
        for name, run in sides.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)

    # HF pads finished (shorter) outputs with pad to the batch's longest; zoo to max_new.
    zoo_out = outputs["zoo"]
    torch_out = np.full_like(zoo_out, PAD)
    torch_out[:, : outputs["torch"].shape[1]] = outputs["torch"]
    outputs["torch"] = torch_out

    def same(a, b) -> str:
        return f"{int((a == b).all(axis=1).sum())}/{len(ids)}"

    out = {"jax_compile_s": compile_s, "identical_outputs": same(torch_out, zoo_out)}
    for name in ct2_translators:
        as_hf = ct2.forced_eos_at_budget(outputs[name], EOS, PAD)
        out[f"{name}_identical_to_zoo"] = same(as_hf, zoo_out)
        out[f"{name}_identical_to_torch"] = same(as_hf, torch_out)
    for name, seqs in outputs.items():
        m = median(times[name])
        out[name] = {
            "call_s_median": m,
            "call_s_all": times[name],
            "sentences_per_s": len(ids) / m,
            "mean_output_tokens": float((seqs != PAD).sum(1).mean()),
        }
    zoo_rate = out["zoo"]["sentences_per_s"]
    out["ratio_zoo_over_torch"] = zoo_rate / out["torch"]["sentences_per_s"]
    if "ctranslate2" in out:
        out["ratio_zoo_over_ctranslate2"] = zoo_rate / out["ctranslate2"]["sentences_per_s"]
    if "ctranslate2_int8" in out:
        int8_rate = out["ctranslate2_int8"]["sentences_per_s"]
        out["ctranslate2_int8_sentences_per_sec"] = int8_rate
        out["ratio_zoo_over_ctranslate2_int8"] = zoo_rate / int8_rate
    return out


# --------------------------------------------------------------------------- main


def logits_check(args, hf, zoo_model, zoo_params, rng) -> float:
    """Max |logit difference| in eval mode: both sides must run the same model."""
    ids = random_sentences(rng, 2, 16, args.vocab - 2, args.vocab)
    dec = random_sentences(rng, 2, 8, args.vocab - 1, args.vocab)
    mask = np.ones_like(ids, dtype=bool)
    hf.eval()
    with torch.inference_mode():
        ref = hf(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=torch.from_numpy(mask).long(),
            decoder_input_ids=torch.from_numpy(dec).long(),
        ).logits.numpy()
    ours = zoo_model.apply({"params": zoo_params}, ids, mask, dec)
    return float(np.abs(np.asarray(ours) - ref).max())


def import_ct2_side():
    """benchmarks/_ct2_side.py, or a SystemExit that says how to get ctranslate2."""
    sys.path.insert(0, BENCH_DIR)
    try:
        import _ct2_side
    except ImportError as e:
        raise SystemExit(
            f"ctranslate2 is not importable in {sys.executable} ({e}); install it there "
            "(pip install ctranslate2==4.8.5) or pass --no-ct2 to compare with PyTorch only"
        ) from None
    return _ct2_side


def main(argv=None) -> None:
    args = parse_args(argv)
    run_gen = not args.skip_gen and args.only in (None, "generate")
    run_train = not args.skip_train and args.only in (None, "train")
    ct2 = import_ct2_side() if run_gen and not args.no_ct2 else None
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    ct2_translators, ct2_convert_s = {}, None
    with tempfile.TemporaryDirectory() as tmpdir:
        hf = hf_model(args, tmpdir)
        zoo_model, zoo_params = load_mbart(tmpdir)
        if ct2 is not None:
            t0 = time.perf_counter()
            ct2_dir = ct2.convert(tmpdir, os.path.join(tmpdir, "ct2"), args.vocab)
            ct2_convert_s = time.perf_counter() - t0
            # A Translator reads the model into memory; the directory may go afterwards.
            ct2_translators = {
                "ctranslate2": ct2.translator(ct2_dir, "float32", args.threads),
                "ctranslate2_int8": ct2.translator(ct2_dir, "int8", args.threads),
            }
    n_params = sum(p.numel() for p in hf.parameters())
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": list(os.getloadavg()),
        "versions": {
            "jax": jax.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            **({"ctranslate2": ct2.version()} if ct2 is not None else {}),
        },
        "torch_threads": torch.get_num_threads(),
        **({"ctranslate2_threads": {"intra": args.threads, "inter": 1}} if ct2 is not None else {}),
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "torch_attention": hf.config._attn_implementation,
        "model": {
            "d_model": args.d_model,
            "layers": f"{args.layers}+{args.layers}",
            "heads": args.heads,
            "ffn": args.ffn,
            "vocab": args.vocab,
            "max_pos": args.max_pos,
            "dropout": args.dropout,
            "params_M": round(n_params / 1e6, 2),
        },
        "logits_max_abs_diff": logits_check(args, hf, zoo_model, zoo_params, rng),
    }
    # Generation first: training updates the torch model in place (zoo's params stay as
    # loaded), so afterwards the two sides would no longer hold the same weights.
    if run_gen:
        result["generate"] = {
            "batch": f"{args.gen_batch} x {args.gen_src_len} src tokens, beam {args.beams}, "
            f"max {args.max_new_tokens} new tokens",
            **({"ctranslate2_convert_s": ct2_convert_s} if ct2 is not None else {}),
            **bench_generate(args, hf, zoo_model, zoo_params, rng, ct2_translators),
        }
    if run_train:
        result["train"] = {
            "batch": f"{args.batch} x {args.src_len} src / {args.tgt_len} tgt tokens",
            **bench_train(args, hf, zoo_model, zoo_params, rng),
        }
    finish(result, print_table, args.json)


def print_table(r: dict) -> None:
    print(
        f"\n{r['machine']}; torch threads {r['torch_threads']}, attention "
        f"{r['torch_attention']}, OMP_WAIT_POLICY={r['omp_wait_policy']}"
    )
    print(f"model {r['model']}; logits max |diff| {r['logits_max_abs_diff']:.2e}")
    rows = []
    if "train" in r:
        t = r["train"]
        for key, label in (
            ("tgt_tokens_per_s", "train tgt tok/s"),
            ("src_tokens_per_s", "train src tok/s"),
        ):
            rows.append((label, t["torch"][key], t["zoo"][key], t["zoo"][key] / t["torch"][key]))
        rows.append(
            ("train step (s)", t["torch"]["step_s_median"], t["zoo"]["step_s_median"], None)
        )
    if "generate" in r:
        g = r["generate"]
        rows.append(
            (
                "beam sentences/s",
                g["torch"]["sentences_per_s"],
                g["zoo"]["sentences_per_s"],
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
    if "generate" in r:
        g = r["generate"]
        print(f"identical beam outputs, zoo vs torch: {g['identical_outputs']}")
    if "generate" in r and "ctranslate2" in r["generate"]:
        import _ct2_side as ct2

        print(f"\nCTranslate2 {r['versions']['ctranslate2']}, threads {r['ctranslate2_threads']}")
        ct2.print_generate_table(g)


if __name__ == "__main__":
    main()
