"""The blocks every recipe shares, each knob with its comment (as big_vision's configs/common.py).

A recipe builds its config from these blocks, passes what differs as arguments, and sets the
few keys its variants change; `zoo train --config R --print-config` shows the result. The
loop's blocks (mesh, optim, train, eval, checkpoint) come first, then the families' task and
model blocks, then what the multi-stage demo drivers share.

Recipes import this file as `common`: `zoo train` puts the recipe's folder on sys.path while
it loads the recipe, and `python recipes/X.py` runs with that folder first on sys.path.
"""

from __future__ import annotations

import os

import ml_collections

ConfigDict = ml_collections.ConfigDict


# ------------------------------------------------------------------------------ the loop


def mesh(*, data: int = -1, fsdp: int = 1, tensor: int = 1) -> ConfigDict:
    c = ConfigDict()  # the device mesh; -1 = fill with the remaining devices
    c.data = data  # data parallelism: batch rows split, parameters replicated
    c.fsdp = fsdp  # batch rows split and parameters / optimizer state sharded (ZeRO-3)
    c.tensor = tensor  # tensor parallelism: heads, FFN and vocabulary split
    return c


def optim(
    *,
    learning_rate: float,
    schedule: str = "cosine",
    warmup_steps: int,
    end_learning_rate_ratio: float = 0.05,
    power: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.98,
    eps: float = 1e-9,
    weight_decay: float = 0.01,
    clip_norm: float = 1.0,
    grad_accum_steps: int = 1,
    frozen: tuple[str, ...] = (),
) -> ConfigDict:
    c = ConfigDict()  # AdamW with a linear warmup (zoo.train.optim)
    c.learning_rate = learning_rate  # peak, reached after warmup_steps
    c.schedule = schedule  # constant | cosine | linear | polynomial | inverse_sqrt
    c.warmup_steps = warmup_steps  # linear warmup from 0
    c.end_learning_rate_ratio = end_learning_rate_ratio  # final lr / peak (cosine, linear, poly)
    c.power = power  # polynomial decay power
    c.b1 = b1  # Adam first-moment decay
    c.b2 = b2  # Adam second-moment decay
    c.eps = eps  # Adam epsilon
    c.weight_decay = weight_decay  # decoupled; skips biases and norm scales (1-D parameters)
    c.clip_norm = clip_norm  # global-norm gradient clipping; 0 disables
    c.grad_accum_steps = grad_accum_steps  # microbatches per step (same result, less memory)
    c.frozen = frozen  # regexes of '/'-joined parameter paths that do not train
    return c


def train(
    *,
    num_steps: int,
    log_every: int = 50,
    progress_bar: bool = True,
    init_from: str = "",
    init_from_patterns: tuple[str, ...] = (),
    max_seconds: float = 0.0,
) -> ConfigDict:
    c = ConfigDict()
    c.num_steps = num_steps  # optimizer steps of the run
    c.log_every = log_every  # metrics.jsonl / TensorBoard interval (steps)
    c.progress_bar = progress_bar  # a live bar with ETA on stderr (process 0)
    c.init_from = init_from  # start from these params (model dir or workdir), fresh optimizer
    c.init_from_patterns = init_from_patterns  # only these params (regexes) from init_from
    # A budget of training-step seconds (counted across resumes; compilation and evals not
    # counted; 0 = none): the run ends, saved and evaluated, at the first step past it or at
    # num_steps, whichever comes first. Each metrics row's `train_seconds` is the count.
    c.max_seconds = max_seconds
    return c


def evaluation(*, every_steps: int, num_batches: int = 0, split: str = "validation") -> ConfigDict:
    c = ConfigDict()
    c.split = split  # the split evaluated
    c.every_steps = every_steps  # and at the last step; 0 = never
    c.num_batches = num_batches  # 0 = the whole split
    return c


def checkpoint(
    *, every_steps: int, keep_last: int = 3, keep_every: int = 0, async_save: bool = True
) -> ConfigDict:
    c = ConfigDict()
    c.every_steps = every_steps  # also saved at the last step and on SIGTERM
    c.keep_last = keep_last  # 0 = keep all
    c.keep_every = keep_every  # also keep every K-th step forever; 0 = off
    c.async_save = async_save  # write in the background while training continues
    return c


