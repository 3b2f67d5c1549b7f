"""Model-agnostic decoding: greedy, beam and diverse beam search over a step function."""

from zoo.decode.search import (
    StepFn,
    beam_search,
    diverse_beam_search,
    gather_rows,
    greedy_search,
    hamming_penalty,
    max_length_for,
    repeat_rows,
)

__all__ = [
    "StepFn",
    "beam_search",
    "diverse_beam_search",
    "gather_rows",
    "greedy_search",
    "hamming_penalty",
    "max_length_for",
    "repeat_rows",
]
