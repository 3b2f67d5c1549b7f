"""CSR on WMT16 En-Ro from mbart-large-cc25, the paper's setting (Zan et al. 2022).

Stage 1: code-switching restore, 5000 updates. Stage 2: translation fine-tuning from the
stage-1 parameters with the optimizer, schedule and step counter reset (train.init_from).
Both: cc25 init, label smoothing 0.2, Adam(0.9, 0.98, eps 1e-6), lr 3e-5 polynomial decay,
2500 warmup, dropout 0.3, attention dropout 0.1, ~2048 tokens per GPU x 4 GPUs.

Variants: full (TPU/GPU), tiny (this CPU: the same tasks and stages on a tiny random model,
using the gettext en->ro catalogs, since the WMT16 builder needs TensorFlow and network).

  zoo convert mbart facebook/mbart-large-cc25 checkpoints/mbart-large-cc25   # network, once
  pip install -e '.[tfds-catalog]'                                          # WMT16 builder
  zoo train --config recipes/mbart_csr_wmt16_enro.py:full --workdir gs://BUCKET/csr1 \\
      --config.task.name=csr --config.train.num_steps=5000
  zoo train --config recipes/mbart_csr_wmt16_enro.py:full --workdir gs://BUCKET/csr2 \\
      --config.task.name=translation --config.train.init_from=gs://BUCKET/csr1 \\
      --config.train.num_steps=30000
  zoo compile --config recipes/mbart_csr_wmt16_enro.py:full --topology v5e:2x4
"""

import ml_collections

CC25 = "checkpoints/mbart-large-cc25"  # output of `zoo convert mbart facebook/mbart-large-cc25`


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "full"):
        raise ValueError(f"mbart_csr_wmt16_enro variant {variant!r}; use tiny or full")
    c = ml_collections.ConfigDict()
    c.seed = 222  # the paper's scripts/train.sh

    c.task = ml_collections.ConfigDict()
    c.task.name = "csr"  # stage 1: csr; stage 2: translation (+ train.init_from)
    c.task.spm_model = f"{CC25}/sentencepiece.bpe.model"
    c.task.tokenizer_style = "cc25"
    c.task.src_lang = "en_XX"
    c.task.tgt_lang = "ro_RO"
    c.task.corpus = "tfds:wmt16_translate/ro-en"
    c.task.src_text_lang = "en"
    c.task.tgt_text_lang = "ro"
    c.task.locale_dir = "/usr/share/locale"  # corpus=gettext only
    c.task.data_dir = "~/tensorflow_datasets"
    c.task.label_smoothing = 0.2
    c.task.lexicon = ""  # "" = induced from the WMT16 train pairs (Dice); or a MUSE file
    c.task.lexicon_reverse = ""
    c.task.lexicon_k = 3
    c.task.noise_ratio = 0.35
    c.task.noise_epochs = 3

    c.model = ml_collections.ConfigDict()  # mbart-large-cc25
    c.model.vocab_size = 250027
    c.model.d_model = 1024
    c.model.num_heads = 16
    c.model.mlp_dim = 4096
    c.model.encoder_layers = 12
    c.model.decoder_layers = 12
    c.model.max_length = 1024
    c.model.activation = "gelu"
    c.model.dropout = 0.3
    c.model.attention_dropout = 0.1
    c.model.activation_dropout = 0.0
    c.model.dtype = "bfloat16"
    c.model.remat = "full"

    c.data = ml_collections.ConfigDict()
    c.data.mode = "bucket"
    c.data.global_batch_size = 64
    c.data.max_length = 256
    c.data.tokens_per_batch = 8192  # fairseq max-tokens 2048 x 4 GPUs
    c.data.bucket_boundaries = (32, 64, 128, 256)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1
    c.mesh.fsdp = -1
    c.mesh.tensor = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 3e-5
    c.optim.schedule = "polynomial"
    c.optim.warmup_steps = 2500
    c.optim.end_learning_rate_ratio = 0.0
    c.optim.power = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 0.0
    c.optim.grad_accum_steps = 1
    c.optim.frozen = ()

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 5000
    c.train.log_every = 100
    c.train.progress_bar = True
    c.train.init_from = CC25

    c.eval = ml_collections.ConfigDict()
    c.eval.split = "validation"
    c.eval.every_steps = 1000
    c.eval.num_batches = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.keep_last = 3
    c.checkpoint.keep_every = 0
    c.checkpoint.async_save = True

    if variant == "tiny":
        c.task.spm_model = ""  # set by the caller (tests: a small committed model)
        c.task.corpus = "gettext"
        c.task.data_dir = "~/.cache/zoo/tfds"
        c.task.noise_epochs = 2
        c.model.vocab_size = 0
        c.model.d_model = 16
        c.model.num_heads = 2
        c.model.mlp_dim = 32
        c.model.encoder_layers = 1
        c.model.decoder_layers = 1
        c.model.max_length = 64
        c.model.dtype = "float32"
        c.model.remat = "none"
        c.data.mode = "pad"
        c.data.global_batch_size = 8
        c.data.max_length = 64
        c.mesh.data = -1
        c.mesh.fsdp = 1
        c.optim.warmup_steps = 2
        c.train.num_steps = 3
        c.train.log_every = 1
        c.train.progress_bar = False
        c.train.init_from = ""
        c.eval.every_steps = 3
        c.checkpoint.every_steps = 3
    return c
