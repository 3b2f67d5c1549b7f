"""ZeTT vocabularies: decomposition into source ids, tokenizer sampling, target tokenizer files.

Tiny real sentencepiece models are trained on made-up sentences: the source on English only (so
"ß", "ä", "€" are unknown to it), targets on English + German.
"""

import collections
import io
import json
import random

import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

from zoo.mbart.tokenizer import MBartTokenizer, train_sentencepiece
from zoo.zett import vocab as vt

EN_WORDS = (
    "the a house garden river mountain city people children teacher market window table "
    "morning evening summer winter is was are were has have will would can could walks runs "
    "reads writes builds opens closes sees finds gives takes small large green quiet happy "
    "old new bright dark quickly slowly together again never always often under over near "
    "behind between friendly beautiful important interesting station library kitchen bridge "
    "yesterday tomorrow because although while and or but with without from into"
).split()
DE_WORDS = (
    "der die das Haus Garten Fluss Berg Stadt Leute Kinder Lehrer Markt Fenster Tisch Straße "
    "Morgen Abend Sommer Winter ist war sind waren hat haben wird würde kann könnte geht läuft "
    "liest schreibt baut öffnet schließt sieht findet gibt nimmt klein groß grün ruhig "
    "glücklich alt neu hell dunkel schnell langsam zusammen wieder niemals immer oft unter "
    "über neben hinter zwischen freundlich schön wichtig Bahnhof Bücherei Küche Brücke "
    "gestern morgen weil obwohl während und oder aber mit ohne aus Fußgängerübergänge"
).split()


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choices(words, k=rng.randint(4, 11)))
        out.append(text[0].upper() + text[1:] + rng.choice(".!?,;"))
    return out


ENGLISH = sentences(EN_WORDS, 300, seed=0)
GERMAN = sentences(DE_WORDS, 300, seed=1)
HELD_OUT = sentences(EN_WORDS, 25, seed=2) + sentences(DE_WORDS, 25, seed=3)


def train_in_memory(texts: list[str], **options) -> bytes:
    """A sentencepiece model trained by spm directly (for options train_sentencepiece lacks)."""
    model = io.BytesIO()
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        hard_vocab_limit=False,  # the made-up corpora are small
        **options,
    )
    return model.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab_transfer")
    return {
        "root": root,
        "source": train_sentencepiece(root / "source", 200, sentences=ENGLISH),
        "target": train_sentencepiece(root / "target", 300, sentences=ENGLISH + GERMAN),
    }


@pytest.fixture(scope="module")
def source(files):
    return MBartTokenizer(files["source"])


@pytest.fixture(scope="module")
def target(files):
    return MBartTokenizer(files["target"], languages=("de_DE", "en_XX", "ro_RO"))


@pytest.fixture(scope="module")
def decomposer(source):
    return vt.Decomposer(source)


def reassembled_bytes(decomposer: vt.Decomposer, ids: list[int]) -> bytes:
    """The bytes a decomposition spells: source piece strings, byte pieces and fallback rows."""
    src = decomposer.source
    out = b""
    for i in ids:
        if i >= src.vocab_size:
            out += bytes([i - src.vocab_size])
        elif src.processor.is_byte(i - 1):
            out += bytes([int(src.processor.id_to_piece(i - 1)[3:5], 16)])
        else:
            out += src.pieces()[i].encode("utf-8")
    return out


# --- decomposition ------------------------------------------------------------------------


def test_model_only_processor_keeps_the_piece_string_verbatim(source):
    sp = vt.model_only_processor(source)
    with_meta = sp.encode("▁garden", out_type=str)
    assert "".join(with_meta) == "▁garden" and with_meta[0].startswith("▁")
    bare = sp.encode("garden", out_type=str)
    assert "".join(bare) == "garden" and not bare[0].startswith("▁")
    # The tokenizer itself would add the dummy prefix: the switch-off is what makes them differ.
    assert source.processor.encode("garden", out_type=str)[0].startswith("▁")


