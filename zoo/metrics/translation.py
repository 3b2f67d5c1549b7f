"""Corpus-level translation metrics with sacreBLEU's standard settings.

BLEU: 13a tokenisation, mixed case, exponential smoothing (sacreBLEU's defaults, the WMT
convention). chrF: chrF2 (character 6-grams, no word n-grams, beta 2). Both expect detokenized
text: decode model output to plain strings first (e.g. MBartTokenizer.decode), never feed
sentencepiece pieces, or scores are not comparable with published ones.
"""

from __future__ import annotations

from collections.abc import Sequence

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
