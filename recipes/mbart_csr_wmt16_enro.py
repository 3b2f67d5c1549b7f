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

import common
import ml_collections

CC25 = "checkpoints/mbart-large-cc25"  # output of `zoo convert mbart facebook/mbart-large-cc25`


def get_config(variant: str = "full") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "full"):
        raise ValueError(f"mbart_csr_wmt16_enro variant {variant!r}; use tiny or full")
    c = ml_collections.ConfigDict()
    c.seed = 222  # the paper's scripts/train.sh

    c.task = common.mbart_text_task(
        name="csr",  # stage 1: csr; stage 2: translation (+ train.init_from)
        spm_model=f"{CC25}/sentencepiece.bpe.model",
        src_lang="en_XX",
        tgt_lang="ro_RO",
        src_text_lang="en",
        tgt_text_lang="ro",
        corpus="tfds:wmt16_translate/ro-en",
        data_dir="~/tensorflow_datasets",
        label_smoothing=0.2,
    )  # lexicon "": induced from the WMT16 train pairs (Dice); or a MUSE file
    c.model = common.mbart_model(  # mbart-large-cc25
        vocab_size=250027,
        d_model=1024,
        num_heads=16,
        mlp_dim=4096,
        layers=12,
        max_length=1024,
        dropout=0.3,
        attention_dropout=0.1,
        dtype="bfloat16",
        remat="full",
    )
    c.data = common.batching(
        mode="bucket",
        global_batch_size=64,
        max_length=256,
        tokens_per_batch=8192,  # fairseq max-tokens 2048 x 4 GPUs
        bucket_boundaries=(32, 64, 128, 256),
    )
    c.mesh = common.mesh(data=1, fsdp=-1)
    c.optim = common.optim(
        learning_rate=3e-5,
        schedule="polynomial",
        warmup_steps=2500,
        end_learning_rate_ratio=0.0,
        eps=1e-6,
        weight_decay=0.0,
        clip_norm=0.0,
    )
    c.train = common.train(num_steps=5000, log_every=100, init_from=CC25)
    c.eval = common.evaluation(every_steps=1000)
    c.checkpoint = common.checkpoint(every_steps=1000)

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
