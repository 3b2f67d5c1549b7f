"""zoo's de novo peptide sequencer (JAX) vs Casanovo 5.2.1 (PyTorch) on this CPU.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/denovo_vs_casanovo.py [--json out.json]

Needs Casanovo's environment at --casanovo-python (default /work/casenv/bin/python: casanovo
5.2.1, depthcharge-ms 0.4.10, torch CPU); zoo never imports torch. Casanovo runs in a child
process (benchmarks/_casanovo_side.py) that takes commands over a pipe, so the timed runs of
the two frameworks alternate in time (one idles, blocked on the pipe, while the other runs)
and load from other users of a shared machine falls on both alike. Takes ~8-9 minutes here
with the defaults (2 cores, moderately loaded).

What is compared, on the same spectra and the same batches (--batch), in one run:
1. Weights. A randomly initialised Casanovo `Spec2Pep` (sizes from the flags, default
   d=256, 8 heads, FFN 1024, 4 layers, max_peptide_len 30; Casanovo's default tokenizer,
   dropout 0) is saved as a checkpoint and read by zoo's importer
   (`zoo.peptide.casanovo.load_casanovo`), so the AR models are one network with the same
   weights. Random weights almost never pick the stop token `$`, so every beam would run to
   max_peptide_len; instead a few weights are edited in Casanovo's model before saving
   (`position_stop` in _casanovo_side.py): one residual feature of the decoder carries only
   the sinusoidal position (it is zeroed in the token, charge and precursor-mass encodings
   and in every layer's attention and FFN output rows), the `$` logit reads it with weight
   alpha plus a bias, and the pad and N-terminal-modification logits are lowered by 8.
   alpha and the bias are chosen on the first batch from zoo's greedy path so that greedy
   stops follow the true peptide lengths (median, spread), so beams end at realistic,
   spectrum-dependent lengths on both sides. NAR and hybrid models are zoo-only
   (`PeptideConfig(mode="nar" | "hybrid")`, same widths and layer counts, random init; the
   hybrid warm-starts its encoder and AR decoder from the edited Casanovo weights, plus its
   own `$` bias); the NAR blank logit gets a bias so that greedy CTC paths collapse to the
   true median length.
2. Spectra. --spectra simulated spectra (`zoo.peptide.simulate`: tryptic peptides of 7-20
   residues from the embedded mouse proteins) written to an MGF (`zoo.peptide.spectra.write_mgf`,
   SEQ in ProForma). Casanovo reads it with its own `DeNovoDataModule` (its preprocessing,
   its batches, padded to each batch's most peaks); zoo with `zoo.peptide.spectra.read_mgf` +
   `preprocess_spectrum` (Casanovo's preprocessing), padded to 150 peaks.
3. Inference, spectra/s from preprocessed peaks to peptide strings. Casanovo:
   `Spec2Pep.forward(batch)` under `inference_mode`, n_beams 1 and 5. zoo:
   `zoo.peptide.sequence.Sequencer.predict_all` with Casanovo 5.2.1's beam rules
   (casanovo_compatible=True, precursor_filter=False); decoders "ar" (beam 1, 5; also at
   peaks padded to the data's most peaks rounded up to 8 instead of 150), "nar" (jitted NAR
   forward + CTC prefix beam search, beam 5, on the host), "nar_pmc" (the same + precise mass
   control for peptides that miss the precursor by > 0.1 Da; only the first --pmc-spectra
   spectra, it is the slowest) and "hybrid" (beam 1, 5). AR runs alternate batch by batch
   (Casanovo batch i, then zoo batch i). The first batch is everyone's warm-up (zoo compiles
   there) and is not timed. Casanovo's decoder calls and fed positions are counted with a
   forward pre-hook; zoo's search runs the same number of steps (same rules, same logits).
4. Training, spectra/s at the same batch: Casanovo `training_step` (label-smoothed CE) +
   backward + clip-norm 1 + Adam + LR scheduler step, as its Lightning Trainer runs it; zoo
   the loop's own jitted step (`zoo.train.step.build` over the `denovo` task: loss, grad,
   clip-norm 1, optax AdamW, donated state), AOT-compiled (compile time reported apart).
   Both start from the same weights; timed steps alternate Casanovo / zoo. zoo's NAR and
   hybrid steps are timed too (no Casanovo counterpart).

Prints a table and writes the JSON result (--json). AR predictions of the two are compared
(same weights, same spectra, same search rules): where they differ at beam 1, zoo's logit
gap between the two candidates at the first differing step is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from flax.linen import meta as flax_meta  # noqa: E402

from zoo import tasks  # noqa: E402
from zoo.data import plans as zplans  # noqa: E402
from zoo.peptide import casanovo as zcasanovo  # noqa: E402
from zoo.peptide import (
    ctc,  # noqa: E402
    simulate,  # noqa: E402
    spectra,
)
from zoo.peptide import mass_control_batch as ctc_mass_batch
from zoo.peptide import model as peptide  # noqa: E402
from zoo.peptide import residues as zres  # noqa: E402
from zoo.peptide.sequence import Sequencer  # noqa: E402
from zoo.train import config as zconfig  # noqa: E402
from zoo.train import mesh as zmesh  # noqa: E402
from zoo.train import optim as zoptim  # noqa: E402
from zoo.train import step as zstep  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPRESS = 8.0  # logit penalty on pad and N-terminal modifications (see _casanovo_side.py)
ROOT = os.path.dirname(HERE)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--casanovo-python", default="/work/casenv/bin/python")
    ap.add_argument("--dim-model", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--dim-feedforward", type=int, default=1024)
    ap.add_argument("--n-layers", type=int, default=4, help="encoder = each decoder's layers")
    ap.add_argument("--max-peptide-len", type=int, default=30)
    ap.add_argument("--spectra", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pmc-spectra", type=int, default=64, help="timed spectra for nar_pmc")
    ap.add_argument("--train-steps", type=int, default=6, help="timed steps per side")
    ap.add_argument("--train-warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default="", help="also write the JSON result here")
    ap.add_argument(
        "--keep-files", action="store_true", help="keep the MGF, checkpoint and Casanovo log"
    )
    return ap.parse_args(argv)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------- Casanovo child


class Casanovo:
    """The Casanovo command server (benchmarks/_casanovo_side.py) in its own environment."""

    def __init__(self, python: str, threads: int, log_path: str):
        read_fd, write_fd = os.pipe()
        self.log_path = log_path
        with open(log_path, "w") as log:  # Lightning / depthcharge warnings, tracebacks
            self.proc = subprocess.Popen(
                [
                    python,
                    os.path.join(HERE, "_casanovo_side.py"),
                    "--reply-fd",
                    str(write_fd),
                    "--threads",
                    str(threads),
                ],
                stdin=subprocess.PIPE,
                stderr=log,
                stdout=log,
                pass_fds=(write_fd,),
                text=True,
            )
        os.close(write_fd)
        self.replies = os.fdopen(read_fd)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.replies.readline()
        if not line:
            raise RuntimeError(
                f"the Casanovo side exited (status {self.proc.wait()}); its output is in "
                f"{self.log_path}"
            )
        return json.loads(line)

    def __call__(self, cmd: str, **req) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **req}) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        if "error" in out:
            raise RuntimeError(
                f"Casanovo side, command {cmd!r}: {out['error']} (traceback in {self.log_path})"
            )
        return out

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.proc.kill()


# --------------------------------------------------------------------------- data


def write_spectra(path: str, n: int, seed: int) -> None:
    """n simulated spectra of distinct tryptic peptides (7-20 residues) as MGF, SEQ in
    ProForma (Casanovo 5's notation)."""
    peptides = simulate.fasta_digest(
        simulate.embedded_fasta(), missed_cleavages=1, min_length=7, max_length=20
    )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(peptides), n, replace=False)
    out = []
    for i, j in enumerate(chosen):
        s = simulate.simulate(peptides[j], rng)
        out.append(
            spectra.Spectrum(
                mz=s.mz,
                intensity=s.intensity,
                precursor_mz=s.precursor_mz,
                precursor_charge=s.precursor_charge,
                peptide=zres.CASANOVO.to_proforma(s.tokens),
                title=f"sim:{i}",
                scans=str(i),
            )
        )
    spectra.write_mgf(path, out)


