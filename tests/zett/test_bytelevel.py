"""Byte-level tokenizers for ZeTT: token bytes, roles, the model-only tokenizer, decomposition.

Fixtures (tests/fixtures/make_bytelevel_fixtures.py): tiny tokenizers trained on German/English
gettext strings: GPT-2-style and Llama-3-style byte-level BPE (tokenizer.json), a sentencepiece
Unigram without byte fallback (400 pieces, pad 3) and a sentencepiece BPE with byte fallback
(Llama-2 style), also as transformers' tokenizer.json; transformers' ids in expected.json.
"""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from zoo.zett import vocab as vt
from zoo.zett.bytelevel import ByteDecomposer, TokenVocab, bytes_to_unicode, unicode_to_bytes
from zoo.zett.hypernet import fvt_embeddings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bytelevel"
FILES = {
    "gpt2": "gpt2/tokenizer.json",
    "llama3": "llama3/tokenizer.json",
    "llama2": "llama2/tokenizer.json",
    "spm_unigram": "spm_unigram.model",
    "spm_bpe": "spm_bpe.model",
}


@pytest.fixture(scope="module")
def vocabs() -> dict[str, TokenVocab]:
    return {name: TokenVocab.from_file(str(FIXTURES / path)) for name, path in FILES.items()}


@pytest.fixture(scope="module")
def decomposers(vocabs) -> dict[str, ByteDecomposer]:
    return {name: ByteDecomposer(v) for name, v in vocabs.items()}


def tid(vocab: TokenVocab, piece: str) -> int:
    return vocab.pieces.index(piece)


def spelled(vocab: TokenVocab, ids: list[int]) -> list:
    """Piece strings of source ids; fallback rows as ("fallback", byte)."""
    return [vocab.pieces[i] if i < vocab.vocab_size else ("fallback", i - vocab.vocab_size)
            for i in ids]  # fmt: skip


def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("\t")] == "ĉ"
    assert all(table[b] == chr(b) for b in range(ord("!"), ord("~") + 1))
    assert table[0xC3] == "Ã" and table[0xBC] == "¼" and table[0xAD] == "Ń"
    assert all(unicode_to_bytes()[c] == b for b, c in table.items())


def test_byte_level_tokens_are_the_bytes_they_spell(vocabs):
    g = vocabs["gpt2"]
    golden = {
        "Ã¼": "ü".encode(),  # a 2-byte character
        "ĠâĤ¬": " €".encode(),  # a 3-byte one after a space
        "ĠðŁĺĢ": " 😀".encode(),  # a 4-byte emoji
        "ĠMÃ¼ller": " Müller".encode(),
        "Ã": b"\xc3",  # only the first byte of "ü" (a partial character)
        "ðŁ": b"\xf0\x9f",  # the first two bytes of an emoji
        "Ġ": b" ",
        "ĠĠ": b"  ",
        "Ċ": b"\n",
    }
    for piece, data in golden.items():
        assert g.token_bytes[tid(g, piece)] == data, piece
    assert g.token_bytes[0] is None and g.pieces[0] == "<|endoftext|>"
    # tokenizer_config.json: bos = eos = unk = <|endoftext|>; GPT-2 has no pad.
    assert g.roles == {"bos": 0, "eos": 0, "unk": 0} and g.special_ids == {0}
    # No tokenizer_config.json: roles from the common names.
    assert vocabs["llama3"].roles == {"bos": 0, "eos": 1}


def test_sentencepiece_pieces_are_bytes_with_space_and_byte_fallback(vocabs):
    for name in ("spm_bpe", "llama2"):
        v = vocabs[name]
        assert v.token_bytes[tid(v, "▁")] == b" " and v.token_bytes[tid(v, "▁▁")] == b"  "
        assert v.token_bytes[tid(v, "<0xC3>")] == b"\xc3"
        assert v.token_bytes[tid(v, "▁Müller")] == " Müller".encode()
        assert v.roles == {"bos": 1, "eos": 2, "unk": 0}
        assert v.special_ids == {0, 1, 2} and v.token_bytes[:3] == (None, None, None)
        assert len(v.byte_pieces) == 256 and v.byte_pieces[0xC3] == tid(v, "<0xC3>")
    u = vocabs["spm_unigram"]
    assert u.roles == {"bos": 1, "eos": 2, "pad": 3, "unk": 0} and not u.byte_pieces
    assert u.token_bytes[tid(u, "▁")] == b" " and u.token_bytes[tid(u, "😀")] == "😀".encode()


