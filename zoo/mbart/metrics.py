"""Translation metrics: sacreBLEU's BLEU / chrF, and held-out loss per character.

BLEU: 13a tokenisation, mixed case, exponential smoothing (sacreBLEU's defaults, the WMT
convention). chrF: chrF2 (character 6-grams, no word n-grams, beta 2). Both expect detokenized
text: decode model output to plain strings first (e.g. MBartTokenizer.decode), never feed
sentencepiece pieces, or scores are not comparable with published ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from sacrebleu.metrics import BLEU, CHRF


def corpus_scores(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> dict[str, float]:
    """{"bleu": float, "chrf": float} on a 0-100 scale for a whole test set.

    hypotheses: one detokenized system output per segment; "" for an empty output (it scores
        as a segment with no matches, and all-empty output gives 0.0).
    references: one reference per hypothesis, or several reference streams (each a list as long
        as hypotheses, as in sacreBLEU's `corpus_score`).
    """
    hypotheses = list(hypotheses)
    if not hypotheses:
        raise ValueError("no hypotheses: scores of an empty test set are undefined")
    if all(isinstance(r, str) for r in references):
        streams = [list(references)]
    else:
        streams = [list(stream) for stream in references]
    for name, texts in [("hypotheses", hypotheses)] + [
        (f"references[{i}]", s) for i, s in enumerate(streams)
    ]:
        if len(texts) != len(hypotheses):
            raise ValueError(f"{name} has {len(texts)} segments, hypotheses {len(hypotheses)}")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] is {type(text).__name__} {text!r}, not str")
    return {
        "bleu": float(BLEU().corpus_score(hypotheses, streams).score),
        "chrf": float(CHRF().corpus_score(hypotheses, streams).score),
    }


def heldout_loss(mt_task, params, pairs, *, batch_size: int = 32) -> dict[str, float]:
    """Teacher-forced loss of a translation task's model on (source, target) pairs.

    Returns nats per target token and per target character (comparable across tokenizers:
    the characters do not change when the tokenizer does), and the token count.
    """
    tok, t = mt_task.tokenizer(), mt_task.config.task
    limit = mt_task.model_config.max_length
    fn = jax.jit(lambda p, b: mt_task.loss(p, b, jax.random.PRNGKey(0), train=False)[1])
    nll = tokens = chars = 0.0
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo : lo + batch_size]
        src, _ = tok.encode_batch(
            [s for s, _ in chunk], t.src_lang, max_length=limit, truncate=True
        )
        tgt, _ = tok.encode_batch(
            [y for _, y in chunk], t.tgt_lang, max_length=limit, truncate=True
        )
        length = min(-(-max(src.shape[1], tgt.shape[1]) // 16) * 16, limit)
        batch = {}
        for k, ids in (("inputs", src), ("targets", tgt)):
            padded = np.full((batch_size, length), tok.pad_id, np.int32)
            padded[: ids.shape[0], : ids.shape[1]] = ids
            batch[k] = padded
        aux = jax.device_get(fn(params, batch))
        nll += float(aux["nll"])
        tokens += float(aux["weight"])
        chars += sum(len(y) for _, y in chunk)
    return {"nats_per_token": nll / tokens, "nats_per_char": nll / chars, "tokens": tokens}