def zoo_examples(path: str, residues: zres.Residues) -> list[dict]:
    """The MGF as zoo reads it: Casanovo's preprocessing, token ids N->C (1..n)."""
    records, _ = spectra.read_mgf(path, residues=residues)
    out = []
    for s in records:
        mz, intensity = spectra.preprocess_spectrum(s)
        tokens = [residues.tokens.index(t) + 1 for t in residues.parse(s.peptide)]
        out.append(
            {
                "mz": mz,
                "intensity": intensity,
                "precursor_mz": s.precursor_mz,
                "precursor_charge": s.precursor_charge,
                "tokens": tokens,
            }
        )
    return out


# --------------------------------------------------------------------------- calibration


def _median_bisect(f, lo: float, hi: float, target: float, iters: int = 40) -> float:
    """b in [lo, hi] with f(b) ~ target for f nonincreasing in b."""
    for _ in range(iters):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def stop_margins(config: peptide.PeptideConfig, params, seq: Sequencer, examples) -> np.ndarray:
    """[B, T] logit($) - best residue logit along each spectrum's greedy residue path."""
    model = peptide.PeptideModel(config)
    stop, steps = config.stop_id, config.max_peptide_len

    @jax.jit
    def margins(params, mz, inten, mass, charge):
        v = {"params": params}
        memory, mask = model.apply(v, mz, inten, method=peptide.PeptideModel.encode)
        nar_states = None
        if config.mode == "hybrid":
            nar_states = model.apply(
                v, memory, mask, mass, charge, method=peptide.PeptideModel.nar
            )[0]
        logits, cache = model.apply(
            v,
            mass,
            charge,
            memory,
            mask,
            nar_states,
            steps,
            method=peptide.PeptideModel.ar_init_cache,
        )

        def body(carry, _):
            logits, cache = carry
            residues = logits[:, 1:stop]
            token = residues.argmax(-1).astype(jnp.int32) + 1
            logits, cache = model.apply(v, token, cache, method=peptide.PeptideModel.ar_step)
            return (logits, cache), carry[0][:, stop] - residues.max(-1)

        return jax.lax.scan(body, (logits, cache), None, length=steps)[1].T

    x = seq.inputs(examples)
    return np.asarray(
        margins(params, x["mz"], x["intensity"], x["precursor_mass"], x["precursor_charge"])
    )