def batching(
    *,
    mode: str,
    global_batch_size: int,
    max_length: int,
    tokens_per_batch: int,
    bucket_boundaries: tuple[int, ...],
) -> ConfigDict:
    c = ConfigDict()  # how token sequences become batches (zoo.data.pipeline)
    c.mode = mode  # "pad" | "bucket" (about constant tokens per batch) | "pack"
    c.global_batch_size = global_batch_size  # pad/pack: sequences per step over all devices
    c.max_length = max_length  # pad/pack: padded/packed length (EOS included)
    c.tokens_per_batch = tokens_per_batch  # bucket: padded tokens per step over all devices
    c.bucket_boundaries = bucket_boundaries  # bucket: upper length bounds
    return c


# ------------------------------------------------------------------------------ the families


def mbart_text_task(
    *,
    name: str,
    spm_model: str,
    src_lang: str,
    tgt_lang: str,
    src_text_lang: str,
    tgt_text_lang: str,
    corpus: str = "gettext",
    data_dir: str = "~/.cache/zoo/tfds",
    label_smoothing: float = 0.1,
) -> ConfigDict:
    c = ConfigDict()  # zoo.mbart.tasks: translation | csr | denoising
    c.name = name  # translation | csr | denoising
    c.spm_model = spm_model  # sentencepiece model in mBART's id layout
    c.tokenizer_style = "cc25"  # cc25: `X </s> [lang]`; mbart50: `[lang] X </s>`
    c.src_lang = src_lang  # mBART language codes, e.g. en_XX
    c.tgt_lang = tgt_lang
    c.corpus = corpus  # "gettext" | "tfds:NAME" (needs the tfds-catalog extra and network)
    c.src_text_lang = src_text_lang  # the corpus's language keys (gettext: en = the msgid)
    c.tgt_text_lang = tgt_text_lang
    c.locale_dir = "/usr/share/locale"  # corpus=gettext: the catalogs
    c.data_dir = data_dir  # where the TFDS dataset is written
    c.label_smoothing = label_smoothing  # fairseq's label_smoothed_cross_entropy epsilon
    c.lexicon = ""  # csr: MUSE-style `src tgt` file; "" = induce from the train pairs (Dice)
    c.lexicon_reverse = ""  # csr: tgt->src file (default: the same file)
    c.lexicon_k = 3  # csr: candidates per dictionary entry
    c.noise_ratio = 0.35  # csr/denoising: share of words switched / masked
    c.noise_epochs = 3  # csr/denoising: distinct noisings before they repeat
    return c


def mbart_model(
    *,
    vocab_size: int,
    d_model: int,
    num_heads: int,
    mlp_dim: int,
    layers: int,
    max_length: int,
    dropout: float,
    attention_dropout: float = 0.0,
    dtype: str = "float32",
    remat: str = "none",
) -> ConfigDict:
    c = ConfigDict()  # fields of zoo.mbart.model.MBartConfig
    c.vocab_size = vocab_size  # 0 = the tokenizer's vocabulary size
    c.d_model = d_model  # model width
    c.num_heads = num_heads  # attention heads
    c.mlp_dim = mlp_dim  # FFN hidden width
    c.encoder_layers = layers
    c.decoder_layers = layers
    c.max_length = max_length  # rows of the position tables (+2, mBART's offset)
    c.activation = "gelu"  # exact erf GELU (mBART); "relu" for fine-tuned mBART-50
    c.dropout = dropout  # after embeddings, attention out-projections and the FFN
    c.attention_dropout = attention_dropout  # on attention probabilities
    c.activation_dropout = 0.0  # after the FFN activation
    c.dtype = dtype  # compute dtype ("bfloat16" for mixed precision); params stay float32
    c.remat = remat  # "none" | "full" | a jax.checkpoint_policies name
    return c


def denovo_task(
    *,
    dataset: str,
    max_peaks: int,
    data_dir: str = "~/.cache/zoo/tfds",
    label_smoothing: float = 0.01,
) -> ConfigDict:
    c = ConfigDict()  # zoo.peptide.task: the hybrid AR/NAR objective
    c.name = "denovo"
    c.dataset = dataset  # "simulated" | "mgf" (a directory of annotated MGF files)
    c.data_dir = data_dir  # where the TFDS dataset is written
    c.max_peaks = max_peaks  # most intense peaks fed to the encoder (Casanovo keeps <= 150)
    c.stage = "joint"  # "joint" | "ar" (stage 2: AR loss only; freeze via optim.frozen)
    c.anneal = True  # hybrid: lambda = step / anneal_steps, else lambda = ar_weight
    c.anneal_steps = 0  # 0 = train.num_steps
    c.ar_weight = 0.5  # hybrid without annealing: weight of the AR loss
    c.label_smoothing = label_smoothing  # Casanovo's train_label_smoothing
    # Batches padded to a bucket cell (peaks x residues) instead of (max_peaks, max length):
    # up to num_buckets boundaries per column from the training split's histogram (0 = one
    # fixed shape); or name them, e.g. peak_buckets=(64, 150), length_buckets=(16, 30).
    c.num_buckets = 3
    c.peak_buckets = ()
    c.length_buckets = ()
    return c


