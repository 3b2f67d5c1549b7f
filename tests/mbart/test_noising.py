"""Properties of mBART denoising and CSR code-switching noise (zoo.mbart.noising).

Vocabulary used here (mBART-like layout): 0-3 specials, 4..503 "source" pieces,
504..1003 "target" pieces, 1004/1005 language codes, 1006 <mask>.
"""

import math

import numpy as np
import pytest

from zoo.mbart.lexicon import Lexicon
from zoo.mbart.noising import (
    EOS_ID,
    code_switch,
    csr_example,
    denoise,
    example_rng,
    permute_sentences,
    sample_span_plan,
    span_coverage,
    word_start_table,
)

SRC_PIECES = np.arange(4, 504)
TGT_PIECES = np.arange(504, 1004)
EN, RO, MASK = 1004, 1005, 1006
VOCAB = 1007

_table_rng = np.random.default_rng(1234)
WORD_START = np.zeros(VOCAB, bool)
WORD_START[:4] = True  # specials count as word starts in fairseq
WORD_START[4:1004] = _table_rng.random(1000) < 0.6
STARTS_SRC = SRC_PIECES[WORD_START[SRC_PIECES]]
CONTS_SRC = SRC_PIECES[~WORD_START[SRC_PIECES]]
STARTS_TGT = TGT_PIECES[WORD_START[TGT_PIECES]]
CONTS_TGT = TGT_PIECES[~WORD_START[TGT_PIECES]]


def _lexicon(keys: np.ndarray, cand_pool: np.ndarray, seed: int) -> Lexicon:
    rng = np.random.default_rng(seed)
    return Lexicon.from_dict({int(s): rng.choice(cand_pool, 3, replace=False) for s in keys}, k=3)


# Half of all source pieces (word starts and continuations alike) are lexicon keys; candidates
# are target pieces, so a switched piece is never switched again.
SRC_TO_TGT = _lexicon(_table_rng.choice(SRC_PIECES, 250, replace=False), TGT_PIECES, 1)
TGT_TO_SRC = _lexicon(_table_rng.choice(TGT_PIECES, 250, replace=False), SRC_PIECES, 2)


def _sentence(rng, num_words, starts=STARTS_SRC, conts=CONTS_SRC, lang=EN):
    """`w_1 ... w_n </s> [lang]`, each word a start piece + 0..2 continuation pieces."""
    pieces = []
    for _ in range(num_words):
        pieces.append(rng.choice(starts))
        pieces.extend(rng.choice(conts, rng.integers(0, 3)))
    return np.array([*pieces, EOS_ID, lang], dtype=np.int32)


def _word_index(ids):
    """Word number of each token of `... </s> [lang]` (-1 for `</s> [lang]`), and word starts."""
    is_start = WORD_START[ids].copy()
    is_start[-2:] = False
    word = np.cumsum(is_start) - 1
    word[-2:] = -1
    return word, is_start


def _strip_masks(ids):
    return ids[ids != MASK]


# ---------------------------------------------------------------------------------------------
# CSR
# ---------------------------------------------------------------------------------------------


def test_code_switch_changes_only_lexicon_pieces_into_their_candidates():
    rng = np.random.default_rng(0)
    changed_total = 0
    for seed in range(300):
        ids = _sentence(rng, rng.integers(1, 40))
        out, _ = code_switch(ids, WORD_START, SRC_TO_TGT, rng=seed, mask_id=MASK)
        kept = _strip_masks(out)
        assert kept.shape == ids.shape  # only <mask> insertions change the length
        for before, after in zip(ids[ids != kept], kept[ids != kept]):
            assert int(before) in SRC_TO_TGT
            assert after in SRC_TO_TGT[int(before)]
        changed_total += int(np.count_nonzero(ids != kept))
    assert changed_total > 500


def test_code_switch_never_touches_final_eos_and_language_code():
    rng = np.random.default_rng(1)
    for seed in range(300):
        ids = _sentence(rng, rng.integers(1, 30))
        out, _ = code_switch(ids, WORD_START, SRC_TO_TGT, rng=seed, mask_id=MASK)
        np.testing.assert_array_equal(out[-2:], [EOS_ID, EN])
        assert np.count_nonzero(out == EOS_ID) == 1


