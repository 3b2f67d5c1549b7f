"""Lexicon: MUSE parsing, induction from parallel data, files, candidate sampling."""

import time

import numpy as np
import pytest

from zoo.mbart.lexicon import Lexicon, from_muse_file, induce_from_parallel

MUSE_TEXT = """\
house casa
house domicilio
house casa
house hogar
house vivienda
the el
the la

information información
cat gato
dog perro_desconocido
"""

# Piece -> id maps as a sentencepiece vocabulary would have them ('▁' marks a word start).
SRC_VOCAB = {"\u2581house": 10, "\u2581the": 11, "\u2581cat": 12, "\u2581dog": 13, "in": 14}
TGT_VOCAB = {
    "\u2581casa": 20,
    "\u2581domicilio": 21,
    "\u2581hogar": 22,
    "\u2581vivienda": 23,
    "\u2581el": 24,
    "\u2581la": 25,
    "\u2581gato": 26,
}


def test_from_muse_file_golden_with_piece_maps(tmp_path):
    path = tmp_path / "en-es.txt"
    path.write_text(MUSE_TEXT, encoding="utf-8")
    lex = from_muse_file(path, SRC_VOCAB, TGT_VOCAB, k=3)
    # Candidates in file order, duplicates dropped, first k kept; "information" (no single
    # source piece) and "perro_desconocido" (no target piece) are skipped.
    assert {s: lex[s].tolist() for s in lex} == {10: [20, 21, 22], 11: [24, 25], 12: [26]}
    assert lex.k == 3


def test_from_muse_file_with_tokenizer_functions_skips_multi_piece_words(tmp_path):
    path = tmp_path / "en-es.txt"
    path.write_text(MUSE_TEXT, encoding="utf-8")

    def tokenize(vocab):
        # A toy tokenizer that appends `</s> [lang]` like the cc25 source side does.
        def encode(word):
            if word == "information":
                return [14, 15, 2, 250004]  # two pieces
            piece = vocab.get("\u2581" + word)
            return [3 if piece is None else piece, 2, 250004]

        return encode

    lex = from_muse_file(path, tokenize(SRC_VOCAB), tokenize(TGT_VOCAB), k=2, vocab_limit=250001)
    assert {s: lex[s].tolist() for s in lex} == {10: [20, 21], 11: [24, 25], 12: [26]}


def test_from_muse_file_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("house casa\nthe el la\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        from_muse_file(path, SRC_VOCAB, TGT_VOCAB)


def _planted_parallel(num_pairs, vocab=2000, noise=0.1, seed=0):
    """Source sentences of Zipf-distributed pieces; targets are their translations under a
    random one-to-one map, with 10% of pieces dropped, 10% random pieces added, shuffled, and
    `</s> [lang]` appended on both sides."""
    rng = np.random.default_rng(seed)
    src_vocab = np.arange(4, 4 + vocab)
    tgt_vocab = rng.permutation(np.arange(5000, 5000 + vocab))
    zipf = 1.0 / np.arange(1, vocab + 1)
    zipf /= zipf.sum()
    lengths = rng.integers(6, 20, num_pairs)
    words = rng.choice(vocab, lengths.sum(), p=zipf)
    sent = np.repeat(np.arange(num_pairs), lengths)
    keep = rng.random(words.shape[0]) > noise
    extra_sent = rng.choice(sent, int(noise * words.shape[0]))
    extra = rng.choice(vocab, extra_sent.shape[0], p=zipf)
    t_sent = np.concatenate([sent[keep], extra_sent])
    t_tok = np.concatenate([tgt_vocab[words[keep]], tgt_vocab[extra]])
    order = np.lexsort((rng.random(t_sent.shape[0]), t_sent))  # shuffle within each sentence
    t_sent, t_tok = t_sent[order], t_tok[order]
    tail_s, tail_t = np.array([2, 9000]), np.array([2, 9001])
    src = [np.concatenate([s, tail_s]) for s in np.split(src_vocab[words], np.cumsum(lengths)[:-1])]
    t_bounds = np.searchsorted(t_sent, np.arange(1, num_pairs))
    tgt = [np.concatenate([t, tail_t]) for t in np.split(t_tok, t_bounds)]
    gold = dict(zip(src_vocab.tolist(), tgt_vocab.tolist()))
    return src, tgt, gold, words


def test_induce_from_parallel_recovers_a_planted_dictionary_in_seconds():
    src, tgt, gold, words = _planted_parallel(50_000)
    start = time.perf_counter()
    lex = induce_from_parallel(src, tgt, k=3, vocab_limit=9000)
    elapsed = time.perf_counter() - start
    top1 = np.array([lex[s][0] == gold[s] for s in lex])
    assert top1.mean() > 0.9
    frequent = [s + 4 for s, c in enumerate(np.bincount(words, minlength=2000)) if c >= 20]
    assert np.mean([s in lex for s in frequent]) > 0.9
    # Specials (</s>) and ids >= vocab_limit (language codes) never enter the lexicon.
    assert all(4 <= s < 9000 for s in lex)
    assert lex.candidates.max() < 9000 and lex.candidates[lex.candidates >= 0].min() >= 4
    # Weak extra candidates are cut (min_relative=0.5 of the best score).
    valid = lex.candidates >= 0
    assert np.all(lex.scores[valid] >= 0.5 * np.repeat(lex.scores[:, :1], lex.k, 1)[valid])
    assert elapsed < 15.0, f"induction took {elapsed:.1f}s for 50k pairs"


def test_induce_from_parallel_rejects_misaligned_corpora():
    with pytest.raises(ValueError, match="2 source and 1 target"):
        induce_from_parallel([np.array([5]), np.array([6])], [np.array([7])])


def test_lexicon_save_load_round_trip(tmp_path):
    src, tgt, _, _ = _planted_parallel(2000, vocab=300)
    lex = induce_from_parallel(src, tgt, vocab_limit=9000)
    assert len(lex) > 50
    path = tmp_path / "lex.npz"
    lex.save(path)
    back = Lexicon.load(path)
    np.testing.assert_array_equal(back.src_ids, lex.src_ids)
    np.testing.assert_array_equal(back.candidates, lex.candidates)
    np.testing.assert_array_equal(back.scores, lex.scores)
    assert {s: back[s].tolist() for s in back} == {s: lex[s].tolist() for s in lex}
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a Lexicon file"):
        Lexicon.load(tmp_path / "other.npz")


def test_lexicon_switch_picks_uniformly_among_candidates_and_keeps_other_ids():
    lex = Lexicon.from_dict({5: [50, 51, 52], 6: [60]}, k=3)
    assert lex.rows(np.array([4, 5, 6, 7])).tolist() == [-1, 0, 1, -1]
    ids = np.array([5] * 30_000 + [6, 7], dtype=np.int32)
    out = lex.switch(ids, np.random.default_rng(0))
    assert out.dtype == np.int32 and out[-2:].tolist() == [60, 7]
    freq = np.bincount(out[:-2] - 50, minlength=3) / 30_000
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.015)
    with pytest.raises(KeyError):
        lex[7]


def test_lexicon_rejects_rows_without_candidates():
    with pytest.raises(ValueError, match="at least one|>= 1 candidate"):
        Lexicon(np.array([5]), np.array([[-1, -1]]))
