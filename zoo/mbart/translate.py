"""Translation with a trained or converted mBART, and `zoo translate`.

    model, params = zoo.mbart.load("runs/mt")           # or a `zoo convert` directory
    tok = zoo.mbart.MBartTokenizer("runs/spm.model")
    translate(model, params, tok, ["Open the file"], src_lang="en_XX", tgt_lang="de_DE")

Generation is one jitted beam (or diverse beam) search of `zoo.decode` over the model's
cached `decode_step`; sentences are batched by length so that few shapes get compiled.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
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
from zoo.mbart.convert import param_shapes
from zoo.mbart.tasks import TranslationTask, translation_config
from zoo.mbart.tokenizer import MBartTokenizer

log = logging.getLogger(__name__)


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

    def check(self) -> None:
        """One clear line, naming the `zoo translate` flag, for an option out of range."""
        ints = {"beam": 1, "max_len_b": 0, "diverse_groups": 1, "batch_size": 1}
        for field, lo in ints.items():
            v = getattr(self, field)
            if type(v) is not int or v < lo:
                raise ValueError(f"--{field.replace('_', '-')} {v!r} must be an integer >= {lo}")
        for field in ("length_penalty", "max_len_a", "diversity"):
            v = getattr(self, field)
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"--{field.replace('_', '-')} {v!r} must be a finite number")
        if self.max_len_a < 0 or self.diversity < 0:
            raise ValueError("--max-len-a and --diversity must be >= 0")
        if self.beam % self.diverse_groups:
            raise ValueError(
                f"--diverse-groups {self.diverse_groups} must divide --beam {self.beam}"
            )


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
    o.check()
    limit = model.config.max_length
    long = [n for n, text in enumerate(sentences) if len(tok.encode(text, src_lang)) > limit]
    if long:  # cut to the position table, and said so: never silently
        shown = ", ".join(str(n + 1) for n in long[:10]) + (", ..." if len(long) > 10 else "")
        log.warning(
            "%d input lines are longer than the model's %d positions and were cut to fit "
            "(lines %s)",
            len(long),
            limit,
            shown,
        )
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


def read_lines(path: str | None) -> list[str]:
    """The lines of `path` (None: stdin) as UTF-8 text, newlines stripped; a line that is not
    UTF-8 is one clear error naming it."""
    if path is not None and os.path.isdir(path):
        raise ValueError(f"--input {path} is a directory; pass a text file, one sentence a line")
    where = f"--input {path}" if path else "stdin"
    if path is not None and not os.path.exists(path):
        raise FileNotFoundError(f"--input {path} does not exist")
    if path is None and not hasattr(sys.stdin, "buffer"):  # already text (e.g. a StringIO)
        return [line.rstrip("\n") for line in sys.stdin]
    stream = open(path, "rb") if path else sys.stdin.buffer
    lines = []
    with stream:
        for n, raw in enumerate(stream, start=1):
            try:
                lines.append(raw.decode("utf-8").rstrip("\n").removesuffix("\r"))
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{where}, line {n}: byte {raw[e.start]:#04x} at column {e.start + 1} is not "
                    "UTF-8 text; convert the input to UTF-8 (e.g. iconv -t UTF-8)"
                ) from None
    return lines


def main(args) -> int:
    """`zoo translate --checkpoint DIR --src-lang en_XX --tgt-lang de_DE [--input FILE]`."""
    task = TranslationTask(translation_config(args.checkpoint, args.src_lang, args.tgt_lang))
    tok = task.tokenizer()
    tok.lang_id(args.src_lang), tok.lang_id(args.tgt_lang)  # unknown codes: clear error now
    params = modeldir.load_params(args.checkpoint)
    modeldir.check_fits(
        params,
        param_shapes(task.model_config),
        args.checkpoint,
        "the directory's model.json (or config.json) no longer describes its params/",
    )
    lines = read_lines(args.input)
    options = TranslateOptions(
        beam=args.beam,
        length_penalty=args.length_penalty,
        max_len_a=args.max_len_a,
        max_len_b=args.max_len_b,
        diverse_groups=args.diverse_groups,
        diversity=args.diversity,
    )
    options.check()
    bar = tqdm(total=len(lines), unit="sent", disable=not args.input, file=sys.stderr)
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