def test_code_switch_switches_whole_words_within_budget():
    """Every piece is a lexicon key here, so a covered piece always changes: the changed pieces
    are exactly the pieces of the switched words, all of them, and there are at most
    ceil(0.35 * #words) such words."""
    full = _lexicon(SRC_PIECES, TGT_PIECES, 3)
    rng = np.random.default_rng(2)
    for seed in range(300):
        num_words = int(rng.integers(1, 50))
        ids = _sentence(rng, num_words)
        out, switched = code_switch(ids, WORD_START, full, rng=seed, mask_id=MASK)
        changed = _strip_masks(out) != ids
        word, _ = _word_index(ids)
        changed_words = np.unique(word[changed])
        # Whole words: a word has either all of its pieces changed or none.
        for w in range(num_words):
            assert changed[word == w].all() or not changed[word == w].any()
        assert changed_words.shape[0] == switched
        assert switched <= math.ceil(0.35 * num_words)


def test_code_switch_switches_once_per_covering_span_as_reference():
    """Chained lexicon p -> p + 1: a piece covered by c spans ends as p + c with the reference
    behaviour (reswitch_overlaps=True) and as p + 1 when switching once."""
    chain = Lexicon.from_dict({int(p): [int(p) + 1] for p in range(4, 1000)})
    rng = np.random.default_rng(3)
    seen_overlap = False
    for seed in range(200):
        ids = _sentence(rng, 40)
        _, is_start = _word_index(ids)
        is_start = is_start[:-1]  # the working part ends with the final </s>
        plan = sample_span_plan(
            is_start, np.random.default_rng(seed), ratio=0.35, poisson_lambda=3.5
        )
        cover = np.append(span_coverage(is_start, plan), 0)
        seen_overlap |= bool(cover.max() >= 2)
        for reswitch, expected in ((True, ids + cover), (False, ids + (cover > 0))):
            out, _ = code_switch(
                ids, WORD_START, chain, rng=seed, mask_id=MASK, reswitch_overlaps=reswitch
            )
            np.testing.assert_array_equal(_strip_masks(out), expected)
    assert seen_overlap


def test_code_switch_is_deterministic_under_a_seed_and_varies_across_seeds():
    ids = _sentence(np.random.default_rng(4), 30)
    a, na = code_switch(ids, WORD_START, SRC_TO_TGT, rng=7, mask_id=MASK)
    b, nb = code_switch(ids, WORD_START, SRC_TO_TGT, rng=np.random.default_rng(7), mask_id=MASK)
    np.testing.assert_array_equal(a, b)
    assert na == nb
    outs = {
        tuple(code_switch(ids, WORD_START, SRC_TO_TGT, rng=s, mask_id=MASK)[0]) for s in range(20)
    }
    assert len(outs) >= 15
    e1 = code_switch(ids, WORD_START, SRC_TO_TGT, rng=example_rng(0, 1, 5), mask_id=MASK)[0]
    e2 = code_switch(ids, WORD_START, SRC_TO_TGT, rng=example_rng(0, 1, 5), mask_id=MASK)[0]
    np.testing.assert_array_equal(e1, e2)


def test_code_switch_switched_fraction_and_insert_rate_match_expectation():
    """40 words: budget ceil(0.35 * 40) = 14 words; overlapping spans cover ~30.5% of words;
    zero-length spans (inserted <mask>) are P(Poisson(3.5) = 0) = e^-3.5 = 3.0% of spans."""
    full = _lexicon(SRC_PIECES, TGT_PIECES, 5)
    rng = np.random.default_rng(5)
    fractions, inserts, spans = [], 0, 0
    for seed in range(2000):
        ids = _sentence(rng, 40)
        out, switched = code_switch(ids, WORD_START, full, rng=seed, mask_id=MASK)
        fractions.append(switched / 40)
        _, is_start = _word_index(ids)
        plan = sample_span_plan(
            is_start[:-1], np.random.default_rng(seed), ratio=0.35, poisson_lambda=3.5
        )
        assert plan.budget == 14 and plan.num_words.sum() == 14
        assert np.count_nonzero(out == MASK) == plan.num_inserts
        inserts += plan.num_inserts
        spans += plan.num_inserts + plan.starts.shape[0]
    assert 0.29 < np.mean(fractions) < 0.32
    assert 0.022 < inserts / spans < 0.038