@pytest.mark.parametrize("name", list(FILES))
def test_encode_equals_transformers_and_its_bytes_give_back_the_text(vocabs, name):
    v = vocabs[name]
    expected = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))[name]
    assert v.vocab_size == expected["vocab_size"]
    for case in expected["cases"]:
        text = case["text"]
        ids = v.encode(text)
        assert ids == case["ids"], text
        assert v.encode(text, add_special_tokens=True) == case["ids_special"], text
        if any(v.token_bytes[i] is None for i in ids):  # <unk> (the Unigram model's 漢字)
            assert name == "spm_unigram"
            continue
        spelled_text = b"".join(v.token_bytes[i] for i in ids).decode("utf-8")
        # sentencepiece's dummy prefix (and Llama-2's Prepend("▁")) adds one leading space.
        prefix = "" if v.alphabet == "bytelevel" else " "
        assert spelled_text == prefix + text
        # (transformers' slow LlamaTokenizer drops a leading space there: not compared.)
        assert v.decode(ids) == text


def test_model_tokenize_runs_only_the_model(vocabs):
    g, b = vocabs["gpt2"], vocabs["spm_bpe"]
    assert g.model_tokenize("ĠMÃ¼ller") == [tid(g, "ĠMÃ¼ller")] == g.encode(" Müller")
    # No pre-tokenizer: a surface across words is merged as one string.
    assert [g.pieces[i] for i in g.model_tokenize("Ġder")] == ["Ġder"]
    # No dummy prefix, no whitespace escaping: the surface's characters verbatim.
    assert b.pieces[b.encode("Müller")[0]].startswith("▁")
    assert not b.pieces[b.model_tokenize("Müller")[0]].startswith("▁")
    assert b.model_tokenize("▁Müller") == [tid(b, "▁Müller")]
    assert vocabs["llama2"].model_tokenize("▁Müller") == b.model_tokenize("▁Müller")
    assert g.model_tokenize("") == []


def test_byte_level_decomposes_onto_sentencepiece_golden(vocabs, decomposers):
    g, u, b = vocabs["gpt2"], vocabs["spm_unigram"], vocabs["spm_bpe"]
    on_unigram = {  # no byte fallback: partial characters go to the fallback rows (400 + byte)
        "Ã¼": ["ü"],
        "ĠâĤ¬": ["▁", "€"],
        "ĠðŁĺĢ": ["▁", "😀"],
        "Ã": [("fallback", 0xC3)],
        "ðŁ": [("fallback", 0xF0), ("fallback", 0x9F)],
        "Ġ": ["▁"],
        "ĠĠ": ["▁", "▁"],
        "Ċ": ["\n"],
        "ĠMÃ¼ller": ["▁M", "üll", "er"],
    }
    on_bpe = {  # byte fallback: the source's own <0xNN> pieces
        "Ã¼": ["ü"],
        "ĠâĤ¬": ["▁€"],
        "ĠðŁĺĢ": ["▁😀"],
        "Ã": ["<0xC3>"],
        "ðŁ": ["<0xF0>", "<0x9F>"],
        "ĠĠ": ["▁▁"],
        "ĠGrÃ¼ÃŁe": ["▁Grüße"],
    }
    for src, golden in ((u, on_unigram), (b, on_bpe)):
        dec = ByteDecomposer(src)
        for piece, pieces in golden.items():
            ids = dec.decompose_bytes(g.token_bytes[tid(g, piece)])
            assert spelled(src, ids) == pieces, (src.path, piece)
    # The Llama-2 tokenizer.json (tokenizers library) decomposes as its sentencepiece model.
    l2 = ByteDecomposer(vocabs["llama2"])
    assert np.array_equal(l2.surface_matrix(g).ids, decomposers["spm_bpe"].surface_matrix(g).ids)


