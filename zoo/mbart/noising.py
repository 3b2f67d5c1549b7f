"""mBART denoising and CSR code-switching noise on token-id sequences (NumPy, seeded).

Both follow fairseq's `add_whole_word_mask` (mBART pretraining: `DenoisingDataset` with
`replace_length=1`; CSR: the CSR4mBART `LanguagePairDataset.collater_CS` with `replace_length=-1`
and a lexicon lookup in place of `<mask>`). See docs in /work/shared/reference/mbart.md §3.

Inputs are plain id sequences in the mBART cc25 layout `X </s> [lang]` plus a word-start lookup
(`word_start`: a [vocab] bool table indexed by id, or a function ids -> bool array). A word is a
word-start piece (sentencepiece '▁' prefix; fairseq also counts the specials < 4) and the pieces
that follow it up to the next word start. The last `protected_tail` tokens (default 2:
`</s> [lang]`) are never a word, never covered by a span and never preceded by an inserted mask.

Span sampling (shared by both; fairseq `add_whole_word_mask`):
1. budget n = ceil(ratio * #words);
2. span lengths (in words) ~ Poisson(lambda), truncated at 128 / p < 1e-7 like fairseq, drawn
   until they sum to >= n, the last one cut so that they sum to exactly n;
3. zero-length spans become inserted `<mask>` tokens at uniform positions (never position 0,
   never in the protected tail); with lambda = 3.5 this is e^-3.5 = 3.0% of spans;
4. span starts: distinct word starts drawn uniformly; a span of L words covers all pieces of
   those L words, stopping at the protected tail. Spans may overlap (as in fairseq), so the
   covered words can be fewer than n: with lambda = 3.5 and ratio 0.35 about 30.5% of words
   are covered on 20- to 100-word inputs (measured over 4000 samples each; tests check it)
   instead of 35%.

Per-example determinism: every function takes `rng` (an np.random.Generator or an int seed);
`example_rng(seed, epoch, index)` gives the per-example generator fairseq derives with
`numpy_seed(seed, epoch, index)`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence

import numpy as np

from zoo.mbart.lexicon import Lexicon

EOS_ID = 2  # </s> in the mBART vocabulary
NUM_SPECIAL = 4  # <s> <pad> </s> <unk>

WordStart = np.ndarray | Callable[[np.ndarray], np.ndarray]
RngLike = np.random.Generator | int


def as_rng(rng: RngLike) -> np.random.Generator:
    """An np.random.Generator from a Generator (returned as is) or an int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, int | np.integer):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be an np.random.Generator or an int seed, got {type(rng)!r}.")


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """Independent generator per (seed, epoch, example index): the same noise on every rerun
    and after a resume, different noise every epoch."""
    return np.random.default_rng([seed, epoch, index])


def word_start_table(pieces: Sequence[str], *, num_special: int = NUM_SPECIAL) -> np.ndarray:
    """[vocab] bool word-start table from piece strings in id order, as fairseq's
    `get_whole_word_mask` builds it: ids < num_special count as word starts, other pieces when
    they start with '▁'. Language codes and `<mask>` do not start with '▁', so they are not."""
    table = np.array([p.startswith("\u2581") for p in pieces], dtype=bool)
    table[:num_special] = True
    return table


def _word_starts(ids: np.ndarray, word_start: WordStart) -> np.ndarray:
    if callable(word_start):
        out = np.asarray(word_start(ids), dtype=bool)
    else:
        table = np.asarray(word_start, dtype=bool)
        if ids.size and ids.max() >= table.shape[0]:
            raise ValueError(
                f"token id {int(ids.max())} is outside the word-start table of size "
                f"{table.shape[0]}; pass a table covering the whole vocabulary."
            )
        out = table[ids]
    if out.shape != ids.shape:
        raise ValueError(f"word_start gave shape {out.shape} for ids of shape {ids.shape}.")
    return out.copy()