def test_csr_example_even_index_restores_source_odd_index_restores_target():
    rng = np.random.default_rng(6)
    src = _sentence(rng, 25, lang=EN)
    tgt = _sentence(rng, 25, STARTS_TGT, CONTS_TGT, lang=RO)
    common = dict(
        src_lang_id=EN,
        tgt_lang_id=RO,
        src_to_tgt=SRC_TO_TGT,
        tgt_to_src=TGT_TO_SRC,
        word_start=WORD_START,
        mask_id=MASK,
    )
    for index in range(20):
        source, target, lang = csr_example(src, tgt, index=index, rng=index, **common)
        original, lexicon = (src, SRC_TO_TGT) if index % 2 == 0 else (tgt, TGT_TO_SRC)
        assert lang == (EN if index % 2 == 0 else RO)
        np.testing.assert_array_equal(target, original)
        np.testing.assert_array_equal(source[-2:], [EOS_ID, lang])
        kept = _strip_masks(source)
        diff = kept != original
        assert diff.any()
        assert all(a in lexicon[int(b)] for a, b in zip(kept[diff], original[diff]))
    with pytest.raises(ValueError, match="language code"):
        csr_example(src, tgt, index=1, rng=0, **{**common, "tgt_lang_id": EN})


# ---------------------------------------------------------------------------------------------
# Denoising
# ---------------------------------------------------------------------------------------------


def _unique_sentence(rng, num_words):
    """Sentence whose tokens are all distinct ids, so each output token names its origin."""
    pieces = []
    starts, conts = list(rng.permutation(STARTS_SRC)), list(rng.permutation(CONTS_SRC))
    for _ in range(num_words):
        pieces.append(starts.pop())
        pieces.extend(conts.pop() for _ in range(rng.integers(0, 3)))
    return np.array([*pieces, EOS_ID, EN], dtype=np.int32)


def test_denoise_masks_whole_words_one_mask_per_span_and_keeps_the_tail():
    rng = np.random.default_rng(7)
    for seed in range(300):
        num_words = int(rng.integers(1, 60))
        ids = _unique_sentence(rng, num_words)
        out = denoise(ids, WORD_START, mask_id=MASK, rng=seed, permute=False)
        np.testing.assert_array_equal(out[-2:], [EOS_ID, EN])
        kept = out[out != MASK]
        present = np.isin(ids, kept)
        np.testing.assert_array_equal(ids[present], kept)  # survivors keep their order
        word, is_start = _word_index(ids)
        for w in range(num_words):
            assert present[word == w].all() or not present[word == w].any()
        # One <mask> per span, except a span starting inside another one merges into it.
        plan = sample_span_plan(
            is_start[:-1], np.random.default_rng(seed), ratio=0.35, poisson_lambda=3.5
        )
        cover = span_coverage(is_start[:-1], plan)
        surviving_starts = np.count_nonzero(cover[plan.starts] == 1)
        assert np.count_nonzero(out == MASK) == surviving_starts + plan.num_inserts
        assert np.count_nonzero(~present) == np.count_nonzero(cover)


def test_denoise_masked_word_fraction_is_the_overlapping_35_percent_budget():
    rng = np.random.default_rng(8)
    fractions = []
    for seed in range(1500):
        ids = _unique_sentence(rng, 40)
        out = denoise(ids, WORD_START, mask_id=MASK, rng=seed)
        starts = ids[WORD_START[ids]][:-1]  # drop </s> (a special, so True in the table)
        fractions.append(1 - np.isin(starts, out).mean())
    assert 0.29 < np.mean(fractions) < 0.32