def test_sentencepiece_decomposes_onto_byte_level_golden(vocabs, decomposers):
    g, b = vocabs["gpt2"], vocabs["spm_bpe"]
    dec = decomposers["gpt2"]
    golden = {
        "▁": ["Ġ"],
        "▁▁": ["ĠĠ"],
        "<0xC3>": ["Ã"],  # a byte piece -> the byte's character
        "<0x0A>": ["Ċ"],
        "▁Datei": ["ĠDatei"],
        "▁Müller": ["ĠMÃ¼ller"],
        "ü": ["Ã¼"],
        "€": ["â", "Ĥ¬"],
        "😀": ["ðŁ", "ĺĢ"],
    }
    for piece, pieces in golden.items():
        assert spelled(g, dec.decompose_bytes(b.token_bytes[tid(b, piece)])) == pieces, piece
    # Every byte is a GPT-2 character: a byte-level source never needs the fallback rows.
    forms = dec.surface_matrix(vocabs["spm_unigram"])
    assert forms.ids.max() < g.vocab_size


@pytest.mark.parametrize("name", list(FILES))
def test_a_tokenizer_decomposed_onto_itself_has_one_piece_per_token(vocabs, name):
    v = vocabs[name]
    forms = ByteDecomposer(v).surface_matrix(v)
    plain = np.asarray([i not in v.special_ids for i in range(v.vocab_size)])
    assert np.all(forms.lengths == 1)
    firsts = forms.ids[:, 0]
    assert all(v.token_bytes[firsts[i]] == v.token_bytes[i] for i in np.flatnonzero(plain))
    if v.alphabet == "bytelevel":  # distinct strings are distinct bytes: the token itself
        assert np.array_equal(firsts[plain], np.flatnonzero(plain))
    assert np.array_equal(forms.special_source[~plain], np.flatnonzero(~plain))
    assert np.all(forms.special_source[plain] == -1)


def test_surface_matrix_contract_pad_truncation_and_specials(vocabs, decomposers):
    u, g, l3, b = vocabs["spm_unigram"], vocabs["gpt2"], vocabs["llama3"], vocabs["spm_bpe"]
    forms = decomposers["spm_unigram"].surface_matrix(g)
    assert forms.ids.shape == (g.vocab_size, vt.SURFACE_LEN) and forms.ids.dtype == np.int32
    assert decomposers["spm_unigram"].pad_id == 3  # the source's <pad>
    cols = np.arange(vt.SURFACE_LEN)
    assert np.all((forms.ids == 3) == (cols >= forms.lengths[:, None]))
    # <|endoftext|> (bos, eos and unk) -> the source's eos.
    assert forms.special_source[0] == 2 and list(forms.ids[0]) == [2, 3, 3, 3, 3, 3, 3]
    # No pad in the source: pad with its eos (ZeTT's convention for Mistral / TinyLlama).
    dec = decomposers["llama3"]
    assert dec.pad_id == 1
    onto = dec.surface_matrix(u)
    assert list(onto.special_source[:4]) == [-1, 0, 1, 1]  # <unk> has no counterpart: text
    assert spelled(l3, onto.ids[0, : onto.lengths[0]]) == ["<", "un", "k", ">"]
    # A long token is cut at SURFACE_LEN pieces.
    short = ByteDecomposer(b, max_len=2)
    row = tid(g, "ĠGrÃ¼ÃŁe")
    assert short.decompose_bytes(g.token_bytes[row]) == [tid(b, "▁Grüße")]
    full = decomposers["spm_unigram"].decompose_bytes(" Fußgängerübergänge".encode())
    assert len(full) > 2
    cut = ByteDecomposer(u, max_len=2)
    assert cut.decompose_bytes(" Fußgängerübergänge".encode()) == full
    long_target = vocabs["spm_bpe"]
    cut_forms = cut.surface_matrix(long_target)
    assert cut_forms.ids.shape[1] == 2 and cut_forms.lengths.max() == 2


def test_decompositions_are_cached_per_byte_string(vocabs, decomposers):
    dec = ByteDecomposer(vocabs["spm_unigram"])
    first = dec.surface_matrix(vocabs["gpt2"])
    cached = len(dec._cache)
    again = dec.surface_matrix(vocabs["llama3"])  # mostly the same byte strings
    assert len(dec._cache) < cached + vocabs["llama3"].vocab_size // 2
    assert np.array_equal(dec.surface_matrix(vocabs["gpt2"]).ids, first.ids)
    assert again.ids.shape[0] == vocabs["llama3"].vocab_size


