"""Parallel text from the gettext catalogs a Linux system installs, as a TFDS builder.

Programs ship translations as `<prefix>/share/locale/<lang>/LC_MESSAGES/<domain>.mo`. Each entry
maps an English msgid to a msgstr in `<lang>`, so every installed catalog is a small parallel
corpus of interface strings (menus, errors, --help text, country and language names).

Pairs: "en" on either side means the msgid; for two other languages the catalogs of a domain
are joined on msgid (English as pivot). Per entry: the header (empty msgid) is skipped, a
msgctxt is dropped, plurals use the singular msgid and msgstr[0], whitespace runs (newlines
included) become one space, and a pair is dropped when either side is empty (untranslated) or
the target equals the source. Keyboard accelerators (`_File`, `&File`) are kept: they cannot be
told apart reliably from `file_name` or `&amp;`, and they appear on both sides alike.

Splits are by catalog, so evaluation strings come from programs never trained on:
1. Domains (e.g. `coreutils`) that share at least half of the smaller one's source strings are
   grouped (gnulib messages copied into coreutils/grep/tar, `iso_639-3` vs `iso_639_3`).
2. Groups go, in order of a hash of their names, to the split furthest below its share
   (80/10/10) of pairs: deterministic for a given set of catalogs, and every split gets a group
   when there are >= 3.
3. The property tests rely on: **no source string occurs in two splits**, and each source
   occurs once within a split. Short strings ("Cancel") still recur across unrelated catalogs;
   such a validation/test pair whose source is in train (or a test pair whose source is in
   validation) is dropped and counted; within a split the first domain in name order wins.

    builder = gettext_builder("/tmp/zoo_data", src_lang="en", tgt_lang="de")
    test = load_source(builder, "test")  # test[i]: {"en": b"...", "de": b"...", "domain": b"..."}
    gettext_stats(builder)               # pairs / catalogs / dropped counts per split

Text features come back as UTF-8 bytes (TFDS without TensorFlow); `.decode()` them.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import tensorflow_datasets as tfds
from etils import epath

_LE_MAGIC = 0x950412DE
SPLITS = ("train", "validation", "test")
SPLIT_SHARES = (0.8, 0.1, 0.1)
_CHARSET_RE = re.compile(rb"charset=([^\s;]+)", re.IGNORECASE)


class MoFormatError(ValueError):
    """A .mo file that cannot be parsed; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class MoEntry:
    """One catalog entry. msgstrs has one string, or one per plural form."""

    msgid: str
    msgstrs: tuple[str, ...]
    context: str | None = None
    msgid_plural: str | None = None


@dataclasses.dataclass(frozen=True)
class MoCatalog:
    charset: str
    header: str  # msgstr of the empty msgid ("" when absent)
    entries: tuple[MoEntry, ...]  # file order, header excluded


def parse_mo(data: bytes, *, source: str = "<bytes>") -> MoCatalog:
    """Parses a GNU .mo file (either byte order, major revision 0 or 1).

    The charset comes from the header's Content-Type (utf-8 when absent; the template
    placeholder "CHARSET" is read as ascii). Raises MoFormatError naming `source` for a bad magic
    number, an unknown revision, out-of-range tables or strings, an unknown charset, or bytes that
    do not decode in the charset: a wrong answer is never returned silently.
    """

    def fail(reason: str) -> MoFormatError:
        return MoFormatError(f"{source}: not a valid .mo file: {reason}")

    if len(data) < 20:
        raise fail(f"{len(data)} bytes is shorter than the 20-byte header")
    for order in "<>":
        if struct.unpack(order + "I", data[:4])[0] == _LE_MAGIC:
            break
    else:
        raise fail(f"magic number {data[:4].hex()} is not 950412de in either byte order")
    revision, count, ids_at, strs_at = struct.unpack(order + "4I", data[4:20])
    if revision >> 16 not in (0, 1):
        raise fail(f"major revision {revision >> 16} (only 0 and 1 exist)")

    def strings(table_at: int, what: str) -> list[bytes]:
        if table_at + 8 * count > len(data):
            raise fail(f"{what} table of {count} entries at {table_at} runs past the end")
        out = []
        for i in range(count):
            length, at = struct.unpack_from(order + "2I", data, table_at + 8 * i)
            if at + length > len(data):
                raise fail(f"{what} {i} ({length} bytes at {at}) runs past the end")
            out.append(data[at : at + length])
        return out

    raw = list(zip(strings(ids_at, "msgid"), strings(strs_at, "msgstr")))
    header = next((s for i, s in raw if i == b""), b"")
    match = _CHARSET_RE.search(header)
    charset = match.group(1).decode("ascii", "replace") if match else "utf-8"
    if charset.upper() == "CHARSET":
        charset = "ascii"
    try:
        codecs.lookup(charset)
    except LookupError:
        raise fail(f"unknown charset {charset!r} in the header") from None

    def text(b: bytes) -> str:
        try:
            return b.decode(charset)
        except UnicodeDecodeError as e:
            raise fail(f"bytes {b[:40]!r} do not decode as {charset}: {e.reason}") from None

    entries = []
    for msgid_b, msgstr_b in raw:
        if msgid_b == b"":
            continue
        context = None
        if b"\x04" in msgid_b:  # msgctxt EOT msgid
            context_b, msgid_b = msgid_b.split(b"\x04", 1)
            context = text(context_b)
        msgid, has_plural, plural = text(msgid_b).partition("\x00")
        entries.append(
            MoEntry(
                msgid=msgid,
                msgstrs=tuple(text(msgstr_b).split("\x00")),
                context=context,
                msgid_plural=plural if has_plural else None,
            )
        )
    return MoCatalog(charset=charset, header=text(header), entries=tuple(entries))


