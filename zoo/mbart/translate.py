"""Translation with a trained or converted mBART, and `zoo translate`.

    model, params = zoo.mbart.load("runs/mt")           # or a `zoo convert` directory
    tok = zoo.mbart.MBartTokenizer("runs/spm.model")
    translate(model, params, tok, ["Open the file"], src_lang="en_XX", tgt_lang="de_DE")

Generation is one jitted beam (or diverse beam) search of `zoo.decode` over the model's
cached `decode_step`; sentences are batched by length so that few shapes get compiled.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from zoo.decode import search
from zoo.io import modeldir
from zoo.mbart import model as mbart
from zoo.mbart.tasks import TranslationTask, translation_config
from zoo.mbart.tokenizer import MBartTokenizer


@dataclasses.dataclass(frozen=True)
class TranslateOptions:
    """The knobs of `translate`; `zoo translate`'s flags take their defaults from here."""

    beam: int = 5  # beams per sentence (--beam)
    length_penalty: float = 1.0  # finished-hypothesis score = log-prob / length**this
    max_len_a: float = 1.2  # output budget = a * source tokens + b (fairseq's max_len_a/b)
    max_len_b: int = 10
    diverse_groups: int = 1  # > 1: diverse beam search with this many groups of beams
    diversity: float = 0.0  # Hamming diversity strength between groups
    batch_size: int = 32  # sentences per generation call (a memory / speed trade-off)


def translate(
    model: mbart.MBart,
    params: Any,
    tokenizer: MBartTokenizer,
    sentences: Sequence[str],
    *,
    src_lang: str,
    tgt_lang: str,
    options: TranslateOptions = TranslateOptions(),
    on_batch: Callable[[int], Any] | None = None,
) -> list[str]:
    """Beam (diverse_groups > 1: diverse beam) translations of `sentences`, in order.

    Sentences are sorted by length and padded to multiples of 16 tokens so that only a
    few shapes get compiled; max output length per sentence = max_len_a * src_len +
    max_len_b (fairseq's a/b, capped by the position table). `on_batch(n)` is called
    after each batch (progress bars).
    """
    o, tok = options, tokenizer
    limit = model.config.max_length
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out: list[str] = [""] * len(sentences)
    start_id = tok.decoder_start_id(tgt_lang)
    forced_bos = tok.forced_bos_id(tgt_lang)

    def generate(params, ids_BxS, mask_BxS, max_steps: int):
        encoded = mbart.encode(model, params, ids_BxS, mask_BxS)
        cache = mbart.init_cache(model, params, encoded, mask_BxS, max_steps)
        max_len_B = search.max_length_for(mask_BxS.sum(1), o.max_len_a, o.max_len_b, max_steps)
        start_B = jnp.full((ids_BxS.shape[0],), start_id, jnp.int32)
        seqs, _ = search.diverse_beam_search(
            lambda tokens, c: mbart.decode_step(model, params, c, tokens),
            cache,
            start_ids_B=start_B,
            beam_size=o.beam,
            num_groups=o.diverse_groups,
            diversity_strength=o.diversity,
            max_len=max_len_B,
            eos_id=tok.eos_id,
            pad_id=tok.pad_id,
            length_penalty=o.length_penalty,
            forced_bos_id=forced_bos,
            forced_eos_id=tok.eos_id,  # as mBART's generation config: </s> at the budget
            max_steps=max_steps,
        )
        return seqs[:, 0]

    generate_jit = jax.jit(
        generate, static_argnums=(3,), compiler_options=search.compiler_options()
    )
    for lo in range(0, len(order), o.batch_size):
        chunk = order[lo : lo + o.batch_size]
        ids, mask = tok.encode_batch(
            [sentences[i] for i in chunk], src_lang, max_length=limit, truncate=True
        )
        length = min(_round_up(ids.shape[1], 16), limit)
        rows = _round_up(len(chunk), 8)
        ids_p = np.full((rows, length), tok.pad_id, np.int32)
        mask_p = np.zeros((rows, length), bool)
        ids_p[: ids.shape[0], : ids.shape[1]] = ids
        mask_p[: mask.shape[0], : mask.shape[1]] = mask
        mask_p[len(chunk) :, 0] = True  # filler rows: one token, discarded below
        max_steps = min(int(o.max_len_a * length + o.max_len_b), limit)
        tokens = np.asarray(generate_jit(params, ids_p, mask_p, max_steps))
        for row, i in enumerate(chunk):
            seq = tokens[row].tolist()
            if tok.eos_id in seq:
                seq = seq[: seq.index(tok.eos_id)]
            out[i] = tok.decode(seq)
        if on_batch is not None:
            on_batch(len(chunk))
    return out


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def main(args) -> int:
    """`zoo translate --checkpoint DIR --src-lang en_XX --tgt-lang de_DE [--input FILE]`."""
    task = TranslationTask(translation_config(args.checkpoint, args.src_lang, args.tgt_lang))
    tok = task.tokenizer()
    tok.lang_id(args.src_lang), tok.lang_id(args.tgt_lang)  # unknown codes: clear error now
    params = modeldir.load_params(args.checkpoint)
    stream = open(args.input) if args.input else sys.stdin
    with stream:
        lines = [line.rstrip("\n") for line in stream]
    bar = tqdm(total=len(lines), unit="sent", disable=not args.input, file=sys.stderr)
    options = TranslateOptions(
        beam=args.beam,
        length_penalty=args.length_penalty,
        max_len_a=args.max_len_a,
        max_len_b=args.max_len_b,
        diverse_groups=args.diverse_groups,
        diversity=args.diversity,
    )
    out = translate(
        task.model,
        params,
        tok,
        lines,
        src_lang=args.src_lang,
        tgt_lang=args.tgt_lang,
        options=options,
        on_batch=bar.update,
    )
    bar.close()
    for line in out:
        print(line)
    return 0
