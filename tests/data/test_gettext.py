"""gettext parallel text: .mo parsing, pair rules, split-by-catalog properties, TFDS builder."""

import gettext as stdlib_gettext
import logging
import shutil
import struct
from pathlib import Path

import pytest

from zoo.data import load_source
from zoo.data.gettext import (
    SPLITS,
    MoEntry,
    MoFormatError,
    assign_splits,
    build_pairs,
    gettext_builder,
    gettext_stats,
    parse_mo,
    read_mo,
    related_domains,
)

UTF8_HEADER = (
    b"Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n"
)
REAL_LOCALE = Path("/usr/share/locale")


def mo_bytes(
    entries: list[tuple[bytes, bytes]], *, byteorder: str = "<", revision: int = 0
) -> bytes:
    """A minimal GNU .mo file (no hash table); entries are (msgid, msgstr) raw bytes."""
    entries = sorted(entries)
    count = len(entries)
    ids_at = 28
    strs_at = ids_at + 8 * count
    data_at = strs_at + 8 * count
    blob = b""
    ids_table = strs_table = b""
    for msgid, _ in entries:
        ids_table += struct.pack(byteorder + "2I", len(msgid), data_at + len(blob))
        blob += msgid + b"\0"
    for _, msgstr in entries:
        strs_table += struct.pack(byteorder + "2I", len(msgstr), data_at + len(blob))
        blob += msgstr + b"\0"
    header = struct.pack(byteorder + "7I", 0x950412DE, revision, count, ids_at, strs_at, 0, 0)
    return header + ids_table + strs_table + blob


def catalog(pairs: dict[str, str], *, charset: str = "UTF-8") -> bytes:
    header = f"Content-Type: text/plain; charset={charset}\n".encode()
    entries = [(b"", header)] + [(k.encode(charset), v.encode(charset)) for k, v in pairs.items()]
    return mo_bytes(entries)


def write_locale(root: Path, lang: str, domains: dict[str, bytes]) -> Path:
    directory = root / lang / "LC_MESSAGES"
    directory.mkdir(parents=True, exist_ok=True)
    for domain, data in domains.items():
        (directory / f"{domain}.mo").write_bytes(data)
    return root


# --- parsing -------------------------------------------------------------------------------

RICH_ENTRIES = [
    (b"", UTF8_HEADER),
    (b"Open", "Öffnen".encode()),
    (b"menu\x04Open", "Öffnen (Menü)".encode()),
    (b"%d file\x00%d files", b"%d Datei\x00%d Dateien"),
    (b"ctx\x04%d dir\x00%d dirs", b"%d Ordner\x00%d Ordnern"),
    (b"Untranslated", b""),
]


def test_parse_mo_reads_context_plurals_and_header():
    parsed = parse_mo(mo_bytes(RICH_ENTRIES), source="rich.mo")
    assert parsed.charset == "UTF-8"
    assert parsed.header == UTF8_HEADER.decode()
    assert set(parsed.entries) == {
        MoEntry("Open", ("Öffnen",)),
        MoEntry("Open", ("Öffnen (Menü)",), context="menu"),
        MoEntry("%d file", ("%d Datei", "%d Dateien"), msgid_plural="%d files"),
        MoEntry("%d dir", ("%d Ordner", "%d Ordnern"), context="ctx", msgid_plural="%d dirs"),
        MoEntry("Untranslated", ("",)),
    }


def test_parse_mo_big_endian_and_revision_1_equal_little_endian():
    little = parse_mo(mo_bytes(RICH_ENTRIES))
    assert parse_mo(mo_bytes(RICH_ENTRIES, byteorder=">")) == little
    assert parse_mo(mo_bytes(RICH_ENTRIES, revision=1 << 16)) == little


def test_parse_mo_decodes_the_header_charset():
    latin1 = catalog({"Size": "Größe"}, charset="ISO-8859-1")
    assert "Gr\xf6\xdfe".encode("latin-1") in latin1  # really not UTF-8 on disk
    parsed = parse_mo(latin1)
    assert parsed.charset == "ISO-8859-1" and parsed.entries == (MoEntry("Size", ("Größe",)),)
    no_header = parse_mo(mo_bytes([(b"Size", "Größe".encode())]))
    assert no_header.charset == "utf-8" and no_header.entries[0].msgstrs == ("Größe",)


