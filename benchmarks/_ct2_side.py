"""CTranslate2's side of benchmarks/mbart_vs_torch.py: convert the saved HF mBART, beam search.

Imported by the benchmark (same process and environment as torch); zoo never imports it.

- `convert`: `ctranslate2.converters.TransformersConverter` on the directory the benchmark
  saved with `save_pretrained`, in float32. Two stand-ins make a random model convertible:
  a tokenizer that is only a vocabulary (id i -> `VOCAB[i]`, no tokenizer files exist), and
  `normalize_before=True` on the loaded config, which CT2's Bart/mBART loader reads to pick
  pre-LN and which every released mBART config.json carries (transformers ignores it).
  With no `tokenizer_class` the loader takes the cc25 path: `decoder_start_token` null,
  so the first `target_prefix` token is the decoder's start token, as HF's
  `decoder_start_token_id=lang`.
- `translator`: a `ctranslate2.Translator` on CPU with `compute_type` "float32" or "int8"
  (int8 quantizes the float32 model's weights at load; activations stay float).
- `beam_search`: `translate_batch` with `target_prefix=[[lang]]`, `beam_size`, the same
  budget (`max_decoding_length` = new tokens), `length_penalty`, `return_end_token=True`.
  What CT2 cannot match in HF's semantics (see `forced_eos_at_budget`): no forced EOS at the
  budget (a hypothesis cut there ends on a real token, ranked by all its log-probs); it
  stops an item once `beam_size * patience` hypotheses are finished (like HF's
  `early_stopping=True`, not False); at the first free step it bars EOS from all but the
  first beam (src/decoding.cc, `update_sample_with_prefix`). With random weights no beam
  ends before the budget, so only the first difference can show in the outputs.
"""

from __future__ import annotations

import ctranslate2
import numpy as np
from ctranslate2.converters import TransformersConverter

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3, as mBART's (bos, pad, eos, unk)


def vocabulary(size: int) -> list[str]:
    """Token strings for ids 0..size-1: mBART's four specials, then `t4`, `t5`, ..."""
    return list(SPECIALS) + [f"t{i}" for i in range(len(SPECIALS), size)]


class _VocabOnlyTokenizer:
    """What CT2's mBART loader asks of a tokenizer: the vocabulary and the special tokens."""

    bos_token, pad_token, eos_token, unk_token = SPECIALS[0], SPECIALS[1], SPECIALS[2], SPECIALS[3]

    def __init__(self, size: int):
        self.tokens = vocabulary(size)

    def get_vocab(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, ids):
        return self.tokens[ids] if isinstance(ids, int) else [self.tokens[i] for i in ids]


class _RandomMBartConverter(TransformersConverter):
    def __init__(self, hf_dir: str, vocab_size: int):
        super().__init__(hf_dir)
        self._vocab_size = vocab_size

    def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
        return _VocabOnlyTokenizer(self._vocab_size)

    def load_model(self, model_class, model_name_or_path, **kwargs):
        model = super().load_model(model_class, model_name_or_path, **kwargs)
        model.config.normalize_before = True  # mBART is pre-LN; released configs say so
        return model


def convert(hf_dir: str, out_dir: str, vocab_size: int) -> str:
    """Converts the HF model in hf_dir (save_pretrained) to a float32 CT2 model in out_dir."""
    return _RandomMBartConverter(hf_dir, vocab_size).convert(out_dir, quantization="float32")


def translator(model_dir: str, compute_type: str, threads: int) -> ctranslate2.Translator:
    """One translator, one batch at a time (inter_threads=1) on `threads` OpenMP threads."""
    return ctranslate2.Translator(
        model_dir,
        device="cpu",
        compute_type=compute_type,
        inter_threads=1,
        intra_threads=threads,
    )


def beam_search(
    translator: ctranslate2.Translator,
    src_tokens: list[list[str]],
    lang_token: str,
    token_ids: dict[str, int],
    *,
    beam_size: int,
    max_new_tokens: int,
    length_penalty: float,
    pad_id: int,
) -> np.ndarray:
    """The best hypothesis per sentence: [B, max_new_tokens] int32, pad after the end.

    src_tokens: B lists of token strings (the source ids through `vocabulary`).
    The start/language token is not in the output (as zoo's); EOS is, when CT2 produced it.
    """
    results = translator.translate_batch(
        src_tokens,
        target_prefix=[[lang_token]] * len(src_tokens),
        beam_size=beam_size,
        num_hypotheses=1,
        length_penalty=length_penalty,
        max_decoding_length=max_new_tokens,
        return_end_token=True,
    )
    out = np.full((len(src_tokens), max_new_tokens), pad_id, np.int32)
    for row, result in zip(out, results):
        ids = [token_ids[t] for t in result.hypotheses[0]]
        row[: len(ids)] = ids
    return out


def generate_fns(
    translators: dict[str, ctranslate2.Translator],
    ids_BxS: np.ndarray,
    lang_id: int,
    vocab_size: int,
    beam_size: int,
    max_new_tokens: int,
    length_penalty: float,
    pad_id: int,
) -> dict:
    """{name: () -> [B, max_new_tokens] int32} for the benchmark's timed loop.

    The ids -> token strings conversion of the source is done here, once (the other sides
    also get their inputs ready-made); the output strings -> ids lookup is in the timed call.
    """
    tokens = vocabulary(vocab_size)
    token_ids = {t: i for i, t in enumerate(tokens)}
    src_tokens = [[tokens[i] for i in row] for row in ids_BxS]
    return {
        name: lambda translator=translator: beam_search(
            translator,
            src_tokens,
            tokens[lang_id],
            token_ids,
            beam_size=beam_size,
            max_new_tokens=max_new_tokens,
            length_penalty=length_penalty,
            pad_id=pad_id,
        )
        for name, translator in translators.items()
    }


def print_generate_table(g: dict) -> None:
    """The benchmark's `generate` result: all four sides, then the output agreement."""
    print(f"{'beam generation':<20} {'sent/s':>10} {'call (s)':>10} {'zoo/this':>10}")
    for name in ("torch", "zoo", "ctranslate2", "ctranslate2_int8"):
        side = g[name]
        ratio = g["zoo"]["sentences_per_s"] / side["sentences_per_s"]
        rate, call = side["sentences_per_s"], side["call_s_median"]
        print(f"{name:<20} {rate:10.4g} {call:10.4g} {ratio:9.2f}x")
    print(f"CT2 conversion: {g['ctranslate2_convert_s']:.1f} s")
    for name in ("ctranslate2", "ctranslate2_int8"):
        print(
            f"identical beam outputs, {name} vs zoo: {g[f'{name}_identical_to_zoo']}, "
            f"vs torch: {g[f'{name}_identical_to_torch']}"
        )


def forced_eos_at_budget(seqs_BxT: np.ndarray, eos_id: int, pad_id: int) -> np.ndarray:
    """For comparing with HF/zoo: a row that ran to the budget without EOS ends in EOS.

    HF forces EOS as the last allowed token (a free token, 0 log-prob); CT2 generates a real
    last token instead, so the tokens before it are what can agree.
    """
    out = seqs_BxT.copy()
    cut_B = (out[:, -1] != pad_id) & (out[:, -1] != eos_id)
    out[cut_B, -1] = eos_id
    return out


def version() -> str:
    return ctranslate2.__version__
