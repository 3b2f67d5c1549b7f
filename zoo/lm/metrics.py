"""Held-out loss of an LM in units that compare across tokenizers: nats per character.

Each text is scored as `[bos] text [eos]` (the markers its tokenizer has): the summed negative
log-likelihood of every token after the first, divided by the characters of the texts. Two
tokenizers of the same text then give numbers on one scale (ZeTT reports bits per byte;
per character is the same up to the text's bytes per character).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from zoo.lm.model import LM
from zoo.lm.task import BOS_NAMES, EOS_NAMES, special_id, with_markers


def heldout_nats_per_char(
    model: LM,
    params: Any,
    tokenizer: tokenizers.Tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 128,
) -> dict[str, float]:
    """{'nats_per_char', 'tokens_per_text', 'truncated'} over `texts` (rows longer than
    max_length are cut and counted in 'truncated'; their characters still count in full, so
    keep max_length above the longest text)."""
    bos, eos = special_id(tokenizer, BOS_NAMES), special_id(tokenizer, EOS_NAMES)
    rows, truncated = [], 0
    for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False):
        ids = with_markers(enc.ids, bos, eos)
        truncated += len(ids) > max_length
        rows.append(ids[:max_length])

    @jax.jit
    def nll_sum(params, tokens, real):
        logits = model.apply({"params": params}, tokens, real)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
        return jnp.sum(nll * (real[:, 1:] != 0))

    total = 0.0
    for lo in range(0, len(rows), batch_size):
        block = rows[lo : lo + batch_size]
        tokens = np.zeros((batch_size, max_length), np.int32)
        real = np.zeros((batch_size, max_length), np.int32)
        for r, ids in enumerate(block):
            tokens[r, : len(ids)], real[r, : len(ids)] = ids, 1
        total += float(nll_sum(params, tokens, real))
    chars = sum(len(t) for t in texts)
    return {
        "nats_per_char": total / max(chars, 1),
        "tokens_per_text": float(np.mean([len(r) for r in rows])) if rows else 0.0,
        "truncated": truncated,
    }