def test_parse_mo_agrees_with_stdlib_gettext(tmp_path):
    files = [tmp_path / "rich.mo"]
    files[0].write_bytes(mo_bytes(RICH_ENTRIES))
    files += sorted((REAL_LOCALE / "de" / "LC_MESSAGES").glob("*.mo"))[:40]
    for path in files:
        with open(path, "rb") as f:
            try:
                expected = stdlib_gettext.GNUTranslations(f)._catalog
            except UnicodeDecodeError:
                continue  # stdlib decodes headers as UTF-8 before reading the charset
        got = {}
        for e in read_mo(path).entries:
            key = e.msgid if e.context is None else f"{e.context}\x04{e.msgid}"
            if e.msgid_plural is None:
                got[key] = e.msgstrs[0]
            else:
                got.update({(key, i): s for i, s in enumerate(e.msgstrs)})
        expected.pop("", None)
        assert got == expected, path


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00" * 10, "shorter than the 20-byte header"),
        (b"\x12\x34\x56\x78" + b"\x00" * 24, "magic number 12345678"),
        (mo_bytes([(b"a", b"b")], revision=2 << 16), "major revision 2"),
        (mo_bytes([(b"a", b"b")])[:-4], "runs past the end"),
        (struct.pack("<7I", 0x950412DE, 0, 1000, 28, 8028, 0, 0), "table of 1000 entries"),
        (
            mo_bytes([(b"", b"Content-Type: text/plain; charset=KLINGON-8\n"), (b"a", b"b")]),
            "unknown charset 'KLINGON-8'",
        ),
        (mo_bytes([(b"", UTF8_HEADER), (b"a", b"\xff\xfe")]), "do not decode as UTF-8"),
    ],
)
def test_parse_mo_rejects_malformed_files_naming_them(data, reason):
    with pytest.raises(MoFormatError, match=f"broken.mo: not a valid .mo file: .*{reason}"):
        parse_mo(data, source="broken.mo")


# --- pairs and splits ----------------------------------------------------------------------


def test_pairs_strip_context_use_singular_normalise_and_drop_untranslated(tmp_path, caplog):
    write_locale(
        tmp_path,
        "de",
        {
            "app": mo_bytes(
                RICH_ENTRIES
                + [
                    (b"Same", b"Same"),
                    (b"Two\n   lines", b"Zwei\n\tZeilen"),
                ]
            ),
            "latin": catalog({"Size": "Größe"}, charset="ISO-8859-1"),
            "corrupt": b"\xde\x12\x04\x95 this is not a catalog",
        },
    )
    with caplog.at_level(logging.WARNING):
        splits, stats = build_pairs("en", "de", tmp_path)
    pairs = {(s, t) for split in SPLITS for s, t, _ in splits[split]}
    assert pairs == {
        ("Open", "Öffnen"),  # first translated entry of the two contexts
        ("%d file", "%d Datei"),
        ("%d dir", "%d Ordner"),
        ("Two lines", "Zwei Zeilen"),
        ("Size", "Größe"),
    }
    corrupt = str(tmp_path / "de" / "LC_MESSAGES" / "corrupt.mo")
    assert list(stats["malformed_files"]) == [corrupt]
    assert corrupt in caplog.text
    dropped = [stats[s]["dropped"] for s in SPLITS]
    assert sum(d["untranslated"] for d in dropped) == 1
    assert sum(d["identical"] for d in dropped) == 1


def _many_domains(root: Path) -> Path:
    """12 catalogs: unrelated ones, a near-copy pair, and short strings shared by several."""
    domains = {}
    for i in range(10):
        strings = {f"message {i}-{j}": f"Nachricht {i}-{j}" for j in range(5 + 7 * i)}
        strings["Cancel"] = "Abbrechen"  # occurs in unrelated catalogs
        domains[f"tool{i}"] = catalog(strings)
    copy = {f"country {j}": f"Land {j}" for j in range(30)}
    domains["iso_3166"] = catalog(copy)
    domains["iso_3166-1"] = catalog(copy | {"country x": "Land x"})
    return write_locale(root, "de", domains)


def test_split_by_catalog_no_domain_or_source_in_two_splits(tmp_path):
    splits, stats = build_pairs("en", "de", _many_domains(tmp_path))
    domains = {s: {d for _, _, d in splits[s]} for s in SPLITS}
    sources = {s: [src for src, _, _ in splits[s]] for s in SPLITS}
    for i, a in enumerate(SPLITS):
        assert splits[a], f"split {a} is empty"
        assert len(sources[a]) == len(set(sources[a])), f"duplicate source within {a}"
        assert stats[a]["pairs"] == len(splits[a])
        for b in SPLITS[i + 1 :]:
            assert not domains[a] & domains[b]
            assert not set(stats[a]["catalogs"]) & set(stats[b]["catalogs"])
            assert not set(sources[a]) & set(sources[b])
    # Near-copies share a split; "Cancel" is kept by exactly one split.
    split_of = {d: s for s in SPLITS for d in stats[s]["catalogs"]}
    assert split_of["iso_3166"] == split_of["iso_3166-1"]
    assert sum(src == "Cancel" for s in SPLITS for src in sources[s]) == 1
    assert sum(stats[s]["dropped"]["seen_in_other_split"] for s in SPLITS) >= 1