def test_source_pieces_decompose_to_themselves(source, decomposer):
    the = source.pieces().index("▁the")
    assert decomposer.decompose("▁the") == [the]
    forms = decomposer.source_surface()
    regular = forms.special_source < 0
    assert regular.sum() == source.num_pieces - 3
    rows = np.flatnonzero(regular & (forms.lengths == 1))
    assert len(rows) >= 0.95 * regular.sum()
    np.testing.assert_array_equal(forms.ids[rows, 0], rows)


def test_long_target_piece_decomposes_into_source_pieces_that_spell_it(source, target, decomposer):
    known = set("".join(source.pieces()[4 : source.num_pieces + 1]))
    src_pieces = set(source.pieces())
    longs = [
        p
        for p in target.pieces()[4 : target.num_pieces + 1]
        if len(p) >= 6 and p not in src_pieces and set(p) <= known
    ]
    assert longs, "the target should have long pieces that the source lacks"
    for piece in longs:
        ids = decomposer.decompose(piece)
        assert len(ids) >= 2 and all(4 <= i <= source.num_pieces for i in ids)
        assert "".join(source.pieces()[i] for i in ids) == piece


def test_character_unknown_to_source_becomes_its_utf8_fallback_ids(source, decomposer):
    V = source.vocab_size
    assert decomposer.decompose("ß") == [V + 0xC3, V + 0x9F]
    assert decomposer.decompose("€") == [V + 0xE2, V + 0x82, V + 0xAC]
    ids = decomposer.decompose("▁Straße")
    assert ids[-3:-1] == [V + 0xC3, V + 0x9F] and all(i < V for i in ids[:-3] + ids[-1:])
    assert reassembled_bytes(decomposer, ids) == "▁Straße".encode()


def test_every_target_row_spells_its_piece_padded_and_truncated(target, decomposer):
    forms = decomposer.surface_matrix(target)
    V = target.vocab_size
    assert forms.ids.shape == (V, vt.SURFACE_LEN) and forms.ids.dtype == np.int32
    assert forms.lengths.shape == forms.special_source.shape == (V,)
    for row, piece in enumerate(target.pieces()[4 : target.num_pieces + 1], start=4):
        full = decomposer.decompose(piece)
        assert reassembled_bytes(decomposer, full) == piece.encode("utf-8"), piece
        n = min(len(full), vt.SURFACE_LEN)
        assert forms.lengths[row] == n
        assert forms.ids[row, :n].tolist() == full[:n]
        assert (forms.ids[row, n:] == 1).all()


def test_long_decomposition_is_truncated_to_seven(source, decomposer):
    counts = vt.SubstringCounts().add(["Preis €€€ heute", "der Preis"])
    tok = MBartTokenizer(None, model_proto=sample(counts, 200, 0, source))
    row = tok.pieces().index("▁€€€")
    forms = decomposer.surface_matrix(tok)
    V = source.vocab_size
    assert len(decomposer.decompose("▁€€€")) == 10
    assert forms.lengths[row] == 7
    assert forms.ids[row].tolist() == [decomposer.decompose("▁")[0]] + [
        V + b for b in "€€".encode()
    ]
    short = tok.pieces().index("▁der")  # two source pieces at most, then padding
    assert forms.lengths[short] < 7 and (forms.ids[short, forms.lengths[short] :] == 1).all()


