"""zoo.lm.generate on a tiny random model: searches over the cache equal a naive loop of full
forward passes, one-token prompts work, right padding is refused."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from tests.lm.test_model import TINY, _ids, _init
from zoo.lm.generate import generate

CONFIG = dataclasses.replace(TINY, num_layers=1, sliding_window=4)


WIDTH = 12  # one compiled forward pass for every prefix: causal, so right pads change nothing


def naive_greedy(model, params, prompt: list[int], steps: int) -> list[int]:
    apply = jax.jit(model.apply)
    seq = list(prompt)
    for _ in range(steps):
        padded = np.asarray([seq + [0] * (WIDTH - len(seq))])
        seq.append(int(np.argmax(apply({"params": params}, padded)[0, len(seq) - 1])))
    return seq[len(prompt) :]


@pytest.mark.parametrize("prompt_len", [1, 5])
def test_greedy_equals_a_loop_of_full_forward_passes(prompt_len):
    model, variables = _init(CONFIG)
    params = variables["params"]
    prompt = np.asarray(_ids((prompt_len,), CONFIG.vocab_size, 4)).tolist()
    out = generate(model, params, [prompt], max_new_tokens=6, eos_id=-1, pad_id=0)
    assert out.tokens[0].tolist() == naive_greedy(model, params, prompt, 6)


def test_right_padded_prompts_are_refused():
    model, variables = _init(CONFIG)
    params = variables["params"]
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, params, [[5, 6, 0]], [[1, 1, 0]], max_new_tokens=2)
    with pytest.raises(ValueError, match="method='topk'"):
        generate(model, params, [[5]], max_new_tokens=2, method="topk")