def test_splits_are_deterministic_across_directories_and_file_order(tmp_path):
    first = build_pairs("en", "de", _many_domains(tmp_path / "a"))
    # Same catalogs written in the opposite order into another directory.
    source = tmp_path / "a" / "de" / "LC_MESSAGES"
    target = tmp_path / "b" / "de" / "LC_MESSAGES"
    target.mkdir(parents=True)
    for path in sorted(source.iterdir(), reverse=True):
        shutil.copy(path, target / path.name)
    assert build_pairs("en", "de", tmp_path / "b") == first


def test_assign_splits_fills_every_split_and_follows_shares():
    assert set(assign_splits({"a": 500, "b": 1, "c": 1}).values()) == set(SPLITS)
    sizes = {f"d{i}": 10 for i in range(100)}
    counts = {s: list(assign_splits(sizes).values()).count(s) for s in SPLITS}
    assert counts == {"train": 80, "validation": 10, "test": 10}


def test_related_domains_groups_heavy_overlap_only():
    sources = {"a": {"1", "2", "3", "4"}, "b": {"1", "2"}, "c": {"4", "9", "8"}, "d": {"7"}}
    assert related_domains(sources) == [["a", "b"], ["c"], ["d"]]


def test_pivot_pairs_join_two_languages_on_msgid(tmp_path):
    write_locale(tmp_path, "de", {"app": catalog({"Open": "Öffnen", "Close": "Schließen"})})
    write_locale(tmp_path, "fr", {"app": catalog({"Open": "Ouvrir", "Quit": "Quitter"})})
    write_locale(tmp_path, "fr", {"only_fr": catalog({"Yes": "Oui"})})
    splits, stats = build_pairs("de", "fr", tmp_path)
    assert [(s, t) for split in SPLITS for s, t, _ in splits[split]] == [("Öffnen", "Ouvrir")]
    assert stats["catalogs_without_partner"] == ["only_fr"]
    splits, _ = build_pairs("fr", "en", tmp_path)
    assert {(s, t) for split in SPLITS for s, t, _ in splits[split]} == {
        ("Ouvrir", "Open"),
        ("Quitter", "Quit"),
        ("Oui", "Yes"),
    }


def test_missing_language_error_names_directory_and_known_languages(tmp_path):
    write_locale(tmp_path, "fr", {"app": catalog({"Open": "Ouvrir"})})
    with pytest.raises(FileNotFoundError, match=r"'de' in .*de/LC_MESSAGES.*catalogs under .*: fr"):
        build_pairs("en", "de", tmp_path)
    with pytest.raises(ValueError, match="both 'fr'"):
        build_pairs("fr", "fr", tmp_path)
    with pytest.raises(FileNotFoundError, match="'de' in"):
        gettext_builder(tmp_path / "data", tgt_lang="de", locale_dir=tmp_path)


# --- TFDS builder --------------------------------------------------------------------------


def test_builder_stores_splits_features_and_stats(tmp_path):
    locale = _many_domains(tmp_path / "locale")
    builder = gettext_builder(tmp_path / "data", src_lang="en", tgt_lang="de", locale_dir=locale)
    expected, stats = build_pairs("en", "de", locale)
    assert gettext_stats(builder) == stats
    for split in SPLITS:
        source = load_source(builder, split)
        stored = [
            (source[i]["en"].decode(), source[i]["de"].decode(), source[i]["domain"].decode())
            for i in range(len(source))
        ]
        assert stored == expected[split]
    # Prepared once: a second call reuses the directory.
    assert gettext_builder(tmp_path / "data", locale_dir=locale).data_dir == builder.data_dir


def test_builder_on_real_catalogs_gives_over_1000_german_pairs(tmp_path):
    if not list((REAL_LOCALE / "de" / "LC_MESSAGES").glob("*.mo")):
        pytest.skip(f"no German gettext catalogs in {REAL_LOCALE}/de/LC_MESSAGES on this machine")
    builder = gettext_builder(tmp_path, src_lang="en", tgt_lang="de")
    stats = gettext_stats(builder)
    sizes = {split: len(load_source(builder, split)) for split in builder.info.splits}
    assert sizes == {s: stats[s]["pairs"] for s in SPLITS}
    assert sum(sizes.values()) > 1000 and min(sizes.values()) > 0
    example = load_source(builder, "test")[0]
    assert set(example) == {"en", "de", "domain"}
