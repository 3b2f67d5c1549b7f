"""mBART on the gettext en->de catalogs every Linux machine has: translation, CSR, denoising.

Variants: tiny (tests: a few steps, needs task.spm_model / task.locale_dir set), demo (this
CPU). The task is chosen with --config.task.name (translation | csr | denoising).

  zoo train --config recipes/mbart_demo.py:demo --workdir runs/mt \\
      --config.task.spm_model=runs/spm/spm.model
  zoo train --config recipes/mbart_demo.py:demo --workdir runs/csr1 --config.task.name=csr ...
  zoo train --config recipes/mbart_demo.py:demo --workdir runs/csr2 \\
      --config.train.init_from=runs/csr1 ...      # CSR stage 2: translation, optimizer reset
"""

import ml_collections


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "demo"):
        raise ValueError(f"mbart_demo variant {variant!r}; use tiny or demo")
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.task = ml_collections.ConfigDict()
    c.task.name = "translation"  # translation | csr | denoising
    c.task.spm_model = ""  # sentencepiece model (zoo.data.tokenizer.train_sentencepiece)
    c.task.tokenizer_style = "cc25"  # cc25: `X </s> [lang]`; mbart50: `[lang] X </s>`
    c.task.src_lang = "en_XX"  # mBART language codes
    c.task.tgt_lang = "de_DE"
    c.task.src_text_lang = "en"  # gettext catalog languages (en = the msgid)
    c.task.tgt_text_lang = "de"
    c.task.locale_dir = "/usr/share/locale"
    c.task.data_dir = "~/.cache/zoo/tfds"  # where the TFDS gettext dataset is written
    c.task.label_smoothing = 0.1
    c.task.lexicon = ""  # csr: MUSE-style `src tgt` file; "" = induce from the train pairs
    c.task.lexicon_reverse = ""  # csr: tgt->src file (default: the same file)
    c.task.lexicon_k = 3  # csr: candidates per dictionary entry
    c.task.noise_ratio = 0.35  # csr/denoising: share of words switched / masked
    c.task.noise_epochs = 10  # csr/denoising: distinct noisings before they repeat

    c.model = ml_collections.ConfigDict()  # fields of zoo.models.mbart.MBartConfig
    c.model.vocab_size = 0  # 0 = the tokenizer's vocabulary size
    c.model.d_model = 256
    c.model.num_heads = 4
    c.model.mlp_dim = 1024
    c.model.encoder_layers = 3
    c.model.decoder_layers = 3
    c.model.max_length = 128  # rows of the position tables (+2, mBART's offset)
    c.model.activation = "gelu"
    c.model.dropout = 0.1
    c.model.attention_dropout = 0.0
    c.model.activation_dropout = 0.0
    c.model.dtype = "float32"
    c.model.remat = "none"

    c.data = ml_collections.ConfigDict()
    c.data.mode = "bucket"
    c.data.global_batch_size = 64
    c.data.max_length = 128
    c.data.tokens_per_batch = 4096
    c.data.bucket_boundaries = (16, 32, 64, 128)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "inverse_sqrt"
    c.optim.warmup_steps = 200
    c.optim.end_learning_rate_ratio = 0.0
    c.optim.power = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    c.optim.grad_accum_steps = 1
    c.optim.frozen = ()

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.progress_bar = True
    c.train.init_from = ""  # e.g. the CSR stage-1 workdir (params only, optimizer reset)

    c.eval = ml_collections.ConfigDict()
    c.eval.split = "validation"
    c.eval.every_steps = 500
    c.eval.num_batches = 0

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500
    c.checkpoint.keep_last = 2
    c.checkpoint.keep_every = 0
    c.checkpoint.async_save = True

    if variant == "tiny":
        c.model.d_model = 16
        c.model.num_heads = 2
        c.model.mlp_dim = 32
        c.model.encoder_layers = 1
        c.model.decoder_layers = 1
        c.model.max_length = 64
        c.data.mode = "pad"
        c.data.global_batch_size = 8
        c.data.max_length = 64
        c.optim.warmup_steps = 2
        c.train.num_steps = 3
        c.train.log_every = 1
        c.train.progress_bar = False
        c.eval.every_steps = 3
        c.checkpoint.every_steps = 3
        c.task.noise_epochs = 2
    return c
