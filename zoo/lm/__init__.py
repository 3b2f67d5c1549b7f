"""Decoder-only LMs (Llama / Mistral / Qwen2): model, convert, generate.

    logits = model.apply({"params": params}, input_ids, attention_mask)  # [B, L, vocab] f32
"""

from zoo.lm.model import LM, LMConfig, count_flops

__all__ = ["LM", "LMConfig", "count_flops"]