def peptide_model(
    *,
    d_model: int,
    n_heads: int,
    d_ff: int,
    layers: int,
    max_charge: int,
    nar_slots: int,
    max_peptide_len: int,
    dtype: str = "float32",
) -> ConfigDict:
    c = ConfigDict()  # fields of zoo.peptide.model.PeptideConfig
    c.mode = "hybrid"  # "ar" (Casanovo-like) | "nar" (PrimeNovo-like) | "hybrid" (CrossNovo)
    c.n_residues = 27  # residue tokens: Casanovo's vocabulary
    c.d_model = d_model  # width of every stack
    c.n_heads = n_heads  # attention heads everywhere
    c.d_ff = d_ff  # FFN hidden width
    c.encoder_layers = layers  # spectrum encoder layers
    c.ar_layers = layers  # AR decoder layers
    c.nar_layers = layers  # NAR decoder layers
    c.dropout = 0.0
    c.max_charge = max_charge  # rows of the charge embeddings; charge c reads row c-1
    c.nar_slots = nar_slots  # NAR decoder length: >= 2 x the longest peptide suffices for CTC
    c.max_peptide_len = max_peptide_len  # residues + stop, decoded
    c.reverse = True  # AR decodes C->N like Casanovo 5
    c.dtype = dtype  # compute dtype; parameters and sinusoid phases stay float32
    return c


def lm_task(*, vocab_size: int, data_dir: str = "~/.cache/zoo/tfds") -> ConfigDict:
    c = ConfigDict()  # zoo.lm.task: next-token loss on packed text
    c.name = "causal_lm"
    c.corpus = "gettext"  # "gettext" (the catalogs under locale_dir) | "files" (text files)
    c.text_langs = "en,de"  # gettext: the sides used as documents (en = the msgids)
    c.locale_dir = "/usr/share/locale"  # gettext: the catalogs
    c.train_files = ""  # files: comma-separated globs, one document per line
    c.validation_files = ""
    c.data_dir = data_dir  # gettext's TFDS dataset and trained tokenizers are cached here
    c.tokenizer = ""  # a tokenizer.json; "" = train a byte-level BPE on the train split
    c.vocab_size = vocab_size  # ids of that trained BPE (ignored with task.tokenizer)
    c.add_bos = True  # each document starts with the tokenizer's <s> / <|begin_of_text|>
    c.add_eos = True  # and ends with its </s> / <|end_of_text|>
    c.label_smoothing = 0.0
    return c


def lm_model(
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    dtype: str = "float32",
) -> ConfigDict:
    c = ConfigDict()  # fields of zoo.lm.model.LMConfig (transformers' LlamaConfig names)
    c.vocab_size = 0  # 0 = the tokenizer's vocabulary size
    c.hidden_size = hidden_size  # model width
    c.num_layers = num_layers
    c.num_heads = num_heads  # query heads
    c.num_kv_heads = num_kv_heads  # key/value heads (grouped-query attention; = heads for MHA)
    c.head_dim = 0  # 0 = hidden_size // num_heads
    c.intermediate_size = intermediate_size  # SwiGLU hidden width
    c.max_position_embeddings = max_position_embeddings  # longest sequence (rope tables)
    c.rope_theta = 10000.0  # rotary base
    c.rms_norm_eps = 1e-5
    c.attention_bias = False  # q/k/v biases (Qwen2)
    c.tie_word_embeddings = False  # lm_head shares the input embedding
    c.sliding_window = 0  # 0 = full causal attention; W = Mistral's sliding window
    c.dtype = dtype  # compute dtype ("bfloat16" for mixed precision); params stay float32
    c.remat = "none"  # "none" | "full": recompute each layer in the backward pass
    return c


