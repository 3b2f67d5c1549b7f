"""Generic searches over any cached step function: greedy, sampling, beam and diverse beam.

Part of the core: nothing here knows a model family. A model plugs in with a step function
`(token_ids [N], cache) -> (logits [N, vocab], cache)` and a cache laid out as
`zoo.nn.cache` describes; family-specific searches (e.g. the peptide AR search with its mass
rules) live in their family and reuse `zoo.nn.cache` and `zoo.decode.beams`.
"""

from zoo.decode.search import (
    StepFn,
    beam_search,
    diverse_beam_search,
    filter_logits,
    greedy_search,
    hamming_penalty,
    max_length_for,
    sample_search,
)

__all__ = [
    "StepFn",
    "beam_search",
    "diverse_beam_search",
    "filter_logits",
    "greedy_search",
    "hamming_penalty",
    "max_length_for",
    "sample_search",
]
