"""Decoder-only LM (Llama architecture): causal-LM training on packed text.

Variants:
- tiny: tests (a 2-layer, 32-wide model with grouped-query attention, seconds).
- demo: this CPU: a 4-layer, 128-wide Llama with a byte-level BPE of 2048 ids, both trained
  here on the English and German strings of the gettext catalogs (`zoo.data.gettext`).
- full: TinyLlama-1.1B's shapes (22 layers, hidden 2048, 32 heads / 4 kv heads, SwiGLU 5632,
  vocabulary 32000, 2048-token packed rows); sharded FSDP over 8 chips. To continue training
  the real TinyLlama, convert it first and start from it:

  zoo train --config recipes/lm.py:demo --workdir runs/lm_demo
  zoo train --config recipes/lm.py:tiny --workdir /tmp/lm --config.task.data_dir=/tmp/tfds
  zoo compile --config recipes/lm.py:full --topology v5e:2x4
  zoo convert lm path/to/TinyLlama-1.1B out/tinyllama
  zoo train --config recipes/lm.py:full --workdir gs://bucket/lm \
    --config.train.init_from=out/tinyllama --config.task.tokenizer=out/tinyllama/tokenizer.json
  zoo generate --checkpoint runs/lm_demo < prompt.txt
"""

import common
import ml_collections


def get_config(variant: str = "demo") -> ml_collections.ConfigDict:
    if variant not in ("tiny", "demo", "full"):
        raise ValueError(f"lm variant {variant!r}; use tiny, demo or full")
    c = ml_collections.ConfigDict()
    c.seed = 0  # init, shuffling and dropout all derive from it
    c.task = common.lm_task(vocab_size=2048)
    c.model = common.lm_model(
        hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=352,
        max_position_embeddings=256,
    )  # fmt: skip
    c.data = common.batching(
        mode="pack", global_batch_size=32, max_length=128, tokens_per_batch=4096,
        bucket_boundaries=(128,),
    )  # fmt: skip
    c.mesh = common.mesh()
    c.optim = common.optim(
        learning_rate=3e-3, warmup_steps=100, b2=0.95, eps=1e-8, weight_decay=0.1
    )
    c.train = common.train(num_steps=2000, log_every=50)
    c.eval = common.evaluation(every_steps=500, num_batches=20)
    c.checkpoint = common.checkpoint(every_steps=500)

    if variant == "tiny":
        c.task.vocab_size = 320
        c.model.update(
            hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
            max_position_embeddings=64,
        )  # fmt: skip
        c.data.update(global_batch_size=8, max_length=32, tokens_per_batch=256,
                      bucket_boundaries=(32,))  # fmt: skip
        c.optim.warmup_steps = 5
        c.train.update(num_steps=20, log_every=5, progress_bar=False)
        c.eval.update(every_steps=10, num_batches=2)
        c.checkpoint.every_steps = 10
    elif variant == "full":
        c.task.vocab_size = 32000
        c.model.update(
            vocab_size=32000, hidden_size=2048, num_layers=22, num_heads=32, num_kv_heads=4,
            intermediate_size=5632, max_position_embeddings=2048, dtype="bfloat16", remat="full",
        )  # fmt: skip
        c.data.update(global_batch_size=64, max_length=2048, tokens_per_batch=131072,
                      bucket_boundaries=(2048,))  # fmt: skip
        c.mesh = common.mesh(data=1, fsdp=-1)
        # 16-row microbatches (2 per chip): the [rows, 2048, 32000] logits and their gradient
        # are most of the memory; the full 64-row batch in one pass fits with < 2% of HBM spare.
        c.optim.update(learning_rate=4e-4, warmup_steps=2000, grad_accum_steps=4)
        c.train.update(num_steps=100_000, log_every=100)
        c.eval.update(every_steps=5000, num_batches=50)
        c.checkpoint.every_steps = 1000
    return c