def zett_sampler(c: ConfigDict, *, sample_vocab_size: int = 2000) -> ConfigDict:
    """Adds ZeTT's training keys (the per-step tokenizer sampler, warm-up, auxiliary loss) to
    a tokenizer-transfer task block c; returns c."""
    c.target_tokenizer = ""  # "" = sample a tokenizer every step; a path = fixed target
    c.sample_vocab_size = sample_vocab_size  # pieces of each sampled UnigramLM tokenizer
    c.sample_window = 16  # batches whose substring counts the sampler reads (ZeTT: 16)
    c.noise_std = -1.0  # sampler noise; -1 = ZeTT's sigma ~ LogNormal(ln 1e-5, 4) per step
    c.max_substring_len = 15  # longest substring counted (characters)
    c.aux_weight = 0.5  # auxiliary loss: one-piece tokens' predictions vs source rows
    c.identity_steps = 30  # identity warm-up steps (ZeTT: 10k of 200k)
    c.identity_tokens = 1024  # source tokens per warm-up step (ZeTT: 16384)
    c.anchor_tokens = 2048  # source tokens the output scalers are fitted on
    return c


def hypernet_model() -> ConfigDict:
    c = ConfigDict()  # zoo.zett.hypernet.HypernetConfig (sizes come from the base model)
    c.hidden_dim = 0  # 0 = the base model's width
    c.num_layers = 3
    c.num_heads = 0  # 0 = hidden // 64
    c.mlp_dim = 0  # 0 = 2 * hidden
    c.max_len = 7  # source pieces per token
    c.num_fallback = 256  # learned rows for bytes the source vocabulary lacks
    c.dtype = "float32"
    return c


# ------------------------------------------------------------------------------ demo drivers


def use_compilation_cache(workdir: str) -> None:
    """A persistent XLA cache in workdir: stages with the same shapes reuse executables."""
    import jax  # heavy: only the demo drivers need it, not get_config

    jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def with_overrides(c: ConfigDict, overrides: dict) -> ConfigDict:
    """Sets dotted keys ("train.init_from": ...) in c; unknown keys are errors."""
    for key, value in overrides.items():
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"{key} is not a key of this recipe's config")
        node[leaf] = value
    return c


def train_stage(title: str, config: ConfigDict, workdir: str):
    """Trains one stage of a demo through the loop -> (task, final params)."""
    from zoo import tasks  # heavy: only the demo drivers need it, not get_config
    from zoo.train import loop

    print(f"\n=== {title}, {config.train.num_steps} steps -> {workdir}")
    task = tasks.get_task(config)
    summary = loop.train(config, workdir, task)
    return task, summary["state"].params


def write_results(
    workdir: str,
    demo: str,
    summary: dict,
    details: dict,
    runs: dict[str, str],
    metrics: tuple[str, ...],
) -> str:
    """A demo's ending: WORKDIR/results.json ({"demo", "summary", "details"}), the training
    runs' learning curves overlaid (WORKDIR/learning_curves.png, `zoo plot` of `runs`: label
    -> run workdir) and WORKDIR/summary.png, a bar per model for each of `metrics` of the
    summary. Returns the results.json path."""
    import json

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from zoo.train import plot

    path = os.path.join(workdir, "results.json")
    with open(path, "w") as f:
        json.dump({"demo": demo, "summary": summary, "details": details}, f, indent=1)
    done = {label: w for label, w in runs.items() if os.path.isfile(f"{w}/metrics.jsonl")}
    if done:
        plot.plot_runs(list(done.values()), os.path.join(workdir, plot.FILENAME), list(done))
    fig = Figure(figsize=(3.2 * len(metrics) + 1, 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    names = list(summary)
    for ax, metric in zip(axes, metrics):
        values = [float(summary[n].get(metric, float("nan"))) for n in names]
        bars = ax.bar(range(len(names)), values, color=[f"C{i}" for i in range(len(names))])
        ax.bar_label(bars, fmt="%.3g", fontsize="small")
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(metric)
    fig.suptitle(f"{demo}: {os.path.abspath(workdir)}")
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "summary.png"), dpi=100)
    return path


def print_table(title: str, summary: dict, metrics: tuple[str, ...]) -> None:
    """The summary as a fixed-width table (the last thing a demo prints)."""
    print(f"\n=== {title}")
    print(f"{'model':<16}" + "".join(f"{m:>26}" for m in metrics))
    for name, row in summary.items():
        print(f"{name:<16}" + "".join(f"{float(row.get(m, float('nan'))):26.4f}" for m in metrics))
