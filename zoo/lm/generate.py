"""Text generation with a decoder-only LM: the `generate` Python API and `zoo generate`.

    out = generate(model, params, input_ids, attention_mask, max_new_tokens=32)  # greedy
    out = generate(..., method="sample", temperature=0.8, top_p=0.9, seed=0)
    out = generate(..., method="beam", num_beams=4)   # out.beams, out.scores: every beam

The prompt (left-padded, as transformers' generate) is run into the cache without its last
token, which then starts the search: zoo.decode's step-function contract, so greedy, beam
and sampling are zoo.decode's searches unchanged, each one jitted `lax.while_loop`.

`zoo generate --checkpoint DIR` reads prompts from stdin, ONE PROMPT PER LINE, and writes
each continuation on its own line of stdout. Greedy and sampling stream: a jitted decode
step runs per token from Python and the decoded increment is printed and flushed as it comes
(sampling uses the same per-step keys as `sample_search`, so it prints the same tokens);
beam search prints when the search ends.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from zoo.decode import beam_search, filter_logits, greedy_search, sample_search
from zoo.decode.search import compiler_options
from zoo.io import modeldir
from zoo.lm import convert
from zoo.lm import model as lm
from zoo.lm.task import CausalLMTask

METHODS = ("greedy", "sample", "beam")


@dataclasses.dataclass
class GenerateOptions:
    """The knobs of `zoo generate`; its flags take their defaults from here."""

    max_new_tokens: int = 64  # tokens generated per prompt, EOS included (--max-new-tokens)
    temperature: float = 0.0  # 0: greedy; > 0: sampling at this temperature (--temperature)
    top_k: int = 0  # sampling: keep the k best tokens (0: all) (--top-k)
    top_p: float = 1.0  # sampling: keep the smallest set of mass >= p (--top-p)
    beam: int = 1  # > 1: beam search with this many beams, printed at the end (--beam)
    length_penalty: float = 1.0  # beam: finished score = log-prob / length**this
    seed: int = 0  # sampling's PRNG seed (--seed)

    @property
    def method(self) -> str:
        if self.beam > 1:
            return "beam"
        return "sample" if self.temperature > 0 else "greedy"

    def check(self) -> None:
        """One clear line, naming the `zoo generate` flag, for an option out of range."""
        for field, lo in (("max_new_tokens", 1), ("top_k", 0), ("beam", 1), ("seed", 0)):
            v = getattr(self, field)
            if type(v) is not int or v < lo:
                raise ValueError(f"--{field.replace('_', '-')} {v!r} must be an integer >= {lo}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"--temperature {self.temperature!r} must be a number >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top-p {self.top_p!r} must be in (0, 1]")
        if self.beam > 1 and self.temperature > 0:
            raise ValueError("--beam > 1 searches deterministically; drop --temperature")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"--length-penalty {self.length_penalty!r} must be finite")


class GenerateOutput(NamedTuple):
    tokens: np.ndarray  # [B, T] int32 new tokens (the best beam for beam search), pad after EOS
    beams: np.ndarray | None  # beam: [B, K, T] int32, best first
    scores: np.ndarray | None  # beam: [B, K] f32 (transformers' sequences_scores)


def _special_ids(config: lm.LMConfig, eos_id, pad_id) -> tuple[int, int]:
    eos = config.eos_token_id if eos_id is None else eos_id
    eos = -1 if eos is None else int(eos)  # -1: no EOS, every row runs max_new_tokens
    pad = config.pad_token_id if pad_id is None else pad_id
    if pad is None:  # transformers pads with the EOS when the model has no pad token
        pad = max(eos, 0)
    return eos, int(pad)


def _start(model: lm.LM, params, input_ids, attention_mask, max_new_tokens: int):
    """Cache holding the prompt but its last token, and that token: [B] (the search start)."""
    prompt_len = input_ids.shape[1]
    max_length = prompt_len - 1 + max_new_tokens
    if prompt_len > 1:
        _, cache = lm.prefill(model, params, input_ids[:, :-1], attention_mask[:, :-1], max_length)
    else:
        cache = lm.init_cache(model, params, attention_mask[:, :0], max_length)
    return cache, input_ids[:, -1]


def _search(
    params, input_ids, attention_mask, rng, temperature, top_k, top_p, length_penalty, eos_id,
    pad_id, *, model, method, max_new_tokens, num_beams, early_stopping,
):  # fmt: skip
    cache, start_B = _start(model, params, input_ids, attention_mask, max_new_tokens)
    step_fn = lambda tokens_N, c: lm.decode_step(model, params, c, tokens_N)  # noqa: E731
    common = dict(start_ids_B=start_B, max_len=max_new_tokens, eos_id=eos_id, pad_id=pad_id)
    if method == "greedy":
        return greedy_search(step_fn, cache, **common), None, None
    if method == "sample":
        tokens = sample_search(
            step_fn, cache, rng=rng, temperature=temperature, top_k=top_k, top_p=top_p, **common
        )
        return tokens, None, None
    beams, scores = beam_search(
        step_fn, cache, beam_size=num_beams, length_penalty=length_penalty,
        early_stopping=early_stopping, **common,
    )  # fmt: skip
    return beams[:, 0], beams, scores


@functools.cache
def _jitted_search():
    """_search under jit, built on first use: compiler_options() asks for the backend, which
    must not start at import (a multi-process run initialises jax.distributed first)."""
    return jax.jit(
        _search,
        static_argnames=("model", "method", "max_new_tokens", "num_beams", "early_stopping"),
        compiler_options=compiler_options(),
    )


def _check_prompt(input_ids, attention_mask) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(input_ids, np.int32)
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
    if ids.ndim != 2 or ids.shape != mask.shape or ids.shape[1] == 0:
        raise ValueError(
            f"input_ids {ids.shape} and attention_mask {mask.shape} must both be [batch, "
            "length] with length >= 1"
        )
    if not mask[:, -1].all():
        raise ValueError(
            "generate needs left-padded prompts (attention_mask 1 in the last column), as "
            "transformers' generate: pad on the left"
        )
    return ids, mask


def generate(
    model: lm.LM,
    params: Any,
    input_ids,
    attention_mask=None,
    *,
    max_new_tokens: int,
    method: str = "greedy",
    num_beams: int = 4,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> GenerateOutput:
    """New tokens after left-padded prompts, by zoo.decode's searches inside one jax.jit.

    input_ids, attention_mask: [B, P] int (1 real / 0 pad; pads on the left). method:
    "greedy" | "sample" (temperature / top_k / top_p as transformers' warpers, PRNG `seed`)
    | "beam" (num_beams, length_penalty, early_stopping as transformers' generate).
    eos_id / pad_id default to the config's (pad: the EOS when the config has none, as
    transformers). Equals transformers' `generate(max_new_tokens=..., do_sample=...)`
    token for token (tests/lm/test_parity.py).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {METHODS}")
    ids, mask = _check_prompt(input_ids, attention_mask)
    eos, pad = _special_ids(model.config, eos_id, pad_id)
    tokens, beams, scores = _jitted_search()(
        params, ids, mask, jax.random.PRNGKey(seed), temperature, top_k, top_p, length_penalty,
        eos, pad, model=model, method=method, max_new_tokens=int(max_new_tokens),
        num_beams=int(num_beams) if method == "beam" else 1, early_stopping=early_stopping,
    )  # fmt: skip
    as_np = lambda x: None if x is None else np.asarray(x)  # noqa: E731
    return GenerateOutput(np.asarray(tokens), as_np(beams), as_np(scores))


# ---------------------------------------------------------------------------------------------
# Streaming (greedy and sampling): one jitted decode step per token, called from Python
# ---------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def _stream_start(params, input_ids, attention_mask, *, model, max_new_tokens):
    return _start(model, params, input_ids, attention_mask, max_new_tokens)


@functools.partial(jax.jit, static_argnames=("model", "greedy"))
def _stream_step(params, cache, token_B, rng, step, temperature, top_k, top_p, *, model, greedy):
    logits_BxV, cache = lm.decode_step(model, params, cache, token_B)
    if greedy:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32), cache
    scores_BxV = filter_logits(logits_BxV, temperature=temperature, top_k=top_k, top_p=top_p)
    # sample_search's key for this step, so streaming draws the same tokens.
    drawn_B = jax.random.categorical(jax.random.fold_in(rng, step), scores_BxV, axis=-1)
    return drawn_B.astype(jnp.int32), cache