def stop_lengths(margins_BxT: np.ndarray, bias: float) -> np.ndarray:
    """Greedy stop position (residues before `$`) per spectrum; T when it never stops."""
    hit = margins_BxT + bias > 0
    return np.where(hit.any(1), hit.argmax(1), margins_BxT.shape[1])


def calibrate_stop(margins_BxT: np.ndarray, target: float) -> float:
    """The `$` bias that makes the median greedy stop position `target`."""
    lo, hi = float(-margins_BxT.max()) - 1, float(-margins_BxT.min()) + 1
    return _median_bisect(lambda b: np.median(stop_lengths(margins_BxT, b)), lo, hi, target)


def ctc_lengths(logits_BxTxC: np.ndarray, blank_bias: float) -> np.ndarray:
    """Greedy CTC peptide lengths after adding blank_bias to the blank logit."""
    lp = logits_BxTxC.copy()
    lp[..., 0] += blank_bias
    return np.array([len(d.tokens) for d in ctc.ctc_greedy(lp)])


def calibrate_blank(logits_BxTxC: np.ndarray, target: float) -> float:
    """The blank bias that makes the median greedy CTC peptide length `target`."""
    spread = float(np.abs(logits_BxTxC).max()) * 2 + 1
    return _median_bisect(
        lambda b: np.median(ctc_lengths(logits_BxTxC, b)), -spread, spread, target
    )