def read_mo(path: str | os.PathLike) -> MoCatalog:
    """parse_mo on a file; errors name the path."""
    return parse_mo(Path(path).read_bytes(), source=os.fspath(path))


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def translations(catalog: MoCatalog) -> dict[str, str]:
    """msgid -> msgstr (msgstr[0] for plurals), whitespace normalised; "" when untranslated.

    Entries that differ only by context give one item: the first translated one in file order.
    """
    out: dict[str, str] = {}
    for entry in catalog.entries:
        msgid = normalize_whitespace(entry.msgid)
        if msgid and not out.get(msgid):
            out[msgid] = normalize_whitespace(entry.msgstrs[0])
    return out


def catalog_dir(locale_dir: str | os.PathLike, lang: str) -> Path:
    return Path(locale_dir) / lang / "LC_MESSAGES"


def available_languages(locale_dir: str | os.PathLike) -> list[str]:
    """Languages under locale_dir that have at least one .mo catalog."""
    root = Path(locale_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if any(catalog_dir(root, p.name).glob("*.mo")))


def catalog_paths(locale_dir: str | os.PathLike, lang: str) -> dict[str, Path]:
    """domain -> .mo path; raises naming the directory and the languages that do exist."""
    directory = catalog_dir(locale_dir, lang)
    paths = {p.stem: p for p in sorted(directory.glob("*.mo"))}
    if not paths:
        known = available_languages(locale_dir)
        raise FileNotFoundError(
            f"no gettext catalogs (*.mo) for language {lang!r} in {directory}; languages with "
            f"catalogs under {locale_dir}: {', '.join(known) if known else 'none'}"
        )
    return paths


def related_domains(sources: dict[str, set[str]], min_overlap: float = 0.5) -> list[list[str]]:
    """Groups of domains that must share a split: connected components of "shares at least
    min_overlap of the smaller domain's source strings" (gnulib copies in coreutils/grep/tar,
    iso_639-3 vs iso_639_3, ld vs opcodes). Each group sorted; groups sorted by first member.
    """
    names = sorted(sources)
    parent = {d: d for d in names}

    def root(d: str) -> str:
        while parent[d] != d:
            parent[d] = parent[parent[d]]
            d = parent[d]
        return d

    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            smaller = min(len(sources[a]), len(sources[b]))
            if smaller and len(sources[a] & sources[b]) >= min_overlap * smaller:
                parent[root(a)] = root(b)
    groups: dict[str, list[str]] = {}
    for d in names:
        groups.setdefault(root(d), []).append(d)
    return sorted(groups.values())


def _order_key(name: str) -> str:
    # A content hash, not Python's salted hash(): the same on every machine and run.
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def assign_splits(sizes: dict[str, int]) -> dict[str, str]:
    """unit (a domain or a group of them) -> split name.

    Units go in hash order of their names, each to the split whose remaining room relative to
    its target share, (share * total - assigned) / share, is largest (ties: train, validation,
    test). With all sizes > 0 and >= 3 units the first three land in train, validation and test,
    so no split is empty.
    """
    total = sum(sizes.values())
    share = dict(zip(SPLITS, SPLIT_SHARES))
    assigned = dict.fromkeys(SPLITS, 0)
    out = {}
    for unit in sorted(sizes, key=_order_key):
        # max() keeps the first of equal keys, so SPLITS order breaks ties.
        split = max(SPLITS, key=lambda s: (share[s] * total - assigned[s]) / share[s])
        out[unit] = split
        assigned[split] += sizes[unit]
    return out


