"""mBART tokenizer: ids equal transformers' slow tokenizers (fixtures), layout, errors, training.

Fixtures come from tests/fixtures/make_tokenizer_fixtures.py (see its docstring to rerun).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sentencepiece as spm

from zoo.mbart.tokenizer import (
    CC25_LANGUAGES,
    MBART50_LANGUAGES,
    MBartTokenizer,
    shift_tokens_right,
    train_sentencepiece,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
SPM_MODEL = FIXTURES / "spm300.model"
HF = json.loads((FIXTURES / "hf_ids.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=["cc25", "mbart50"])
def style(request):
    return request.param


@pytest.fixture(scope="module")
def tok(style):
    return MBartTokenizer(SPM_MODEL, style=style)


def test_special_ids_equal_transformers(tok, style):
    hf = HF[style]
    assert tok.vocab_size == hf["vocab_size"]
    assert tok.mask_id == hf["mask_id"]
    assert {code: tok.lang_id(code) for code in tok.languages} == hf["lang_ids"]
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)


def test_language_code_lists_match_fairseq_order():
    assert len(CC25_LANGUAGES) == 25 and len(MBART50_LANGUAGES) == 52
    assert MBART50_LANGUAGES[:25] == CC25_LANGUAGES
    assert CC25_LANGUAGES.index("en_XX") == 3 and CC25_LANGUAGES.index("ro_RO") == 19
    assert MBART50_LANGUAGES[25] == "af_ZA" and MBART50_LANGUAGES[-1] == "sl_SI"


def test_real_checkpoint_arithmetic_gives_the_published_ids():
    # mBART's sentencepiece model has 250_000 pieces; ids below are from the model cards/issues.
    num_pieces = 250_000
    cc25 = {code: num_pieces + 1 + i for i, code in enumerate(CC25_LANGUAGES)}
    assert cc25["en_XX"] == 250_004 and cc25["ro_RO"] == 250_020
    assert num_pieces + 1 + len(CC25_LANGUAGES) == 250_026  # cc25 <mask>
    assert num_pieces + 1 + len(MBART50_LANGUAGES) == 250_053  # mBART-50 <mask>


def test_encode_equals_transformers_ids(tok, style):
    # The fixture script also checked that HF's target-side (labels) ids equal these.
    for case in HF[style]["encode"]:
        assert tok.encode(case["text"], case["lang"]) == case["ids"], case
        assert tok.encode(case["text"], case["lang"], target=True) == case["ids"], case


def test_truncation_equals_transformers(tok, style):
    for case in HF[style]["truncate"]:
        got = tok.encode(case["text"], case["lang"], max_length=case["max_length"], truncate=True)
        assert got == case["ids"], case


def test_decode_equals_transformers_skip_special(tok, style):
    for case in HF[style]["decode"]:
        assert tok.decode(case["ids"]) == case["text"], case


def test_sequence_layout_per_style(tok, style):
    ids = tok.encode("Hello world", "ro_RO")
    ro = tok.lang_id("ro_RO")
    if style == "cc25":
        assert ids[-2:] == [tok.eos_id, ro] and tok.decoder_start_id("ro_RO") == ro
        assert tok.forced_bos_id("ro_RO") is None
    else:
        assert ids[0] == ro and ids[-1] == tok.eos_id
        assert tok.decoder_start_id("ro_RO") == tok.eos_id and tok.forced_bos_id("ro_RO") == ro


def test_unknown_characters_map_to_unk_id(tok):
    ids = tok.encode("漢字", "en_XX")
    assert tok.unk_id in ids


def test_unknown_language_code_error_lists_known_codes(tok):
    with pytest.raises(ValueError, match="unknown language code 'en_US'.*en_XX"):
        tok.encode("x", "en_US")
    if tok.style == "cc25":
        with pytest.raises(ValueError, match="sl_SI"):  # an mBART-50-only code
            tok.lang_id("sl_SI")


def test_too_long_text_raises_unless_truncate(tok):
    text = "The file could not be opened."
    full = tok.encode(text, "en_XX")
    assert tok.encode(text, "en_XX", max_length=len(full)) == full
    with pytest.raises(ValueError, match=r"max_length=5.*truncate=True"):
        tok.encode(text, "en_XX", max_length=5)
    kept = tok.encode(text, "en_XX", max_length=2, truncate=True)
    assert sorted(kept) == sorted([tok.eos_id, tok.lang_id("en_XX")])
    with pytest.raises(ValueError, match="max_length=1"):
        tok.encode(text, "en_XX", max_length=1, truncate=True)


def test_encode_batch_right_pads_and_masks(tok):
    texts = ["Hello world", "", "The file could not be opened."]
    ids_BxL, mask_BxL = tok.encode_batch(texts, ["en_XX", "de_DE", "ro_RO"])
    rows = [tok.encode(t, c) for t, c in zip(texts, ["en_XX", "de_DE", "ro_RO"])]
    assert ids_BxL.dtype == np.int32 and mask_BxL.dtype == bool
    assert ids_BxL.shape == (3, max(len(r) for r in rows)) == mask_BxL.shape
    for b, row in enumerate(rows):
        assert ids_BxL[b, : len(row)].tolist() == row
        assert (ids_BxL[b, len(row) :] == tok.pad_id).all()
        assert mask_BxL[b].sum() == len(row) and mask_BxL[b, : len(row)].all()
    with pytest.raises(ValueError, match="2 language codes"):
        tok.encode_batch(texts, ["en_XX", "de_DE"])


def test_decode_round_trips_known_text_and_names_specials(tok):
    text = "Die Datei konnte nicht geöffnet werden"
    ids = tok.encode(text, "de_DE")
    assert tok.decode(ids) == text
    assert tok.decode(np.asarray(ids)) == text
    verbose = tok.decode(ids, skip_special=False)
    assert "</s>" in verbose and "de_DE" in verbose and text in verbose
    with pytest.raises(ValueError, match="outside"):
        tok.decode([tok.vocab_size])


def test_shift_tokens_right_equals_transformers_numpy_and_jax():
    for case in HF["shift_tokens_right"]:
        labels = np.asarray(case["labels"], dtype=np.int32)
        expected = np.asarray(case["shifted"])
        got = shift_tokens_right(labels, case["pad_id"])
        assert isinstance(got, np.ndarray) and got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)
        got_jax = jax.jit(shift_tokens_right, static_argnums=1)(jnp.asarray(labels), 1)
        np.testing.assert_array_equal(np.asarray(got_jax), expected)


def test_shift_tokens_right_moves_language_code_to_the_front(tok):
    labels_BxT, _ = tok.encode_batch(["Hello world", "opened"], "ro_RO")
    shifted = shift_tokens_right(labels_BxT, tok.pad_id)
    ro = tok.lang_id("ro_RO")
    if tok.style == "cc25":  # Y </s> [tgt] -> [tgt] Y </s>
        assert (shifted[:, 0] == ro).all()
    else:  # [tgt] Y </s> -> </s> [tgt] Y
        assert (shifted[:, 0] == tok.eos_id).all() and (shifted[:, 1] == ro).all()


def test_shift_tokens_right_all_pad_row_starts_with_pad():
    labels = np.array([[5, 6, 2], [-100, -100, -100]])
    np.testing.assert_array_equal(shift_tokens_right(labels, 1), [[2, 5, 6], [1, 1, 1]])


def test_train_sentencepiece_reproduces_the_fixture_model(tmp_path):
    # Same corpus and options as the fixture script: same pieces and scores (determinism).
    model = train_sentencepiece(tmp_path / "spm", 300, files=[FIXTURES / "corpus.txt"], seed=0)
    ours = spm.SentencePieceProcessor(model_file=str(model))
    ref = spm.SentencePieceProcessor(model_file=str(SPM_MODEL))
    assert ours.get_piece_size() == ref.get_piece_size() == 300
    for i in range(300):
        assert ours.id_to_piece(i) == ref.id_to_piece(i)
        assert ours.get_score(i) == ref.get_score(i)


def test_train_sentencepiece_from_sentences_has_mbart_control_ids(tmp_path):
    lines = (FIXTURES / "corpus.txt").read_text(encoding="utf-8").splitlines()
    model = train_sentencepiece(tmp_path / "it", 200, sentences=iter(lines))
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert MBartTokenizer(model).vocab_size == 200 + 1 + 25 + 1
    with pytest.raises(ValueError, match="exactly one"):
        train_sentencepiece(tmp_path / "x", 200)


def test_model_with_other_control_ids_is_rejected(tmp_path):
    lines = (FIXTURES / "corpus.txt").read_text(encoding="utf-8").splitlines()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(tmp_path / "bad"),
        vocab_size=200,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match=r"\(1, 2, 3\).*train_sentencepiece"):
        MBartTokenizer(tmp_path / "bad.model")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        MBartTokenizer(tmp_path / "missing.model")


def test_pieces_give_a_word_start_table_of_vocab_size():
    from zoo.mbart.noising import word_start_table

    tok = MBartTokenizer(FIXTURES / "spm300.model")
    table = word_start_table(tok.pieces())
    assert table.shape == (tok.vocab_size,)
    assert table[:4].all() and not table[tok.lang_id("en_XX")] and not table[tok.mask_id]
    ids = tok.encode("hello world", "en_XX")
    assert table[ids[0]]  # a sentence starts with a word


def test_spm_command_trains_a_model_the_tokenizer_reads(tmp_path):
    from zoo import cli

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((FIXTURES / "corpus.txt").read_text())
    prefix = tmp_path / "m" / "spm"
    code = cli.main(
        ["spm", "--input", str(corpus), "--model-prefix", str(prefix), "--vocab-size", "200"]
    )
    assert code == 0
    tok = MBartTokenizer(f"{prefix}.model")
    # 200 pieces take ids 0..200 (fairseq offset); the codes follow, en_XX 4th (cf. 250004).
    assert tok.lang_id("ar_AR") == 201 and tok.lang_id("en_XX") == 204
    assert (
        cli.main(
            [
                "spm",
                "--input",
                str(tmp_path / "missing.txt"),
                "--model-prefix",
                str(prefix),
                "--vocab-size",
                "200",
            ]
        )
        == 2
    )