def stream(
    model: lm.LM, params: Any, prompt_ids: list[int], options: GenerateOptions
) -> Iterable[int]:
    """Yields the new token ids of one prompt as they are chosen (greedy or sampling),
    stopping at the config's EOS (not yielded) or after options.max_new_tokens tokens."""
    eos, _ = _special_ids(model.config, None, None)
    ids = jnp.asarray([prompt_ids], jnp.int32)
    cache, token_B = _stream_start(
        params, ids, jnp.ones_like(ids), model=model, max_new_tokens=options.max_new_tokens
    )
    rng = jax.random.PRNGKey(options.seed)
    for step in range(options.max_new_tokens):
        token_B, cache = _stream_step(
            params, cache, token_B, rng, step, options.temperature, options.top_k,
            options.top_p, model=model, greedy=options.method == "greedy",
        )  # fmt: skip
        token = int(token_B[0])
        if token == eos:
            return
        yield token


class TextStream:
    """Decoded text of a growing token list, handed out in increments: a byte-level token
    may end inside a UTF-8 character, so an increment ending in U+FFFD waits for more."""

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        self.tokenizer, self.ids, self.printed = tokenizer, [], ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(self.printed):
            return ""
        new, self.printed = text[len(self.printed) :], text
        return new

    def finish(self) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        new = text[len(self.printed) :] if text.startswith(self.printed) else ""
        self.printed = text
        return new