def _domain_pairs(
    tables: dict[str, dict[str, str]], src_lang: str, tgt_lang: str
) -> tuple[list[tuple[str, str]], int, int]:
    """(pairs, untranslated, identical) of one domain; tables: lang -> translations()."""
    msgids = dict.fromkeys(m for table in tables.values() for m in table)  # ordered union

    def side(lang: str, msgid: str) -> str:
        return msgid if lang == "en" else tables[lang].get(msgid, "")

    pairs, untranslated, identical = [], 0, 0
    for msgid in msgids:
        source, target = side(src_lang, msgid), side(tgt_lang, msgid)
        if not source or not target:
            untranslated += 1
        elif source == target:
            identical += 1
        else:
            pairs.append((source, target))
    return pairs, untranslated, identical


def build_pairs(
    src_lang: str, tgt_lang: str, locale_dir: str | os.PathLike
) -> tuple[dict[str, list[tuple[str, str, str]]], dict[str, Any]]:
    """Reads the catalogs and returns (split -> [(source, target, domain)], stats).

    "en" on either side means the msgid; two other languages are joined on msgid per domain.
    stats: {"malformed_files": {path: reason}, "catalogs_without_partner": [domain],
    <split>: {"pairs": int, "catalogs": [domain], "dropped": {"untranslated", "identical",
    "duplicate", "seen_in_other_split"}}}. Malformed files are skipped, each named in a logged
    warning and in stats.
    """
    if src_lang == tgt_lang:
        raise ValueError(f"src_lang and tgt_lang are both {src_lang!r}; pick two languages")
    langs = [lang for lang in (src_lang, tgt_lang) if lang != "en"]
    paths = {lang: catalog_paths(locale_dir, lang) for lang in langs}
    all_domains = set().union(*(p.keys() for p in paths.values()))
    shared = sorted(set.intersection(*(set(p) for p in paths.values())))

    malformed: dict[str, str] = {}
    per_domain: dict[str, list[tuple[str, str]]] = {}
    dropped_by_domain: dict[str, tuple[int, int]] = {}
    for domain in shared:
        tables = {}
        for lang in langs:
            path = paths[lang][domain]
            try:
                tables[lang] = translations(read_mo(path))
            except (MoFormatError, OSError) as e:
                malformed[os.fspath(path)] = str(e)
                logging.warning("skipping malformed gettext catalog %s: %s", path, e)
        if len(tables) < len(langs):
            continue
        pairs, untranslated, identical = _domain_pairs(tables, src_lang, tgt_lang)
        per_domain[domain] = pairs
        dropped_by_domain[domain] = (untranslated, identical)
    if malformed:
        logging.warning("skipped %d malformed catalog(s) under %s", len(malformed), locale_dir)

    groups = related_domains({d: {src for src, _ in p} for d, p in per_domain.items() if p})
    group_split = assign_splits({"+".join(g): sum(len(per_domain[d]) for d in g) for g in groups})
    split_of = {d: group_split["+".join(g)] for g in groups for d in g}
    splits: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SPLITS}
    stats: dict[str, Any] = {
        "malformed_files": malformed,
        "catalogs_without_partner": sorted(all_domains - set(shared)),
    }
    earlier_splits: set[str] = set()  # sources kept by the splits already built
    for split in SPLITS:
        domains = sorted(d for d, s in split_of.items() if s == split)
        dropped = {"untranslated": 0, "identical": 0, "duplicate": 0, "seen_in_other_split": 0}
        seen: set[str] = set()
        for domain in domains:
            dropped["untranslated"] += dropped_by_domain[domain][0]
            dropped["identical"] += dropped_by_domain[domain][1]
            for source, target in per_domain[domain]:
                if source in earlier_splits:
                    dropped["seen_in_other_split"] += 1
                elif source in seen:
                    dropped["duplicate"] += 1
                else:
                    seen.add(source)
                    splits[split].append((source, target, domain))
        earlier_splits |= seen
        stats[split] = {"pairs": len(splits[split]), "catalogs": domains, "dropped": dropped}
    return splits, stats