def position_feature(params, config: peptide.PeptideConfig) -> int:
    """The sine feature of the decoder's position encoding that rises monotonically over
    positions 0..max_peptide_len: divisor ~4/3 max_peptide_len, so the phase t / divisor
    stays below 0.75 rad, where the sine still rises."""
    terms = np.asarray(params["ar_positions"]["terms"])
    n_sin = -(-config.d_model // 2)
    want = 4.0 / 3.0 * config.max_peptide_len
    return int(np.argmin(np.abs(terms[:n_sin] - want)))


def calibrate_position_stop(m0_BxT, h_BxT, true_lengths, min_length: int = 6):
    """(alpha, bias, greedy lengths): `$` logit += alpha * position feature + bias, chosen
    so that greedy stop lengths have the true lengths' median and about their spread, with
    few beams stopping below Casanovo's min_peptide_len or never."""
    steps = m0_BxT.shape[1]
    med = float(np.median(true_lengths))
    iqr = float(np.subtract(*np.percentile(true_lengths, [75, 25])))
    best = None
    for alpha in np.geomspace(1.0, 1000.0, 61):
        m = m0_BxT + alpha * h_BxT
        bias = calibrate_stop(m, med)
        lengths = stop_lengths(m, bias)
        q75, q25 = np.percentile(lengths, [75, 25])
        score = (
            abs((q75 - q25) - iqr)
            + 50 * np.mean(lengths < min_length)
            + 50 * np.mean(lengths >= steps)
        )
        if best is None or score < best[0]:
            best = (score, float(alpha), float(bias), lengths)
    return best[1], best[2], best[3]


def bump(params, path: tuple[str, ...], index, value: float, *, assign: bool = False):
    """Copy of params with params[path][index] += value (= value when assign)."""
    params = jax.tree.map(lambda x: x, params)  # new containers, same leaves
    node = params
    for key in path[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    leaf = np.array(node[path[-1]], np.float32)
    leaf[index] = value if assign else leaf[index] + value
    node[path[-1]] = leaf
    return params


def random_params(config: peptide.PeptideConfig, seed: int):
    """Freshly initialised (unboxed, host) parameters of a zoo peptide model."""
    model = peptide.PeptideModel(config)
    f = jnp.zeros((1, 8), jnp.float32)
    variables = model.init(
        jax.random.key(seed),
        f,
        f,
        jnp.zeros((1,), jnp.float32),
        jnp.ones((1,), jnp.int32),
        jnp.zeros((1, 4), jnp.int32),
    )
    return jax.device_get(flax_meta.unbox(variables["params"]))


# --------------------------------------------------------------------------- inference


def zoo_timed(seq: Sequencer, examples, decoder: str, batch: int) -> dict:
    """Warm-up on the first batch (compile), then the rest timed batch by batch."""
    t0 = time.perf_counter()
    first = seq.predict_all(examples[:batch], decoder, batch)
    warm = time.perf_counter() - t0
    times, preds = [], list(first)
    for start in range(batch, len(examples), batch):
        t0 = time.perf_counter()
        preds += seq.predict_all(examples[start : start + batch], decoder, batch)
        times.append(time.perf_counter() - t0)
    n = len(examples) - batch
    return {
        "warmup_s": warm,
        "seconds": times,
        "spectra": n,
        "spectra_per_s": n / sum(times),
        "peptides": [p.tokens for p in preds],
    }


def ar_interleaved(cas: Casanovo, beam: int, seqs: dict, examples, batch: int) -> dict:
    """Casanovo and zoo's AR searches batch by batch in turn (Casanovo batch i, then each
    zoo Sequencer on batch i), so that load from other jobs falls on all alike. Batch 0 is
    everyone's warm-up (zoo compiles there) and is not timed."""
    n_batches = len(examples) // batch
    cas_out: dict = {
        k: [] for k in ("seconds", "peptides", "decoder_calls", "decoder_rows", "decoder_positions")
    }
    zoo_out = {name: {"seconds": [], "peptides": []} for name in seqs}
    for i in range(n_batches):
        out = cas("infer", beam=beam, batches=[i])
        for key in cas_out:
            cas_out[key] += out[key]
        chunk = examples[i * batch : (i + 1) * batch]
        for name, seq in seqs.items():
            t0 = time.perf_counter()
            preds = seq.predict_all(chunk, "ar", batch)
            zoo_out[name]["seconds"].append(time.perf_counter() - t0)
            zoo_out[name]["peptides"] += [p.tokens for p in preds]
    res = {"casanovo": cas_out, **zoo_out}
    for r in res.values():
        warm, *timed = r.pop("seconds")
        r["warmup_s"], r["seconds"] = warm, timed
        r["spectra"] = (n_batches - 1) * batch
        r["spectra_per_s"] = r["spectra"] / sum(timed)
    return res


def divergence_gap(config, params, residues, example, cas_tokens, zoo_tokens):
    """For a greedy (beam 1) disagreement: zoo's logit of Casanovo's token minus zoo's logit
    of its own at the first step where the two paths part (teacher-forced on the shared
    prefix). ~0 means a float near-tie that either framework may break its own way."""
    if not cas_tokens or not zoo_tokens:
        return None  # a discarded beam on one side: no single step to compare
    stop = config.stop_id
    ids = lambda toks: [residues.tokens.index(t) + 1 for t in toks]  # noqa: E731
    a, z = ids(cas_tokens), ids(zoo_tokens)
    if config.reverse:
        a, z = a[::-1], z[::-1]
    a, z = a + [stop], z + [stop]
    j = next(i for i in range(min(len(a), len(z))) if a[i] != z[i])
    seq = Sequencer(config, params, residues, max_peaks=150)
    x = seq.inputs([example])
    prefix = jnp.asarray([a[:j] or [0]], jnp.int32)[:, : max(j, 1)]
    out = peptide.PeptideModel(config).apply(
        {"params": params},
        x["mz"],
        x["intensity"],
        x["precursor_mass"],
        x["precursor_charge"],
        prefix,
    )
    logits = np.asarray(out["ar_logits"][0, j])
    return float(logits[a[j]] - logits[z[j]])


def as_tokens(peptide_text: str, residues: zres.Residues) -> tuple[str, ...]:
    return tuple(residues.parse(peptide_text)) if peptide_text else ()


def nar_breakdown(seq: Sequencer, examples, batch: int, pmc_batches: int) -> dict:
    """Where the NAR decoders' time goes, per batch: the jitted forward, then host work."""
    fwd, beam, greedy, pmc = [], [], [], []
    for i, start in enumerate(range(batch, len(examples), batch)):
        x = seq.inputs(examples[start : start + batch])
        args = (seq.params, x["mz"], x["intensity"], x["precursor_mass"], x["precursor_charge"])
        t0 = time.perf_counter()
        lp = np.asarray(jax.device_get(seq._nar(*args)), np.float64)
        fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ctc.ctc_greedy(lp)
        greedy.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ctc.ctc_beam_search(lp, seq.ctc_beam, top_k=1)  # what Sequencer asks for
        beam.append(time.perf_counter() - t0)
        if i < pmc_batches:
            neutral = (x["precursor_mz"] - zres.PROTON) * x["precursor_charge"]
            t0 = time.perf_counter()
            ctc_mass_batch.ctc_decode_with_mass_batch(  # Sequencer's call
                lp,
                seq.masses,
                neutral,
                beam=seq.ctc_beam,
                tolerance=seq.pmc_tolerance,
                nterm=seq.nterm,
            )
            pmc.append(time.perf_counter() - t0)
    return {
        "forward_s_per_batch": statistics.median(fwd),
        "ctc_greedy_s_per_batch": statistics.median(greedy),
        "ctc_beam_s_per_batch": statistics.median(beam),
        "pmc_s_per_batch": statistics.median(pmc) if pmc else None,
    }


# --------------------------------------------------------------------------- training


def zoo_train_setup(config: peptide.PeptideConfig, args, casanovo_hp: dict):
    c = zconfig.load(os.path.join(ROOT, "recipes", "denovo_demo.py") + ":demo")
    c.unlock()
    c.model = ml_collections.ConfigDict(dataclasses.asdict(config))
    c.task.max_peaks = 150
    c.task.label_smoothing = casanovo_hp["label_smoothing"]
    c.data.global_batch_size = args.batch
    c.optim.learning_rate = casanovo_hp["lr"]
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 100  # Casanovo warms up too (100k iterations)
    c.optim.b1, c.optim.b2, c.optim.eps = 0.9, 0.999, 1e-8  # torch.optim.Adam defaults
    c.optim.weight_decay = casanovo_hp["weight_decay"]
    c.optim.clip_norm = 1.0
    c.train.num_steps = 1000
    task = tasks.get_task(c)
    mesh = zmesh.make_mesh(c.mesh)
    tx, schedule = zoptim.make_optimizer(c.optim, c.train.num_steps)
    return task, zstep.build(task, c, mesh, tx, schedule)


def zoo_train_batch(
    examples, config: peptide.PeptideConfig, max_peaks: int, max_tokens: int | None = None
) -> dict:
    b, t = len(examples), max_tokens or config.max_peptide_len
    out = {
        "mz": np.zeros((b, max_peaks), np.float32),
        "intensity": np.zeros((b, max_peaks), np.float32),
        "precursor_mass": np.zeros(b, np.float32),
        "precursor_charge": np.zeros(b, np.int32),
        "tokens": np.zeros((b, t), np.int32),
        "weight": np.ones(b, np.float32),
    }
    for i, e in enumerate(examples):
        mz, inten = e["mz"][:max_peaks], e["intensity"][:max_peaks]  # <= 150 after preprocessing
        out["mz"][i, : len(mz)] = mz
        out["intensity"][i, : len(mz)] = inten
        z = int(e["precursor_charge"])
        out["precursor_mass"][i] = zres.neutral_mass(float(e["precursor_mz"]), z)
        out["precursor_charge"][i] = z
        out["tokens"][i, : len(e["tokens"])] = e["tokens"][:t]
    return out


def zoo_bucketed_batches(examples, config: peptide.PeptideConfig, batch: int) -> list[dict]:
    """The same consecutive batches, each padded to the smallest bucket boundary that holds its
    longest spectrum and peptide. Boundaries as `zoo.peptide.task` draws them (task.num_buckets
    = 3): quantiles of all spectra's peak counts (rounded up to 8, then 150) and peptide
    lengths (rounded up to 4, then max_peptide_len)."""
    peaks = np.array([min(len(e["mz"]), 150) for e in examples])
    lengths = np.array([len(e["tokens"]) for e in examples])
    pb = zplans.histogram_boundaries(peaks, 3, 150, 8)
    tb = zplans.histogram_boundaries(lengths, 3, config.max_peptide_len, 4)
    out = []
    for i in range(len(examples) // batch):
        rows = slice(i * batch, (i + 1) * batch)
        p = pb[int(np.searchsorted(pb, peaks[rows].max()))]
        t = tb[int(np.searchsorted(tb, lengths[rows].max()))]
        out.append(zoo_train_batch(examples[rows], config, p, t))
    return out


def bench_train(args, cas: Casanovo, task, setup, params, examples) -> dict:
    """Casanovo vs zoo on the same batches, zoo at 150 peaks x max length (`fixed`) and at
    bucketed shapes (`bucketed`, see zoo_bucketed_batches); timed steps alternate Casanovo,
    zoo fixed, zoo bucketed. Each zoo variant's shapes are compiled before timing."""
    n_batches = len(examples) // args.batch
    variants = {
        "fixed": [
            zoo_train_batch(examples[i * args.batch : (i + 1) * args.batch], task.model.config, 150)
            for i in range(n_batches)
        ],
        "bucketed": zoo_bucketed_batches(examples, task.model.config, args.batch),
    }
    key = jax.random.PRNGKey(0)
    runs, compile_s, shapes = {}, {}, {}
    for name, batches in variants.items():
        batches = [
            {k: jax.device_put(v, setup.batch_sharding[k]) for k, v in b.items()} for b in batches
        ]
        state = setup.init_from_params(params)
        t0 = time.perf_counter()
        steps = {}
        for b in batches:
            shape = (b["mz"].shape[1], b["tokens"].shape[1])
            if shape not in steps:
                steps[shape] = setup.train_step.lower(state, b, key).compile()
        compile_s[name] = time.perf_counter() - t0
        shapes[name] = sorted(steps)
        runs[name] = {"state": state, "batches": batches, "steps": steps, "times": [], "losses": []}

    cas_times, cas_losses = [], []
    total = args.train_warmup + args.train_steps
    for i in range(total):
        j = i % n_batches
        out = cas("train", batches=[j])
        if i >= args.train_warmup:
            cas_times.append(out["seconds"][0])
        cas_losses.append(out["losses"][0])
        for r in runs.values():
            b = r["batches"][j]
            step = r["steps"][(b["mz"].shape[1], b["tokens"].shape[1])]
            t0 = time.perf_counter()
            r["state"], metrics = step(r["state"], b, key)
            loss = float(metrics["loss"])  # waits for the step
            if i >= args.train_warmup:
                r["times"].append(time.perf_counter() - t0)
            r["losses"].append(loss)
    res = {"jax_compile_s": compile_s, "zoo_shapes": shapes}
    m = statistics.median(cas_times)
    res["casanovo"] = {
        "step_s_median": m,
        "step_s_all": cas_times,
        "spectra_per_s": args.batch / m,
        "losses": cas_losses,
    }
    for name, r in runs.items():
        m = statistics.median(r["times"])
        res["zoo" if name == "fixed" else "zoo_bucketed"] = {
            "step_s_median": m,
            "step_s_all": r["times"],
            "spectra_per_s": args.batch / m,
            "losses": r["losses"],
        }
    cas_rate = res["casanovo"]["spectra_per_s"]
    res["ratio_zoo_over_casanovo"] = res["zoo"]["spectra_per_s"] / cas_rate
    res["ratio_zoo_bucketed_over_casanovo"] = res["zoo_bucketed"]["spectra_per_s"] / cas_rate
    return res


def zoo_train_only(args, config, params, casanovo_hp, examples) -> dict:
    """zoo's train step for a mode Casanovo does not have (nar, hybrid): spectra/s only."""
    task, setup = zoo_train_setup(config, args, casanovo_hp)
    batch = zoo_train_batch(examples[: args.batch], config, 150)
    batch = {k: jax.device_put(v, setup.batch_sharding[k]) for k, v in batch.items()}
    state = setup.init_from_params(params)
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    step = setup.train_step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(args.train_warmup + args.train_steps):
        t0 = time.perf_counter()
        state, metrics = step(state, batch, key)
        float(metrics["loss"])
        if i >= args.train_warmup:
            times.append(time.perf_counter() - t0)
    m = statistics.median(times)
    return {"jax_compile_s": compile_s, "step_s_median": m, "spectra_per_s": args.batch / m}


# --------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = parse_args(argv)
    wall0 = time.perf_counter()
    result: dict = {
        "command": "JAX_PLATFORMS=cpu .venv/bin/python benchmarks/denovo_vs_casanovo.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "args": vars(args),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "jax": jax.__version__,
        "load_start": load(),
    }
    tmp = tempfile.mkdtemp(prefix="denovo_bench_")
    mgf, ckpt = os.path.join(tmp, "spectra.mgf"), os.path.join(tmp, "casanovo.ckpt")
    write_spectra(mgf, args.spectra, args.seed)
    print(f"[{time.perf_counter() - wall0:6.1f}s] {args.spectra} spectra -> {mgf}", flush=True)

    cas = Casanovo(args.casanovo_python, args.threads, os.path.join(tmp, "casanovo_side.log"))
    try:
        result["casanovo_env"] = cas.info
        hp = cas(
            "build",
            seed=args.seed,
            dim_model=args.dim_model,
            n_head=args.n_head,
            dim_feedforward=args.dim_feedforward,
            n_layers=args.n_layers,
            max_peptide_len=args.max_peptide_len,
            ckpt=ckpt,
        )
        result["casanovo_model"] = hp
        config, params, info = zcasanovo.load_casanovo(ckpt)
        residues = info.residues
        examples = zoo_examples(mgf, residues)
        b = args.batch
        n_batches = len(examples) // b
        examples = examples[: n_batches * b]

        # --- beams end at realistic lengths on both sides ------------------------------------
        # Surgery in Casanovo's model (then saved and imported again, so both sides keep
        # identical weights): a residual feature that carries only the position drives `$`.
        k = position_feature(params, config)
        cas("position_stop", k=k, alpha=0.0, bias=0.0, suppress=SUPPRESS)
        config, params, info = zcasanovo.load_casanovo(ckpt)
        calib = examples[:b]
        true_lengths = np.array([len(e["tokens"]) for e in calib])
        probe = Sequencer(config, params, residues, max_peaks=150)
        stop = config.stop_id
        m0 = stop_margins(config, params, probe, calib)
        unit = bump(params, ("ar_output", "kernel"), (k, stop), 1.0, assign=True)
        h = stop_margins(config, unit, probe, calib) - m0
        alpha, stop_bias, lengths = calibrate_position_stop(m0, h, true_lengths)
        cas("position_stop", k=k, alpha=alpha, bias=stop_bias)
        config, params, info = zcasanovo.load_casanovo(ckpt)  # the file Casanovo also holds
        result["position_stop"] = {
            "feature": k,
            "alpha": alpha,
            "bias": stop_bias,
            "greedy_length_quartiles_calibration_batch": np.percentile(
                lengths, [25, 50, 75]
            ).tolist(),
            "true_length_quartiles_calibration_batch": np.percentile(
                true_lengths, [25, 50, 75]
            ).tolist(),
        }

        loaded = cas("load", mgf=mgf, batch_size=b, lance_dir=os.path.join(tmp, "lance"))
        same_order = np.allclose(
            loaded["precursor_mz"][: len(examples)], [e["precursor_mz"] for e in examples]
        )
        same_peaks = loaded["n_peaks"][: len(examples)] == [len(e["mz"]) for e in examples]
        result["inputs_check"] = {
            "casanovo_spectra": loaded["spectra"],
            "same_order": bool(same_order),
            "same_peak_counts": bool(same_peaks),
            "casanovo_load_s": loaded["seconds"],
        }
        print(
            f"[{time.perf_counter() - wall0:6.1f}s] model {hp['params']:,} params; "
            f"{result['position_stop']}; inputs {result['inputs_check']}",
            flush=True,
        )

        # --- AR: Casanovo vs zoo, same weights -------------------------------------------------
        inference: dict = {}
        tight_peaks = -(-max(len(e["mz"]) for e in examples) // 8) * 8
        for beam in (1, 5):
            seqs = {
                "zoo_ar": Sequencer(
                    config,
                    params,
                    residues,
                    max_peaks=150,
                    beam=beam,
                    precursor_filter=False,
                    casanovo_compatible=True,
                ),
                # The same search with peaks padded to the data's most peaks (rounded up to
                # 8) instead of 150: Casanovo pads each batch to its own longest spectrum.
                f"zoo_ar_{tight_peaks}_peaks": Sequencer(
                    config,
                    params,
                    residues,
                    max_peaks=tight_peaks,
                    beam=beam,
                    precursor_filter=False,
                    casanovo_compatible=True,
                ),
            }
            res = ar_interleaved(cas, beam, seqs, examples, b)
            cas_res, zoo_res = res["casanovo"], res["zoo_ar"]
            cas_tokens = [as_tokens(p, residues) for p in cas_res.pop("peptides")]
            zoo_tokens = zoo_res.pop("peptides")
            for name in seqs:
                res[name].pop("peptides", None)
            same = sum(x == y for x, y in zip(cas_tokens, zoo_tokens))
            differ = [
                {"spectrum": i, "casanovo": "".join(x), "zoo": "".join(y)}
                for i, (x, y) in enumerate(zip(cas_tokens, zoo_tokens))
                if x != y
            ]
            if beam == 1:
                for d in differ[:5]:
                    i = d["spectrum"]
                    d["zoo_logit_gap_at_divergence"] = divergence_gap(
                        config, params, residues, examples[i], cas_tokens[i], zoo_tokens[i]
                    )
            found = sum(bool(x) for x in cas_tokens)
            lengths = [len(x) for x in cas_tokens if x]
            inference[f"beam{beam}"] = {
                **res,
                "identical_predictions": f"{same}/{len(cas_tokens)}",
                "differing_predictions": differ[:5],
                "casanovo_found": f"{found}/{len(cas_tokens)}",
                "predicted_length_median": float(np.median(lengths)) if lengths else None,
                "ratio_zoo_over_casanovo": zoo_res["spectra_per_s"] / cas_res["spectra_per_s"],
                "casanovo_decoder_calls_per_batch": statistics.mean(cas_res["decoder_calls"]),
                "casanovo_decoder_positions_per_spectrum": sum(cas_res["decoder_positions"])
                / len(cas_tokens),
                "load": load(),
            }
            tight = res[f"zoo_ar_{tight_peaks}_peaks"]
            print(
                f"[{time.perf_counter() - wall0:6.1f}s] beam {beam}: Casanovo "
                f"{cas_res['spectra_per_s']:.2f} spectra/s, zoo {zoo_res['spectra_per_s']:.2f} "
                f"({tight['spectra_per_s']:.2f} at {tight_peaks} peaks) "
                f"(compile+first batch {zoo_res['warmup_s']:.1f}s); identical {same}/"
                f"{len(cas_tokens)}, Casanovo found {found}",
                flush=True,
            )

        # --- NAR (zoo only) ------------------------------------------------------------------
        nar_config = dataclasses.replace(config, mode="nar", ar_layers=0, nar_layers=args.n_layers)
        nar_params = random_params(nar_config, args.seed + 1)
        probe = Sequencer(nar_config, nar_params, residues, max_peaks=150)
        x = probe.inputs(calib)
        logits = np.asarray(
            probe._nar(
                nar_params, x["mz"], x["intensity"], x["precursor_mass"], x["precursor_charge"]
            ),
            np.float64,
        )
        blank_bias = calibrate_blank(logits, float(np.median(true_lengths)))
        nar_params = bump(nar_params, ("nar_output", "bias"), 0, blank_bias)
        result["blank_bias"] = blank_bias
        nar_seq = Sequencer(
            nar_config,
            nar_params,
            residues,
            max_peaks=150,
            precursor_filter=False,
            casanovo_compatible=True,
        )
        nar = zoo_timed(nar_seq, examples, "nar", b)
        nar["length_median"] = float(np.median([len(p) for p in nar.pop("peptides")]))
        inference["nar"] = nar
        pmc_n = min(len(examples), b + args.pmc_spectra)
        pmc = zoo_timed(nar_seq, examples[:pmc_n], "nar_pmc", b)
        pmc.pop("peptides")
        inference["nar_pmc"] = pmc
        inference["nar_breakdown"] = nar_breakdown(nar_seq, examples, b, pmc_batches=1)
        inference["nar_load"] = load()
        print(
            f"[{time.perf_counter() - wall0:6.1f}s] NAR {nar['spectra_per_s']:.2f} spectra/s, "
            f"PMC {pmc['spectra_per_s']:.2f}; breakdown {inference['nar_breakdown']}",
            flush=True,
        )

        # --- hybrid (zoo only) ---------------------------------------------------------------
        hyb_config = dataclasses.replace(config, mode="hybrid", nar_layers=args.n_layers)
        hyb_params = zcasanovo.warm_start_hybrid(random_params(hyb_config, args.seed + 2), params)
        hyb_params = bump(hyb_params, ("nar_output", "bias"), 0, blank_bias)
        probe = Sequencer(hyb_config, hyb_params, residues, max_peaks=150)
        hyb_margins = stop_margins(hyb_config, hyb_params, probe, calib)
        # The warm start copied the stop surgery; shift `$` for the hybrid's own margins.
        extra = calibrate_stop(hyb_margins, float(np.median(true_lengths)))
        hyb_params = bump(hyb_params, ("ar_output", "bias"), hyb_config.stop_id, extra)
        result["hybrid_extra_stop_bias"] = extra
        for beam in (1, 5):
            seq = Sequencer(
                hyb_config,
                hyb_params,
                residues,
                max_peaks=150,
                beam=beam,
                precursor_filter=False,
                casanovo_compatible=True,
            )
            res = zoo_timed(seq, examples, "hybrid", b)
            toks = res.pop("peptides")
            res["found"] = f"{sum(bool(t) for t in toks)}/{len(toks)}"
            inference[f"hybrid_beam{beam}"] = res
        inference["hybrid_load"] = load()
        print(
            f"[{time.perf_counter() - wall0:6.1f}s] hybrid beam 1 "
            f"{inference['hybrid_beam1']['spectra_per_s']:.2f}, beam 5 "
            f"{inference['hybrid_beam5']['spectra_per_s']:.2f} spectra/s",
            flush=True,
        )
        result["inference"] = inference

        # --- training ------------------------------------------------------------------------
        task, setup = zoo_train_setup(config, args, hp)
        result["train"] = bench_train(args, cas, task, setup, params, examples)
        result["train"]["load"] = load()
        tr = result["train"]
        print(
            f"[{time.perf_counter() - wall0:6.1f}s] train: Casanovo "
            f"{tr['casanovo']['spectra_per_s']:.2f} spectra/s, zoo {tr['zoo']['spectra_per_s']:.2f}"
            f", bucketed {tr['zoo_bucketed']['spectra_per_s']:.2f} (compile {tr['jax_compile_s']},"
            f" shapes {tr['zoo_shapes']['bucketed']})",
            flush=True,
        )
        result["train_zoo_only"] = {
            "nar": zoo_train_only(args, nar_config, nar_params, hp, examples),
            "hybrid": zoo_train_only(args, hyb_config, hyb_params, hp, examples),
        }
    finally:
        cas.close()
        if args.keep_files:
            print(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["load_end"] = load()
    result["wall_s"] = time.perf_counter() - wall0
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return result


def print_table(r: dict) -> None:
    inf, tr = r["inference"], r["train"]
    rows = [
        (
            "AR beam 1",
            inf["beam1"]["casanovo"]["spectra_per_s"],
            inf["beam1"]["zoo_ar"]["spectra_per_s"],
        ),
        (
            "AR beam 5",
            inf["beam5"]["casanovo"]["spectra_per_s"],
            inf["beam5"]["zoo_ar"]["spectra_per_s"],
        ),
        ("NAR (CTC beam 5)", None, inf["nar"]["spectra_per_s"]),
        ("NAR + precise mass control", None, inf["nar_pmc"]["spectra_per_s"]),
        ("hybrid beam 1", None, inf["hybrid_beam1"]["spectra_per_s"]),
        ("hybrid beam 5", None, inf["hybrid_beam5"]["spectra_per_s"]),
        ("training (AR)", tr["casanovo"]["spectra_per_s"], tr["zoo"]["spectra_per_s"]),
        (
            "training (AR), bucketed",
            tr["casanovo"]["spectra_per_s"],
            tr["zoo_bucketed"]["spectra_per_s"],
        ),
        ("training (NAR)", None, r["train_zoo_only"]["nar"]["spectra_per_s"]),
        ("training (hybrid)", None, r["train_zoo_only"]["hybrid"]["spectra_per_s"]),
    ]
    print(f"\n{'spectra/s':<30}{'Casanovo':>10}{'zoo':>10}{'zoo/Cas':>10}")
    for name, c, z in rows:
        ratio = f"{z / c:.2f}x" if c else ""
        cs = f"{c:.2f}" if c else "-"
        print(f"{name:<30}{cs:>10}{z:>10.2f}{ratio:>10}")
    nar_vs = inf["nar"]["spectra_per_s"] / inf["beam5"]["zoo_ar"]["spectra_per_s"]
    print(f"NAR / zoo AR beam 5: {nar_vs:.2f}x")
    print(
        f"AR identical predictions: beam 1 {inf['beam1']['identical_predictions']}, "
        f"beam 5 {inf['beam5']['identical_predictions']}"
    )
    print(f"load {r['load_start']} -> {r['load_end']}; wall {r['wall_s']:.0f}s")


if __name__ == "__main__":
    main()