def _check_ids(ids: np.ndarray, protected_tail: int, where: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{where}: ids must be a 1-D integer array, got {ids.dtype} {ids.shape}.")
    if protected_tail < 1:
        raise ValueError(
            f"{where}: protected_tail must be >= 1 (at least the final </s>), got {protected_tail}."
        )
    if ids.shape[0] < protected_tail:
        raise ValueError(
            f"{where}: sequence of length {ids.shape[0]} is shorter than protected_tail="
            f"{protected_tail}; expected at least `</s> [lang]`."
        )
    return ids


# ---------------------------------------------------------------------------------------------
# Span sampling (fairseq add_whole_word_mask)
# ---------------------------------------------------------------------------------------------


def poisson_span_pmf(poisson_lambda: float) -> np.ndarray:
    """P(length = 0, 1, ...) of Poisson(lambda), cut as fairseq does (k < 128, stop after the
    first p < 1e-7) and normalised (torch Categorical normalises)."""
    ps, p_k = [], math.exp(-poisson_lambda)
    for k in range(128):
        ps.append(p_k)
        if p_k < 1e-7:
            break
        p_k *= poisson_lambda / (k + 1)
    pmf = np.asarray(ps)
    return pmf / pmf.sum()


@dataclasses.dataclass(frozen=True)
class SpanPlan:
    """Where the spans of one example go.

    starts: [num_spans] int64, token positions of the span starts (distinct word starts).
    num_words: [num_spans] int64 >= 1, span lengths in words.
    num_inserts: number of zero-length spans (each inserts one <mask>).
    budget: ceil(ratio * #words) = num_words.sum() (the zero-length spans add 0).
    """

    starts: np.ndarray
    num_words: np.ndarray
    num_inserts: int
    budget: int


def sample_span_plan(
    is_start: np.ndarray,
    rng: np.random.Generator,
    *,
    ratio: float,
    poisson_lambda: float,
) -> SpanPlan:
    """Samples span lengths and starts for one sequence.

    is_start: [length] bool, word starts (already False on protected positions).
    """
    word_pos = np.flatnonzero(is_start)
    # round() first so that e.g. 0.35 * 20 is 7 and not ceil(7.000000000000001) = 8.
    budget = math.ceil(round(word_pos.shape[0] * ratio, 9))
    empty = np.zeros(0, np.int64)
    if budget == 0:
        return SpanPlan(empty, empty, 0, 0)
    pmf = poisson_span_pmf(poisson_lambda)
    lengths = rng.choice(pmf.shape[0], size=budget, p=pmf)
    while lengths.sum() < budget:
        lengths = np.concatenate([lengths, rng.choice(pmf.shape[0], size=budget, p=pmf)])
    cum = np.cumsum(lengths)
    last = int(np.searchsorted(cum, budget))  # first span reaching the budget
    lengths = lengths[: last + 1].copy()
    lengths[last] = budget - (cum[last - 1] if last > 0 else 0)
    num_inserts = int(np.count_nonzero(lengths == 0))
    lengths = lengths[lengths > 0].astype(np.int64)
    starts = word_pos[rng.permutation(word_pos.shape[0])[: lengths.shape[0]]].astype(np.int64)
    return SpanPlan(starts, lengths, num_inserts, budget)


def span_coverage(is_start: np.ndarray, plan: SpanPlan) -> np.ndarray:
    """[length] int: how many spans cover each token.

    A span of L words starting at word w covers tokens from w up to (excluding) the start of
    word w + L, or up to the last token of `is_start`, which is never covered (fairseq marks it
    as a huge word start so that spans stop before the end).
    """
    length = is_start.shape[0]
    word_pos = np.flatnonzero(is_start)
    boundaries = np.append(word_pos, length - 1)
    first_word = np.searchsorted(word_pos, plan.starts)
    ends = boundaries[np.minimum(first_word + plan.num_words, word_pos.shape[0])]
    delta = np.zeros(length + 1, np.int64)
    np.add.at(delta, plan.starts, 1)
    np.add.at(delta, ends, -1)
    return np.cumsum(delta[:length])


def insert_masks(
    ids: np.ndarray, num_inserts: int, mask_id: int, rng: np.random.Generator, *, first: int = 1
) -> np.ndarray:
    """Inserts `num_inserts` mask tokens at distinct uniform positions of the result, never
    before position `first` and never after the last token of `ids` (fairseq
    `add_insertion_noise` with random_ratio 0, whose positions are 1 .. len + n - 2)."""
    if num_inserts == 0:
        return ids
    total = ids.shape[0] + num_inserts
    slots = rng.choice(np.arange(first, total - 1), size=num_inserts, replace=False)
    is_new = np.zeros(total, bool)
    is_new[slots] = True
    out = np.empty(total, ids.dtype)
    out[is_new] = mask_id
    out[~is_new] = ids
    return out


def _split_work(
    ids: np.ndarray, word_start: WordStart, protected_tail: int, protected_head: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(work, rest, is_start): work ends with the first protected token, which plays the role
    of fairseq's last token (never a start, never covered); rest is re-appended unchanged."""
    cut = ids.shape[0] - protected_tail + 1
    work, rest = ids[:cut].copy(), ids[cut:]
    is_start = _word_starts(work, word_start)
    is_start[-1] = False
    is_start[:protected_head] = False
    return work, rest, is_start


# ---------------------------------------------------------------------------------------------
# mBART denoising
# ---------------------------------------------------------------------------------------------


def permute_sentences(
    ids: np.ndarray,
    rng: RngLike,
    *,
    sentence_end_ids: Collection[int] = (EOS_ID,),
    protected_tail: int = 2,
    protected_head: int = 0,
) -> np.ndarray:
    """Shuffles the sentences of `ids` uniformly (fairseq permute_sentences, ratio 1.0).

    ids: [length] int. A sentence ends after a run of `sentence_end_ids` tokens. The head and
    the tail are kept in place. As in fairseq (`full_stops[-2] = 1`), the first tail token
    terminates the last sentence when it is itself an end id (the `</s>` of `X </s> [lang]`):
    `A </s> B </s> [lang]` can become `B </s> A </s> [lang]`. When the sentence that lands last
    ends with a different end id (e.g. '.'), that token stays before the tail, so the result is
    one token longer (`B </s> A . </s> [lang]`) and the tail is still untouched.
    A single sentence is returned unchanged.
    """
    ids = _check_ids(ids, protected_tail, "permute_sentences")
    rng = as_rng(rng)
    end = ids.shape[0] - protected_tail
    head, body, tail = ids[:protected_head], ids[protected_head:end], ids[end:]
    if body.size == 0:
        return ids.copy()
    is_end = np.isin(body, list(sentence_end_ids))
    # Close a sentence after the last token of each run of end tokens.
    cuts = np.flatnonzero(is_end & ~np.append(is_end[1:], False)) + 1
    sentences = np.split(body, cuts[cuts < body.shape[0]])
    if len(sentences) < 2:
        return ids.copy()
    virtual_end = not is_end[-1] and np.isin(tail[0], list(sentence_end_ids))
    if virtual_end:
        sentences[-1] = np.append(sentences[-1], tail[0])
    permuted = np.concatenate([sentences[i] for i in rng.permutation(len(sentences))])
    if virtual_end and permuted[-1] == tail[0]:
        permuted = permuted[:-1]
    return np.concatenate([head, permuted, tail]).astype(ids.dtype)


def denoise(
    ids: np.ndarray,
    word_start: WordStart,
    *,
    mask_id: int,
    rng: RngLike,
    mask_ratio: float = 0.35,
    poisson_lambda: float = 3.5,
    permute: bool = True,
    sentence_end_ids: Collection[int] = (EOS_ID,),
    protected_tail: int = 2,
    protected_head: int = 0,
) -> np.ndarray:
    """mBART span-infilling noise: sentence permutation, then whole-word span masking.

    ids: [length] int, e.g. `X </s> [lang]`. Returns the noised [new_length] ids (same dtype);
    the target is the original `ids`.

    Each span (module docstring) becomes ONE `<mask>` at its first piece and its other pieces
    are deleted (fairseq replace_length=1); a span start covered by another span is deleted
    too, so overlapping spans merge into one mask while adjacent ones give adjacent masks.
    Zero-length spans insert a `<mask>`. The last `protected_tail` tokens and the first
    `protected_head` tokens (e.g. a `<s>` or a leading language code) are never touched.
    """
    ids = _check_ids(ids, protected_tail, "denoise")
    rng = as_rng(rng)
    if permute:
        ids = permute_sentences(
            ids,
            rng,
            sentence_end_ids=sentence_end_ids,
            protected_tail=protected_tail,
            protected_head=protected_head,
        )
    work, rest, is_start = _split_work(ids, word_start, protected_tail, protected_head)
    plan = sample_span_plan(is_start, rng, ratio=mask_ratio, poisson_lambda=poisson_lambda)
    if plan.starts.size:
        cover = span_coverage(is_start, plan)
        own_start = np.zeros_like(cover)
        own_start[plan.starts] = 1
        covered_by_other = (cover - own_start) > 0
        work[plan.starts] = mask_id
        work = work[~covered_by_other]
    work = insert_masks(work, plan.num_inserts, mask_id, rng, first=max(1, protected_head))
    return np.concatenate([work, rest]).astype(ids.dtype)


# ---------------------------------------------------------------------------------------------
# CSR: code-switching restoration
# ---------------------------------------------------------------------------------------------


def code_switch(
    ids: np.ndarray,
    word_start: WordStart,
    lexicon: Lexicon,
    *,
    rng: RngLike,
    mask_id: int,
    ratio: float = 0.35,
    poisson_lambda: float = 3.5,
    protected_tail: int = 2,
    reswitch_overlaps: bool = True,
) -> tuple[np.ndarray, int]:
    """CSR noise (CSR4mBART collater_CS -> add_whole_word_mask, replace_length=-1).

    ids: [length] int, `X </s> [lang]`. Returns (noised ids [new_length], switched words), where
    switched words = number of distinct words covered by a span (<= ceil(ratio * #words)).

    Every piece of every covered word that is a lexicon key is replaced by a uniform pick among
    its candidates; other covered pieces stay as they are (no deletion, no <mask>). Zero-length
    spans insert `<mask>` tokens (about 3% of spans at lambda 3.5). Only insertions change the
    length.

    reswitch_overlaps: the reference switches a piece once per span covering it, so a piece
    under two overlapping spans is looked up again after its first switch; that only differs
    from switching once when a candidate is itself a lexicon key (a piece shared by both
    languages in the joint vocabulary). True reproduces the reference; False switches each
    covered piece exactly once, so every changed piece is a candidate of its original.
    """
    ids = _check_ids(ids, protected_tail, "code_switch")
    rng = as_rng(rng)
    work, rest, is_start = _split_work(ids, word_start, protected_tail, 0)
    plan = sample_span_plan(is_start, rng, ratio=ratio, poisson_lambda=poisson_lambda)
    switched_words = 0
    if plan.starts.size:
        cover = span_coverage(is_start, plan)
        times = cover if reswitch_overlaps else np.minimum(cover, 1)
        for round_ in range(1, int(times.max()) + 1):
            pos = np.flatnonzero(times >= round_)
            work[pos] = lexicon.switch(work[pos], rng)
        switched_words = int(np.count_nonzero(is_start & (cover > 0)))
    work = insert_masks(work, plan.num_inserts, mask_id, rng)
    return np.concatenate([work, rest]).astype(ids.dtype), switched_words


def csr_example(
    src_ids: np.ndarray,
    tgt_ids: np.ndarray,
    *,
    index: int,
    src_lang_id: int,
    tgt_lang_id: int,
    src_to_tgt: Lexicon,
    tgt_to_src: Lexicon,
    word_start: WordStart,
    mask_id: int,
    rng: RngLike,
    ratio: float = 0.35,
    poisson_lambda: float = 3.5,
    reswitch_overlaps: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """One CSR training example from a parallel pair, as collater_CS builds it.

    src_ids: `X </s> [src_lang]`, tgt_ids: `Y </s> [tgt_lang]` (cc25 layout), [length] int.
    Even index: (CS(X </s>) + [src], X </s> [src], src_lang_id) switching with src_to_tgt.
    Odd index:  (CS(Y </s>) + [tgt], Y </s> [tgt], tgt_lang_id) switching with tgt_to_src.
    Returns (source, target, lang): the model restores the original monolingual sentence and
    the decoder starts with `lang` (cc25: decoder input `[lang] X </s>`).

    `index` is the sample's position in its batch in the reference (`enumerate(samples)`); any
    index that alternates parity (e.g. the dataset index) gives the same half/half split.
    """
    if index % 2 == 0:
        sentence, lang, lexicon, side = np.asarray(src_ids), src_lang_id, src_to_tgt, "src_ids"
    else:
        sentence, lang, lexicon, side = np.asarray(tgt_ids), tgt_lang_id, tgt_to_src, "tgt_ids"
    if sentence.shape[0] < 2 or sentence[-1] != lang:
        raise ValueError(
            f"csr_example: {side} must end with its language code {lang} (`X </s> [lang]`), "
            f"got {sentence[-3:].tolist()} at the end; append the code as the cc25 tokenizer "
            "does for sources."
        )
    source, _ = code_switch(
        sentence,
        word_start,
        lexicon,
        rng=rng,
        mask_id=mask_id,
        ratio=ratio,
        poisson_lambda=poisson_lambda,
        protected_tail=2,
        reswitch_overlaps=reswitch_overlaps,
    )
    return source, sentence.copy(), lang