@dataclasses.dataclass(eq=False)
class GettextConfig(tfds.core.BuilderConfig):
    """Which catalogs to read.

    src_lang, tgt_lang: locale directory names such as "de" or "pt_BR"; "en" means the msgid.
    locale_dir: the `<prefix>/share/locale` directory.
    """

    src_lang: str = "en"
    tgt_lang: str = "de"
    locale_dir: str = "/usr/share/locale"


def catalog_fingerprint(src_lang: str, tgt_lang: str, locale_dir: str | os.PathLike) -> str:
    """Hash of the catalogs' names and bytes: a package upgrade gives a new dataset directory."""
    digest = hashlib.sha256()
    for lang in sorted({src_lang, tgt_lang} - {"en"}):
        for path in sorted(catalog_dir(locale_dir, lang).glob("*.mo")):
            digest.update(f"{lang}/{path.name}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:12]


class GettextParallel(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for gettext parallel text; pass a `GettextConfig` (see `gettext_builder`)."""

    name = "zoo_gettext_parallel"
    # See zoo/smoke/data.py: avoids TFDS's importlib_resources lookup.
    code_path = epath.Path(__file__)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[GettextConfig]] = [GettextConfig(name="en-de_default")]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"gettext catalog strings {config.src_lang} -> {config.tgt_lang} "
            f"from {config.locale_dir}, split by catalog.",
            features=tfds.features.FeaturesDict(
                {
                    config.src_lang: tfds.features.Text(),
                    config.tgt_lang: tfds.features.Text(),
                    "domain": tfds.features.Text(),
                }
            ),
            supervised_keys=(config.src_lang, config.tgt_lang),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # Local files only.
        config = self.builder_config
        splits, stats = build_pairs(config.src_lang, config.tgt_lang, config.locale_dir)
        self.info.metadata["stats"] = stats
        empty = [s for s in SPLITS if not splits[s]]
        if empty:
            # TFDS cannot write an empty split; say so rather than fail deep inside TFDS.
            logging.warning(
                "gettext %s->%s: no pairs for split(s) %s (%d catalogs with pairs); omitted",
                config.src_lang,
                config.tgt_lang,
                empty,
                sum(len(stats[s]["catalogs"]) for s in SPLITS),
            )
        return {s: self._generate_examples(splits[s]) for s in SPLITS if splits[s]}

    def _generate_examples(
        self, pairs: list[tuple[str, str, str]]
    ) -> Iterator[tuple[int, dict[str, str]]]:
        src, tgt = self.builder_config.src_lang, self.builder_config.tgt_lang
        for i, (source, target, domain) in enumerate(pairs):
            yield i, {src: source, tgt: target, "domain": domain}


def gettext_builder(
    data_dir: str | os.PathLike,
    *,
    src_lang: str = "en",
    tgt_lang: str = "de",
    locale_dir: str | os.PathLike = "/usr/share/locale",
) -> GettextParallel:
    """Prepares (once per catalog content) and returns the gettext parallel-text builder.

    Data lives in `data_dir/zoo_gettext_parallel/<src>-<tgt>_<fingerprint>/1.0.0/`; the
    fingerprint covers locale_dir and the catalogs' bytes, so changed catalogs are re-read.
    Raises FileNotFoundError naming the directory (and the languages present) when a language
    has no catalogs.
    """
    locale_dir = os.path.abspath(os.fspath(locale_dir))
    if src_lang == tgt_lang:
        raise ValueError(f"src_lang and tgt_lang are both {src_lang!r}; pick two languages")
    for lang in sorted({src_lang, tgt_lang} - {"en"}):
        catalog_paths(locale_dir, lang)  # fail early with the helpful message
    place = hashlib.sha256(locale_dir.encode()).hexdigest()[:6]
    fingerprint = catalog_fingerprint(src_lang, tgt_lang, locale_dir)
    config = GettextConfig(
        name=f"{src_lang}-{tgt_lang}_{place}{fingerprint}".replace("@", "-at-"),
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        locale_dir=locale_dir,
    )
    builder = GettextParallel(
        data_dir=os.fspath(data_dir), config=config, file_format="array_record"
    )
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        logging.info("reading gettext catalogs %s -> %s from %s", src_lang, tgt_lang, locale_dir)
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return builder


def gettext_stats(builder: tfds.core.DatasetBuilder) -> dict[str, Any]:
    """The `stats` record build_pairs wrote when the builder was prepared."""
    return dict(builder.info.metadata["stats"])