def find_tokenizer(checkpoint: str, tokenizer: str | None = None) -> tokenizers.Tokenizer:
    """`tokenizer`, else CHECKPOINT/tokenizer.json, else (a `zoo train` workdir) the
    tokenizer.json its recipe's task.tokenizer names, or the byte-level BPE its causal_lm
    task trained on the corpus."""
    path = tokenizer or os.path.join(checkpoint, "tokenizer.json")
    if not tokenizer and not os.path.isfile(path) and convert.is_workdir(checkpoint):
        run = modeldir.read_run_config(checkpoint, convert.TRAIN_TASKS, "--checkpoint")
        named = os.path.expanduser(run.task.get("tokenizer") or "")
        if named:
            path = os.path.join(named, "tokenizer.json") if os.path.isdir(named) else named
        elif run.task.name == CausalLMTask.name:  # the BPE its task trained (cached, or again)
            task = CausalLMTask(run)
            task.tokenizer()
            path = task.tokenizer_path
    if not os.path.isfile(path):
        where = f"--tokenizer {tokenizer}" if tokenizer else f"--checkpoint {checkpoint}"
        raise FileNotFoundError(
            f"{where}: no tokenizer.json ({path} is missing); `zoo generate` tokenizes with a "
            "transformers tokenizer.json: pass --tokenizer FILE, or convert a checkpoint that "
            "has one (`zoo convert lm SRC OUT` copies it)"
        )
    try:
        return tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the library raises a bare Exception for a malformed file
        raise ValueError(
            f"{path}: not a tokenizer.json ({' '.join(str(e).split())[:160]})"
        ) from None


def _prompt_ids(tokenizer: tokenizers.Tokenizer, line: str, config: lm.LMConfig) -> list[int]:
    ids = tokenizer.encode(line).ids
    if not ids:
        if config.bos_token_id is None:
            raise ValueError(
                "an empty prompt line has no tokens and the model has no bos_token_id; "
                "give every line some text"
            )
        ids = [config.bos_token_id]
    return ids


def run(
    model: lm.LM,
    params: Any,
    tokenizer: tokenizers.Tokenizer,
    lines: Iterable[str],
    options: GenerateOptions,
    out: TextIO | None = None,
) -> None:
    """Generates for each prompt line and writes its continuation + newline to `out`
    (default: sys.stdout)."""
    options.check()
    out = sys.stdout if out is None else out
    params = jax.tree.map(jnp.asarray, params)
    for line in lines:
        ids = _prompt_ids(tokenizer, line.rstrip("\r\n"), model.config)
        text = TextStream(tokenizer)
        if options.method == "beam":
            result = generate(
                model, params, [ids], max_new_tokens=options.max_new_tokens, method="beam",
                num_beams=options.beam, length_penalty=options.length_penalty,
            )  # fmt: skip
            eos, _ = _special_ids(model.config, None, None)
            for token in result.tokens[0].tolist():
                if token == eos:
                    break
                text.ids.append(token)
        else:
            for token in stream(model, params, ids, options):
                out.write(text.push(token))
                out.flush()
        out.write(text.finish() + "\n")
        out.flush()


def main(args) -> int:
    """`zoo generate --checkpoint DIR [--max-new-tokens N] [--temperature T] [--top-k K]
    [--top-p P] [--beam K] [--seed S] [--tokenizer FILE]`: prompts from stdin, one a line."""
    options = GenerateOptions(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, beam=args.beam, length_penalty=args.length_penalty, seed=args.seed,
    )  # fmt: skip
    options.check()
    tokenizer = find_tokenizer(args.checkpoint, args.tokenizer)
    model, params = convert.load(args.checkpoint)
    run(model, params, tokenizer, sys.stdin, options)
    return 0
