"""The decoder-only LM family (Llama / Mistral / Qwen2): model, convert, generate.

Python face:

    model, params = zoo.lm.load(SRC)   # transformers dir, zoo model dir or `zoo train` workdir
    logits = model.apply({"params": params}, input_ids, attention_mask)  # [B, L, vocab] f32
    from zoo.lm.generate import generate
    out = generate(model, params, input_ids, attention_mask, max_new_tokens=32)

Files (checkpoint -> model -> generate):
- `model`: `LM` / `LMConfig`, `count_flops`, and the cached-decoding functions
  (`init_cache`, `prefill`, `decode_step`) that zoo.decode's searches step.
- `convert`: transformers directories in and out (`read_hf`, `save_hf`), `load`, and
  `zoo convert lm`.
- `generate`: greedy / sampling / beam generation and `zoo generate` (streaming).
"""

from zoo.lm.convert import load, read_hf, save_hf
from zoo.lm.model import LM, LMConfig, count_flops

__all__ = ["LM", "LMConfig", "count_flops", "load", "read_hf", "save_hf"]
