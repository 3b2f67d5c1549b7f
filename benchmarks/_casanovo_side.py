"""Casanovo's half of benchmarks/denovo_vs_casanovo.py; runs in Casanovo's own environment.

    /work/casenv/bin/python benchmarks/_casanovo_side.py   (started by the benchmark, not by hand)

A small command server so that the benchmark can interleave timed runs of Casanovo and zoo
(each process idles, blocked on a pipe, while the other one runs). Requests are JSON lines on
stdin; each reply is one JSON line on the file descriptor given by --reply-fd (stdout is sent
to stderr, because Lightning and depthcharge print).

Commands ({"cmd": ..., ...}):
- build: a randomly initialised `Spec2Pep` (torch.manual_seed(seed)) built as Casanovo's
  `ModelRunner.initialize_model` builds it (tokenizer from the default config: its residues,
  I replaced by L, reversed, stop `$`), with the given sizes and max_peptide_len; saved as a
  Lightning-style checkpoint (state_dict + hyper_parameters, the tokenizer object included)
  for zoo's importer. Replies the parameter count and the training settings.
- position_stop: weight surgery so that the random decoder picks `$` after a realistic,
  position-dependent number of residues (random weights almost never pick it, so every
  beam would run to max_peptide_len); saves the checkpoint again.
- load: reads an MGF with Casanovo's own `DeNovoDataModule` (depthcharge SpectrumDataset,
  Casanovo's preprocessing functions and charge filter, annotated so that `seq` is
  tokenized), batch size as given, and keeps the batches in memory.
- infer: `Spec2Pep.forward(batch)` (= `_process_batch` + `beam_search_decode`, what
  `predict_step` calls) on every batch under `torch.inference_mode()`, with `n_beams` = beam
  and top_match 1. Replies per-batch seconds, the predicted peptides (ProForma, N->C; "" when
  no beam ended with `$`) and per batch the decoder calls, rows and token positions fed
  (Casanovo reruns its decoder on the whole prefix of every live beam at each step).
- train: `training_step(batch)` (forward, label-smoothed CE) + `loss.backward()` + gradient
  clipping at norm 1 (what Casanovo's Trainer does) + Adam step + scheduler step, optimizer
  and schedule from `configure_optimizers`; model in train mode. Replies per-step seconds
  and losses.
- quit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/mbart_vs_torch.py
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def build(req: dict, state: dict) -> dict:
    from casanovo.config import Config
    from casanovo.denovo.model import Spec2Pep
    from depthcharge.tokenizers import PeptideTokenizer

    cfg = Config()
    tokenizer = PeptideTokenizer(
        residues=cfg.residues,
        replace_isoleucine_with_leucine=cfg.replace_isoleucine_with_leucine,
        reverse=True,
        start_token=None,
        stop_token="$",
    )
    torch.manual_seed(int(req["seed"]))
    model = Spec2Pep(
        dim_model=req["dim_model"],
        n_head=req["n_head"],
        dim_feedforward=req["dim_feedforward"],
        n_layers=req["n_layers"],
        dropout=cfg.dropout,
        max_peptide_len=req["max_peptide_len"],
        max_charge=cfg.max_charge,
        min_peptide_len=cfg.min_peptide_len,
        n_beams=1,
        top_match=1,
        n_log=cfg.n_log,
        warmup_iters=cfg.warmup_iters,
        cosine_schedule_period_iters=cfg.cosine_schedule_period_iters,
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        train_label_smoothing=cfg.train_label_smoothing,
        calculate_precision=False,
        out_writer=None,
        tokenizer=tokenizer,
    )
    state["model"], state["ckpt"] = model, req["ckpt"]
    _save(state)
    return {
        "params": int(sum(p.numel() for p in model.parameters())),
        "dropout": float(cfg.dropout),
        "lr": float(cfg.learning_rate),
        "weight_decay": float(cfg.weight_decay),
        "label_smoothing": float(cfg.train_label_smoothing),
        "max_charge": int(cfg.max_charge),
        "min_peptide_len": int(cfg.min_peptide_len),
    }


def _save(state: dict) -> None:
    model = state["model"]
    ckpt = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": __import__("lightning").__version__,
    }
    torch.save(ckpt, state["ckpt"])


def position_stop(req: dict, state: dict) -> dict:
    """Makes the random decoder end beams at a position-dependent step (see the benchmark's
    docstring): feature `k` of the decoder's residual stream carries only the sinusoidal
    position (zero in the token, charge and precursor-mass encodings and in every layer's
    attention and FFN output rows), and the `$` logit reads it with weight `alpha`, plus
    `bias`; the pad and N-terminal modification logits are lowered by `suppress`. Saves the
    checkpoint again.
    """
    model = state["model"]
    dec, k, stop = model.decoder, int(req["k"]), model.tokenizer.stop_int
    with torch.no_grad():
        for layer in dec.transformer_decoder.layers:
            for proj in (layer.self_attn.out_proj, layer.multihead_attn.out_proj, layer.linear2):
                proj.weight[k, :] = 0.0
                proj.bias[k] = 0.0
        dec.token_encoder.weight[:, k] = 0.0
        dec.charge_encoder.weight[:, k] = 0.0
        dec.mass_encoder.sin_term[k] = 1e30  # sin(mass / 1e30) = 0: no precursor in feature k
        dec.final.weight[stop, k] = float(req["alpha"])
        dec.final.bias[stop] += float(req["bias"])
        # Pad and N-terminal modifications end a beam when picked in the wrong place; a
        # random model picks them as often as any residue, a trained one rarely.
        for i in [0, *model.nterm_idx.tolist()]:
            dec.final.bias[i] -= float(req.get("suppress", 0.0))
    _save(state)
    return {"stop_int": int(stop)}


def load(req: dict, state: dict) -> dict:
    from casanovo.config import Config
    from casanovo.denovo.dataloaders import DeNovoDataModule

    cfg = Config()
    model = state["model"]
    lance = req.get("lance_dir") or tempfile.mkdtemp(prefix="casanovo_lance_")
    t0 = time.perf_counter()
    loaders = DeNovoDataModule(
        test_paths=[req["mgf"]],
        eval_batch_size=req["batch_size"],
        train_batch_size=req["batch_size"],
        min_mz=cfg.min_mz,
        max_mz=cfg.max_mz,
        min_intensity=cfg.min_intensity,
        remove_precursor_tol=cfg.remove_precursor_tol,
        max_charge=cfg.max_charge,
        min_peaks=cfg.min_peaks,
        n_workers=0,
        lance_dir=lance,
        tokenizer=model.tokenizer,
    )
    loaders.setup(stage="test", annotated=True)
    batches = list(loaders.test_dataloader())
    state["batches"] = batches
    return {
        "seconds": time.perf_counter() - t0,
        "spectra": int(sum(len(b["precursor_mz"]) for b in batches)),
        "batches": len(batches),
        "peaks_per_batch": [int(b["mz_array"].shape[1]) for b in batches],
        "precursor_mz": [float(x) for b in batches for x in b["precursor_mz"]],
        "n_peaks": [int((row > 0).sum()) for b in batches for row in b["mz_array"]],
    }


def infer(req: dict, state: dict) -> dict:
    model = state["model"]
    model.eval()
    model.n_beams, model.top_match = int(req["beam"]), 1
    batches = state["batches"]
    which = req.get("batches") or list(range(len(batches)))
    times, peptides, calls, rows, positions = [], [], [], [], []
    count = {"calls": 0, "rows": 0, "positions": 0}

    def counter(module, args, kwargs):  # one decoder pass: rows x (precursor + prefix)
        n, t = kwargs["tokens"].shape
        count["calls"] += 1
        count["rows"] += n
        count["positions"] += n * (t + 1)

    hook = model.decoder.register_forward_pre_hook(counter, with_kwargs=True)
    np.random.seed(0)  # Casanovo's heap breaks ties with np.random
    try:
        with torch.inference_mode():
            for i in which:
                count.update(calls=0, rows=0, positions=0)
                t0 = time.perf_counter()
                out = model.forward(batches[i])
                times.append(time.perf_counter() - t0)
                peptides += [preds[0][2] if preds else "" for preds in out]
                calls.append(count["calls"])
                rows.append(count["rows"])
                positions.append(count["positions"])
    finally:
        hook.remove()
    return {
        "seconds": times,
        "peptides": peptides,
        "decoder_calls": calls,
        "decoder_rows": rows,
        "decoder_positions": positions,
    }


def train(req: dict, state: dict) -> dict:
    model = state["model"]
    if "optimizer" not in state:
        optimizers, sched = model.configure_optimizers()
        state["optimizer"], state["scheduler"] = optimizers[0], sched["scheduler"]
    opt, scheduler = state["optimizer"], state["scheduler"]
    model.train()
    batches = state["batches"]
    times, losses = [], []
    for i in req["batches"]:
        t0 = time.perf_counter()
        loss = model.training_step(batches[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Casanovo's Trainer: gradient_clip_val 1.0, algorithm "norm" (config.yaml).
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        times.append(time.perf_counter() - t0)
    return {"seconds": times, "losses": losses}


COMMANDS = {
    "build": build,
    "position_stop": position_stop,
    "load": load,
    "infer": infer,
    "train": train,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reply-fd", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    reply = os.fdopen(args.reply_fd, "w", buffering=1)
    sys.stdout = sys.stderr
    torch.set_num_threads(args.threads)
    import casanovo
    import depthcharge

    reply.write(
        json.dumps(
            {
                "ready": True,
                "casanovo": casanovo.__version__,
                "depthcharge": depthcharge.__version__,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            }
        )
        + "\n"
    )
    state: dict = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        try:
            out = COMMANDS[req["cmd"]](req, state)
        except Exception as e:  # reported to the driver, which raises
            import traceback

            traceback.print_exc()
            out = {"error": f"{type(e).__name__}: {e}"}
        reply.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