def test_fvt_of_byte_level_target_on_sentencepiece_source_equals_numpy_reference(vocabs):
    source, target = vocabs["spm_unigram"], vocabs["gpt2"]
    rng = np.random.default_rng(0)
    E = rng.normal(size=(source.vocab_size, 8)).astype(np.float32)
    dec = ByteDecomposer(source)
    special = dec.special_source(target)
    new = fvt_embeddings(E, dec.decompositions(target), unk_id=source.roles["unk"])
    new = np.where((special >= 0)[:, None], E[np.maximum(special, 0)], new)

    # Reference, independent of zoo: sentencepiece itself with normalization off on each
    # token's text ("▁" for spaces); bytes of partial characters and unknown characters read
    # the unknown row (FVT's convention for the fallback ids).
    proto = spm.SentencePieceProcessor(model_file=source.path).serialized_model_proto()
    sp = vt.identity_processor(proto)
    table = {c: b for b, c in bytes_to_unicode().items()}
    ref = np.empty_like(new)
    for t, piece in enumerate(target.pieces):
        if t == 0:  # <|endoftext|>: the source's </s> row, copied
            ref[t] = E[2]
            continue
        data = bytes(table[c] for c in piece)
        rows = []
        text = data.decode("utf-8", "surrogateescape")
        is_byte = [0xDC80 <= ord(ch) <= 0xDCFF for ch in text]
        for byte, run in itertools.groupby(range(len(text)), key=is_byte.__getitem__):
            chars = "".join(text[i] for i in run)
            if byte:
                rows.extend([0] * len(chars))  # bytes of a partial character
                continue
            for p in sp.encode(chars.replace(" ", "▁"), out_type="proto").pieces:
                rows.extend([0] * len(p.surface.encode()) if p.id == 0 else [p.id])
        ref[t] = E[rows].mean(0)
    np.testing.assert_allclose(new, ref, rtol=1e-6, atol=1e-6)
    assert np.array_equal(new[0], E[2])


def test_byte_level_tokenizer_json_for_mbart_points_to_the_byte_level_path():
    with pytest.raises(ValueError, match="byte-level BPE.*zoo.zett.bytelevel.TokenVocab"):
        vt.load_target_model_proto(str(FIXTURES / "gpt2" / "tokenizer.json"))


def test_unsupported_files_are_refused_with_the_accepted_formats(tmp_path):
    wordpiece = tmp_path / "tokenizer.json"
    model = {"type": "WordLevel", "vocab": {"a": 0, "[UNK]": 1}, "unk_token": "[UNK]"}
    parts = {"normalizer": None, "post_processor": None, "decoder": None, "model": model}
    pre = {"type": "Whitespace"}
    wordpiece.write_text(
        json.dumps({"version": "1.0", "added_tokens": [], "pre_tokenizer": pre, **parts})
    )
    with pytest.raises(ValueError, match="neither a byte-level"):
        TokenVocab.from_file(str(wordpiece))
    text = tmp_path / "notes.txt"
    text.write_text("not a tokenizer\n")
    with pytest.raises(ValueError, match="notes.txt is neither"):
        TokenVocab.from_file(str(text))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        TokenVocab.from_file(str(tmp_path / "missing.json"))


def test_bytes_a_source_cannot_spell_go_to_fallback_rows_and_added_tokens_to_their_text(tmp_path):
    vocab = {c: i for i, c in enumerate("Ġabcd")} | {"Ġa": 5}  # no "Ã", no "<", no unk
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "a")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([AddedToken("<x>", special=False)])
    tok.add_special_tokens(["</s>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    v = TokenVocab.from_file(str(tmp_path / "tokenizer.json"))
    assert v.token_bytes == (b" ", b"a", b"b", b"c", b"d", b" a", b"<x>", None)
    assert v.roles == {"eos": 7}
    dec = ByteDecomposer(v)
    assert dec.decompose_bytes(b" ab") == [5, 2]
    assert dec.decompose_bytes("aü".encode()) == [1, 8 + 0xC3, 8 + 0xBC]  # dropped by BPE
    assert dec.decompose_bytes(b"<x>") == [6]  # a non-special added token: its text
    assert dec.pad_id == 7  # no pad: eos