def test_byte_pieces_map_to_fallback_rows_or_to_source_byte_pieces(files, source, decomposer):
    layout = dict(byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    byte_target = MBartTokenizer(
        None, model_proto=train_in_memory(GERMAN, vocab_size=400, **layout)
    )
    row = byte_target.pieces().index("<0xC3>")
    forms = decomposer.surface_matrix(byte_target)
    assert forms.ids[row].tolist() == [source.vocab_size + 0xC3] + [1] * 6
    assert forms.lengths[row] == 1

    byte_source = MBartTokenizer(
        None, model_proto=train_in_memory(ENGLISH, vocab_size=400, **layout)
    )
    with_bytes = vt.Decomposer(byte_source)
    c3, x9f = byte_source.pieces().index("<0xC3>"), byte_source.pieces().index("<0x9F>")
    assert c3 < byte_source.vocab_size and with_bytes.decompose("<0xC3>") == [c3]
    assert with_bytes.decompose("ß") == [c3, x9f]  # spm's own byte fallback, no fallback rows
    assert with_bytes.surface_matrix(byte_target).ids[row, 0] == c3


def test_special_rows_copy_the_source_specials_by_name(source, target, decomposer):
    forms = decomposer.surface_matrix(target)
    pairs = {0: 0, 1: 1, 2: 2, 3: 3, target.mask_id: source.mask_id}
    for code in target.languages:
        assert target.lang_id(code) != source.lang_id(code)  # different ids: a real mapping
        pairs[target.lang_id(code)] = source.lang_id(code)
    for t_id, s_id in pairs.items():
        assert forms.special_source[t_id] == s_id
        assert forms.ids[t_id].tolist() == [s_id] + [1] * 6 and forms.lengths[t_id] == 1
    assert (np.delete(forms.special_source, list(pairs)) == -1).all()


def test_target_language_missing_from_source_raises(files, decomposer):
    odd = MBartTokenizer(files["target"], languages=("de_DE", "qq_QQ"))
    with pytest.raises(ValueError, match="qq_QQ"):
        decomposer.surface_matrix(odd)


def test_decompose_returns_a_copy_of_the_cached_result(decomposer):
    first = decomposer.decompose("▁house")
    first.append(-7)
    assert decomposer.decompose("▁house")[-1] != -7


# --- sampling -----------------------------------------------------------------------------


def test_substring_counts_count_every_substring_of_every_pretoken():
    assert vt.pretokens("  ab  c ") == ["▁ab", "▁c"]
    counts = vt.SubstringCounts(max_substring_len=2)
    batch = counts.add(["ab ab", "b"])  # "▁ab" itself is 3 characters: too long
    assert batch == collections.Counter({"▁": 3, "a": 2, "b": 3, "▁a": 2, "ab": 2, "▁b": 1})
    counts.add(["c"])
    counts.remove(batch)
    assert dict(counts.counts) == {"▁": 1, "c": 1, "▁c": 1}  # zero counts are gone


def sample(counts, num_pieces, seed, template, noise_std=0.0) -> bytes:
    rng = np.random.default_rng(seed)
    return vt.sample_unigram_model(counts, num_pieces, rng, noise_std=noise_std, template=template)


@pytest.fixture(scope="module")
def counts():
    return vt.SubstringCounts().add(ENGLISH + GERMAN)


def test_sampled_tokenizer_has_exactly_num_pieces(counts, source):
    for num_pieces in (150, 600):
        tok = MBartTokenizer(None, model_proto=sample(counts, num_pieces, 0, source, None))
        assert tok.num_pieces == num_pieces
        assert [tok.processor.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]


def test_sampled_tokenizer_covers_every_counted_character(counts, source):
    chars = set("".join(ENGLISH + GERMAN).replace(" ", ""))
    for seed in range(3):  # heavy noise: the characters must be there regardless
        tok = MBartTokenizer(None, model_proto=sample(counts, len(chars) + 10, seed, source, 0.1))
        ids, _ = tok.encode_batch(ENGLISH + GERMAN, "en_XX")
        assert not (ids == tok.unk_id).any()


def test_counts_of_normalized_text_cover_what_the_normalizer_produces(source):
    raw = vt.SubstringCounts().add(["ﬁ"])  # NFKC turns the ligature into "fi"
    tok = MBartTokenizer(None, model_proto=sample(raw, 20, 0, source))
    assert tok.unk_id in tok.encode("ﬁ", "en_XX")
    normalized = vt.SubstringCounts(normalize=source.processor.normalize).add(["ﬁ"])
    tok = MBartTokenizer(None, model_proto=sample(normalized, 20, 0, source))
    assert tok.unk_id not in tok.encode("ﬁ", "en_XX")


def test_sampling_is_deterministic_and_noise_depends_on_the_seed(counts, source):
    assert sample(counts, 300, 0, source) == sample(counts, 300, 1, source)  # no noise
    assert sample(counts, 300, 5, source, 1e-3) == sample(counts, 300, 5, source, 1e-3)
    assert sample(counts, 300, 5, source, 1e-3) != sample(counts, 300, 6, source, 1e-3)
    assert sample(counts, 300, 5, source, None) == sample(counts, 300, 5, source, None)
    reordered = collections.Counter(dict(reversed(list(counts.items()))))
    assert sample(reordered, 300, 5, source, 1e-3) == sample(counts, 300, 5, source, 1e-3)


def test_sampled_tokenizer_segments_text_and_round_trips(counts, source):
    tok = MBartTokenizer(None, model_proto=sample(counts, 600, 0, source))
    for text in HELD_OUT[:10] + HELD_OUT[-10:]:
        ids = tok.encode(text, "de_DE")
        assert tok.decode(ids) == text
        assert len(ids) - 2 < len(text.replace(" ", ""))  # real multi-character pieces
    pieces = tok.processor.encode("Die Kinder", out_type=str)
    assert pieces[0].startswith("▁")  # the template's dummy prefix and ▁ escaping are kept


def test_sampled_pieces_follow_the_unigram_scores(counts, source):
    proto = model_pb2.ModelProto.FromString(sample(counts, 300, 0, source))
    scores = [p.score for p in proto.pieces[3:]]
    assert scores == sorted(scores, reverse=True)
    assert np.isclose(np.exp(scores).sum(), 1.0)
    assert proto.trainer_spec.model_type == proto.trainer_spec.UNIGRAM
    assert proto.normalizer_spec.name == "nmt_nfkc" and proto.normalizer_spec.add_dummy_prefix
    # Golden: with no noise, the kept multi-character pieces are the top count x length, and
    # every score is log(count x length / sum over the kept pieces).
    kept = {p.piece: p.score for p in proto.pieces[3:]}
    longer = sorted((s for s in counts if len(s) > 1), key=lambda s: (-counts[s] * len(s), s))
    chars = {s for s in counts if len(s) == 1}
    assert set(kept) == chars | set(longer[: 300 - 3 - len(chars)])
    total = sum(counts[s] * len(s) for s in kept)
    for piece, score in kept.items():
        assert np.isclose(score, np.log(counts[piece] * len(piece) / total)), piece


def test_few_substrings_give_fewer_pieces_and_too_few_slots_raise(source):
    counts = vt.SubstringCounts().add(["ab"])
    tok = MBartTokenizer(None, model_proto=sample(counts, 100, 0, source))
    assert tok.num_pieces == 3 + 6  # ▁ a b ▁a ab ▁ab
    with pytest.raises(ValueError, match="distinct characters"):
        sample(vt.SubstringCounts().add(["abcdef"]), 8, 0, source)


# --- target tokenizer files ---------------------------------------------------------------


def piece_strings(sp: spm.SentencePieceProcessor, text: str) -> list[str]:
    return ["<unk>" if i == sp.unk_id() else sp.id_to_piece(i) for i in sp.encode(text)]


def test_mbart_layout_model_is_returned_unchanged(files):
    assert vt.load_target_model_proto(str(files["target"])) == files["target"].read_bytes()


@pytest.mark.parametrize(
    "layout",
    [dict(pad_id=0, unk_id=1, bos_id=2, eos_id=3), dict(unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1)],
)
def test_other_control_layouts_become_mbart_layout_with_the_same_segmentation(files, layout):
    path = files["root"] / f"layout{layout['unk_id']}.model"
    path.write_bytes(train_in_memory(ENGLISH + GERMAN, vocab_size=300, **layout))
    original = spm.SentencePieceProcessor(model_file=str(path))
    tok = MBartTokenizer(None, model_proto=vt.load_target_model_proto(str(path)))
    controls = 4 if layout["pad_id"] == 0 else 1
    assert tok.num_pieces == original.get_piece_size() - controls + 3
    for text in HELD_OUT + ["Ein Preis von 5 €"]:
        assert piece_strings(tok.processor, text) == piece_strings(original, text)


@pytest.fixture
def hf_lib():
    """The `tokenizers` library (test-only: the conversion itself parses the JSON)."""
    return pytest.importorskip("tokenizers", reason="tokenizer.json tests need `tokenizers`")


def hf_tokenizer(model: str, normalizer, pre_tokenizer):
    from tokenizers import Tokenizer, models, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    if model == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=300, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
    else:
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(ENGLISH + GERMAN, trainer=trainer)
    return tok


def nmt_nfkc_charsmap(files) -> bytes:
    sp = spm.SentencePieceProcessor(model_file=str(files["source"]))
    proto = model_pb2.ModelProto.FromString(sp.serialized_model_proto())
    return proto.normalizer_spec.precompiled_charsmap


@pytest.mark.parametrize(
    "model,normalizer,pre",
    [
        ("unigram", None, "metaspace"),
        ("unigram", "nfkc", "metaspace"),
        ("unigram", "precompiled", "whitespace+metaspace"),
        ("bpe", None, "metaspace"),
    ],
)
def test_tokenizer_json_segments_like_the_tokenizers_library(hf_lib, files, model, normalizer, pre):
    from tokenizers import Regex, normalizers, pre_tokenizers

    norm = {
        None: None,
        "nfkc": normalizers.NFKC(),
        "precompiled": normalizers.Sequence(
            [
                normalizers.Precompiled(nmt_nfkc_charsmap(files)),
                normalizers.Replace(Regex(" {2,}"), " "),
            ]
        ),
    }[normalizer]
    pre_tok = pre_tokenizers.Metaspace()
    if pre == "whitespace+metaspace":
        pre_tok = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tok])
    hf = hf_tokenizer(model, norm, pre_tok)
    path = files["root"] / f"{model}-{normalizer}.json"
    path.write_text(hf.to_str(), encoding="utf-8")
    tok = MBartTokenizer(None, model_proto=vt.load_target_model_proto(str(path)))
    assert tok.num_pieces == hf.get_vocab_size() - 4 + 3  # its 4 specials -> mBART's 3 controls
    unk = hf.token_to_id("<unk>")
    # (Not leading spaces: see load_target_model_proto's docstring.)
    texts = HELD_OUT + ["Die Straße kostet 5 € ﬁne", "ÄÖÜ äöü", "two  spaces  "]
    for text in texts:
        ours = piece_strings(tok.processor, text)
        encoding = hf.encode(text)  # (unknown characters keep their text there; id <unk>)
        theirs = ["<unk>" if i == unk else t for t, i in zip(encoding.tokens, encoding.ids)]
        assert ours == theirs, text


def test_byte_level_tokenizer_json_is_rejected(hf_lib, files):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(
        ENGLISH, trainer=trainers.BpeTrainer(vocab_size=300, show_progress=False)
    )
    path = files["root"] / "bytelevel.json"
    path.write_text(tok.to_str(), encoding="utf-8")
    with pytest.raises(ValueError, match="byte-level BPE"):
        vt.load_target_model_proto(str(path))


def test_other_files_are_rejected_with_the_accepted_formats(files):
    text = files["root"] / "notes.txt"
    text.write_text("not a tokenizer\n", encoding="utf-8")
    with pytest.raises(ValueError, match="notes.txt.*sentencepiece .model"):
        vt.load_target_model_proto(str(text))
    wordpiece = files["root"] / "wordpiece.json"
    wordpiece.write_text(
        json.dumps({"model": {"type": "WordPiece", "vocab": {}}, "pre_tokenizer": {
            "type": "Metaspace", "replacement": "▁", "prepend_scheme": "always"}}),
        encoding="utf-8",
    )  # fmt: skip
    with pytest.raises(ValueError, match="WordPiece"):
        vt.load_target_model_proto(str(wordpiece))