def test_denoise_respects_protected_head():
    rng = np.random.default_rng(9)
    for seed in range(100):
        ids = np.concatenate([[0], _unique_sentence(rng, 20)]).astype(np.int32)  # <s> X </s> en
        out = denoise(ids, WORD_START, mask_id=MASK, rng=seed, protected_head=1)
        assert out[0] == 0
        np.testing.assert_array_equal(out[-2:], [EOS_ID, EN])


def test_denoise_is_deterministic_under_a_seed_and_varies_across_seeds():
    ids = _unique_sentence(np.random.default_rng(10), 30)
    a = denoise(ids, WORD_START, mask_id=MASK, rng=3)
    b = denoise(ids, WORD_START, mask_id=MASK, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    outs = {tuple(denoise(ids, WORD_START, mask_id=MASK, rng=s)) for s in range(20)}
    assert len(outs) >= 15


def _split_sentences(ids, end_ids):
    sentences, current = [], []
    for t in ids:
        current.append(int(t))
        if t in end_ids:
            sentences.append(tuple(current))
            current = []
    return sorted(sentences), current


def test_permute_sentences_keeps_the_multiset_of_sentences_and_the_tail():
    rng = np.random.default_rng(11)
    body = np.concatenate([_unique_sentence(rng, 5)[:-1] for _ in range(4)])  # 4 x `S </s>`
    ids = np.append(body, EN).astype(np.int32)
    orders = set()
    for seed in range(50):
        out = permute_sentences(ids, seed)
        assert out[-1] == EN and out[-2] == EOS_ID and out.shape == ids.shape
        assert _split_sentences(out[:-1], {EOS_ID}) == _split_sentences(ids[:-1], {EOS_ID})
        orders.add(tuple(out))
    assert len(orders) > 10  # 4! = 24 orders
    single = _unique_sentence(rng, 8)
    np.testing.assert_array_equal(permute_sentences(single, 0), single)


def test_permute_sentences_with_other_end_ids_keeps_the_tail():
    period = int(CONTS_SRC[0])
    a, b = [int(STARTS_SRC[0]), int(STARTS_SRC[1])], [int(STARTS_SRC[2])]
    ids = np.array([*a, period, *b, EOS_ID, EN], dtype=np.int32)  # `A . B </s> [en]`
    outs = {tuple(permute_sentences(ids, s, sentence_end_ids={period, EOS_ID})) for s in range(30)}
    assert outs == {tuple(ids), (*b, EOS_ID, *a, period, EOS_ID, EN)}


def test_denoise_with_permutation_keeps_the_tail_on_multi_sentence_input():
    rng = np.random.default_rng(12)
    ids = np.append(np.concatenate([_unique_sentence(rng, 6)[:-1] for _ in range(3)]), EN).astype(
        np.int32
    )
    for seed in range(100):
        out = denoise(ids, WORD_START, mask_id=MASK, rng=seed)
        np.testing.assert_array_equal(out[-2:], [EOS_ID, EN])
        assert set(out.tolist()) <= set(ids.tolist()) | {MASK}


def test_word_start_table_follows_fairseq():
    pieces = ["<s>", "<pad>", "</s>", "<unk>", "\u2581the", "re", "\u2581house", "en_XX", "<mask>"]
    np.testing.assert_array_equal(
        word_start_table(pieces), [True, True, True, True, True, False, True, False, False]
    )


def test_word_start_may_be_a_function():
    ids = _sentence(np.random.default_rng(13), 20)
    a = code_switch(ids, WORD_START, SRC_TO_TGT, rng=1, mask_id=MASK)
    b = code_switch(ids, lambda x: WORD_START[x], SRC_TO_TGT, rng=1, mask_id=MASK)
    np.testing.assert_array_equal(a[0], b[0])


def test_noising_rejects_sequences_shorter_than_the_protected_tail():
    with pytest.raises(ValueError, match="protected_tail"):
        code_switch(np.array([EN]), WORD_START, SRC_TO_TGT, rng=0, mask_id=MASK)
    with pytest.raises(ValueError, match="word-start table"):
        denoise(np.array([5000, EOS_ID, EN]), WORD_START, mask_id=MASK, rng=0)
