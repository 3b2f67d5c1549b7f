"""Tokenizers of decoder-only LMs for ZeTT: byte-level BPE and sentencepiece, seen as bytes.

ZeTT (Minixhofer et al. 2024, `tokenizer_converters.py`) converts every tokenizer to byte level
before decomposing: a token IS the byte string it stands for in text. This module does the same
for any `tokenizer.json` (read by the `tokenizers` library: GPT-2 / Llama-3 / Qwen2 byte-level
BPE, or Llama-2-style Metaspace / byte-fallback models) and any sentencepiece `.model`:

* `TokenVocab.from_file(path)`: vocab_size, `token_bytes[id]` (None for special tokens), the
  special roles bos/eos/pad/unk, `encode` / `decode` with the tokenizer's whole pipeline, and
  `model_tokenize` that runs only its model (BPE merges / Unigram Viterbi) on a surface string.
* `ByteDecomposer(source)`: a target token's bytes -> source ids, with the bytes rendered in the
  source's surface alphabet and only the source's model run on them; `surface_matrix(target)`
  is the hypernetwork's input (`zoo.zett.vocab.SurfaceForms`).

Ids are the tokenizer's own ids (no fairseq offset). Bytes a source cannot spell go to its
"<0xNN>" pieces, else to the 256 learned fallback rows at ids source.vocab_size + byte (the
convention of `zoo.zett.vocab.Decomposer`).

    src = TokenVocab.from_file("llama2/tokenizer.model")
    tgt = TokenVocab.from_file("gpt2/tokenizer.json")
    forms = ByteDecomposer(src).surface_matrix(tgt)  # ids [V_tgt, 7], lengths, special_source
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
import tokenizers
from sentencepiece import sentencepiece_pb2

from zoo.zett.vocab import (
    META,
    NUM_FALLBACK,
    SURFACE_LEN,
    SurfaceForms,
    identity_processor,
    walk_nodes,
)

ROLES = ("bos", "eos", "pad", "unk")
# Role names tried when there is no tokenizer_config.json (or it leaves a role out).
COMMON_NAMES = {
    "bos": ("<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", "[CLS]"),
    "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "[SEP]"),
    "pad": ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"),
    "unk": ("<unk>", "[UNK]"),
}
# The order in which a special token's roles find the source's special of the same role
# (eos first: GPT-2's <|endoftext|> is bos, eos and unk at once, and is used as eos).
MATCH_ORDER = ("eos", "bos", "pad", "unk")
BYTELEVEL, METASPACE = "bytelevel", "metaspace"  # the two surface alphabets
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table byte -> printable character (`encoder.py`): printable Latin-1 bytes map to
    themselves, the other 68 (controls, space, 0x7F-0xA0, 0xAD) to U+0100 onwards (" " -> "Ġ",
    "\\n" -> "Ċ")."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@functools.cache
def unicode_to_bytes() -> dict[str, int]:
    """The inverse of `bytes_to_unicode`."""
    return {c: b for b, c in bytes_to_unicode().items()}


def _alphabet(cfg: dict, file: Path) -> str:
    parts = [
        n for key in ("normalizer", "pre_tokenizer", "decoder") for n in walk_nodes(cfg.get(key))
    ]
    if any(n.get("type") == "ByteLevel" for n in parts):
        return BYTELEVEL
    if any(n.get("type") == "Metaspace" for n in parts) or any(
        n.get("type") == "Replace" and (n.get("pattern") or {}).get("String") in (" ", META)
        for n in parts
    ):
        return METASPACE
    raise ValueError(
        f"{file}: neither a byte-level (ByteLevel pre-tokenizer/decoder) nor a sentencepiece-"
        "style (Metaspace, or Replace(' ', '▁')) tokenizer.json, so its token strings cannot be "
        "read as bytes; pass a GPT-2/Llama-3-style tokenizer.json or a sentencepiece .model"
    )


def _config_roles(file: Path | None, lookup) -> dict[str, int | None]:
    """Roles named in tokenizer_config.json beside file: role -> id, or None where the config
    sets the role to null; roles the config does not mention are absent."""
    config = None if file is None else file.parent / "tokenizer_config.json"
    if config is None or not config.is_file():
        return {}
    cfg = json.loads(config.read_text(encoding="utf-8"))
    roles: dict[str, int | None] = {}
    for role in ROLES:
        key = f"{role}_token"
        if key not in cfg:
            continue
        value = cfg[key]
        content = value.get("content") if isinstance(value, dict) else value
        roles[role] = None if content is None else lookup(content)
    return roles


class TokenVocab:
    """One tokenizer seen at byte level. Build with `TokenVocab.from_file`.

    vocab_size: ids 0..vocab_size-1. token_bytes[id]: the bytes the token stands for in text
        (byte-level: GPT-2's table inverted; sentencepiece: "▁" -> b" ", "<0xNN>" -> that
        byte), None for special tokens (and unassigned ids). pieces[id]: the raw token string.
    roles: "bos"/"eos"/"pad"/"unk" -> id, only the roles the tokenizer has (from
        tokenizer_config.json beside the file when it names them, else the sentencepiece
        model's own ids, else COMMON_NAMES).
    alphabet: BYTELEVEL or METASPACE, the alphabet of the strings its model segments.
    byte_pieces: byte value -> id of its "<0xNN>" piece (sentencepiece byte_fallback).
    """

    def __init__(
        self,
        *,
        path: str,
        alphabet: str,
        pieces: Sequence[str | None],
        special: Sequence[bool],
        roles: dict[str, int],
        byte_pieces: dict[int, int],
        backend: Any,
        model_backend: Any,
        added_text: dict[int, str] | None = None,
    ) -> None:
        self.path = path
        self.alphabet = alphabet
        self.pieces = tuple(pieces)
        self.vocab_size = len(self.pieces)
        self.special_ids = frozenset(i for i, s in enumerate(special) if s)
        self.roles = dict(roles)
        self.byte_pieces = dict(byte_pieces)
        self._backend = backend
        self._model = model_backend
        self._added_text = dict(added_text or {})
        self.token_bytes: tuple[bytes | None, ...] = tuple(
            None if special[i] or p is None else self._piece_bytes(i, p)
            for i, p in enumerate(self.pieces)
        )

    def _piece_bytes(self, i: int, piece: str) -> bytes:
        if i in self._added_text:
            return self._added_text[i].encode("utf-8")
        if self.alphabet == BYTELEVEL:
            table = unicode_to_bytes()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
            return piece.encode("utf-8")  # (not GPT-2 table characters: taken as text)
        m = _BYTE_PIECE.fullmatch(piece)
        if m and i in self.byte_pieces.values():
            return bytes([int(m.group(1), 16)])
        return piece.replace(META, " ").encode("utf-8")

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str) -> TokenVocab:
        """A `tokenizer.json` (tokenizers library) or a sentencepiece `.model`."""
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(
                f"tokenizer {file} does not exist; pass a tokenizer.json or a sentencepiece .model"
            )
        data = file.read_bytes()
        if data.lstrip()[:1] == b"{":
            return cls._from_tokenizer_json(file)
        try:
            sp = spm.SentencePieceProcessor(model_proto=data)
        except Exception as e:
            raise ValueError(
                f"{file} is neither a tokenizer.json nor a sentencepiece model ({e})"
            ) from None
        return cls._from_sentencepiece(file, sp)

    @classmethod
    def _from_tokenizer_json(cls, file: Path) -> TokenVocab:
        try:
            tok = tokenizers.Tokenizer.from_file(str(file))
        except Exception as e:
            raise ValueError(f"{file}: the tokenizers library cannot load it ({e})") from None
        cfg = json.loads(tok.to_str())
        alphabet = _alphabet(cfg, file)
        size = tok.get_vocab_size(with_added_tokens=True)
        pieces = [tok.id_to_token(i) for i in range(size)]
        added = tok.get_added_tokens_decoder()
        special = [p is None for p in pieces]
        added_text = {}
        for i, token in added.items():
            if i < size:
                special[i] = special[i] or token.special
                if not token.special:
                    added_text[i] = token.content
        model = cfg.get("model") or {}
        unk = model.get("unk_token")
        if model.get("type") == "Unigram" and model.get("unk_id") is not None:
            unk = pieces[model["unk_id"]]
        byte_pieces = {}
        if alphabet == METASPACE and model.get("byte_fallback"):
            for b in range(256):
                i = tok.token_to_id(f"<0x{b:02X}>")
                if i is not None and i not in added:
                    byte_pieces[b] = i
        roles = _find_roles(file, tok.token_to_id, pieces, special, {"unk": unk})
        for i in roles.values():
            special[i] = True
        return cls(
            path=str(file),
            alphabet=alphabet,
            pieces=pieces,
            special=special,
            roles=roles,
            byte_pieces=byte_pieces,
            backend=tok,
            model_backend=tok.model,
            added_text=added_text,
        )

    @classmethod
    def from_model_proto(cls, serialized: bytes) -> TokenVocab:
        """A serialized sentencepiece model held in memory (e.g. one sampled by ZeTT's
        sampler); roles come from the model itself, no file is read."""
        return cls._from_sentencepiece(None, spm.SentencePieceProcessor(model_proto=serialized))

    @classmethod
    def _from_sentencepiece(cls, file: Path | None, sp: spm.SentencePieceProcessor) -> TokenVocab:
        size = sp.get_piece_size()
        pieces = [sp.id_to_piece(i) for i in range(size)]
        special = [bool(sp.is_control(i) or sp.is_unknown(i)) for i in range(size)]
        byte_pieces = {int(pieces[i][3:5], 16): i for i in range(size) if sp.is_byte(i)}
        own = {"bos": sp.bos_id(), "eos": sp.eos_id(), "pad": sp.pad_id(), "unk": sp.unk_id()}
        own_names = {r: pieces[i] for r, i in own.items() if 0 <= i < size}

        def lookup(content: str) -> int | None:
            i = sp.piece_to_id(content)
            return i if pieces[i] == content else None

        roles = _find_roles(file, lookup, pieces, special, own_names)
        for i in roles.values():
            special[i] = True
        return cls(
            path="<in memory>" if file is None else str(file),
            alphabet=METASPACE,
            pieces=pieces,
            special=special,
            roles=roles,
            byte_pieces=byte_pieces,
            backend=sp,
            model_backend=identity_processor(sp.serialized_model_proto()),
        )

    # --- the tokenizer's pipeline -----------------------------------------------------------

    @property
    def is_sentencepiece(self) -> bool:
        return isinstance(self._backend, spm.SentencePieceProcessor)

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """ids of text through the whole tokenizer (normalizer, pre-tokenizer, model; and the
        post-processor's specials, e.g. BOS, with add_special_tokens; for a sentencepiece
        .model that is BOS when it has one)."""
        if self.is_sentencepiece:
            ids = self._backend.encode(text)
            bos = self.roles.get("bos")
            return [bos, *ids] if add_special_tokens and bos is not None else ids
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """text of ids through the tokenizer's own decoder."""
        ids = [int(i) for i in ids]
        if self.is_sentencepiece:
            if skip_special_tokens:
                ids = [i for i in ids if i not in self.special_ids]
            return self._backend.decode(ids)
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def model_tokenize(self, surface: str) -> list[int]:
        """ids from the tokenizer's MODEL alone on a surface string of its alphabet (no
        normalizer, pre-tokenizer or dummy prefix): "ĠHaus" for byte-level, "▁Haus" for
        sentencepiece. Unknown spans give the unk id (or are dropped, as the model does)."""
        return [i for i, _ in self.model_spans(surface)]

    def model_spans(self, surface: str) -> list[tuple[int, bytes]]:
        """(id, the UTF-8 bytes of surface it covers) for each token of `model_tokenize`; the
        spans concatenate to the surface's UTF-8 unless the model dropped characters."""
        if not surface:
            return []
        if self.is_sentencepiece:
            text = sentencepiece_pb2.SentencePieceText()
            text.ParseFromString(self._model.encode(surface, out_type="serialized_proto"))
            return [(p.id, p.surface.encode("utf-8")) for p in text.pieces]
        raw = surface.encode("utf-8")
        out, last = [], None
        for t in self._model.tokenize(surface):
            # (Tokens sharing offsets, e.g. byte-fallback ones of one character: first covers.)
            out.append((t.id, b"" if t.offsets == last else raw[slice(*t.offsets)]))
            last = t.offsets
        return out

    def __repr__(self) -> str:
        return (
            f"TokenVocab({self.path!r}, {self.alphabet}, vocab_size={self.vocab_size}, "
            f"roles={self.roles})"
        )


def _find_roles(
    file: Path | None,
    lookup,
    pieces: Sequence[str | None],
    special: Sequence[bool],
    defaults: dict[str, str | None],
) -> dict[str, int]:
    """role -> id: tokenizer_config.json beside file, then the model's own (defaults: role ->
    piece string), then COMMON_NAMES among the special tokens (unk also among all pieces)."""
    index = {p: i for i, p in enumerate(pieces) if p is not None}
    roles: dict[str, int] = {}
    configured = _config_roles(file, lookup)
    for role in ROLES:
        if role in configured:
            if configured[role] is not None:
                roles[role] = configured[role]
            continue
        name = defaults.get(role)
        if name is not None and name in index:
            roles[role] = index[name]
            continue
        for name in COMMON_NAMES[role]:
            i = index.get(name)
            if i is not None and (special[i] or role == "unk"):
                roles[role] = i
                break
    return roles


# --- decomposition --------------------------------------------------------------------------


class ByteDecomposer:
    """Target tokens -> SOURCE ids, through the target token's bytes and the source's model.

    The bytes are rendered in the source's alphabet: byte-level sources spell every byte with
    GPT-2's table; sentencepiece sources get the UTF-8 text with " " -> "▁", and bytes that are
    not part of a complete UTF-8 character (a partial-character target token) go to the
    source's "<0xNN>" pieces, else to fallback rows source.vocab_size + byte. Then only the
    source's model runs on that surface (ZeTT: `hn_tokenizer._tokenizer.model.tokenize`);
    spans it cannot spell become their bytes the same way (unk spans; when a BPE without unk
    drops characters, the surface is retried character by character). A surface that is
    exactly one non-special source token decomposes to that token (BPE merges cannot always
    rebuild a token from its own string; exact matches are what FVT and the lexical baseline
    copy), so a tokenizer decomposed onto itself gives one piece per token.

    pad_id: the source's pad, else its eos (ZeTT's convention for Mistral / TinyLlama), else 0;
    pass it as HypernetConfig.pad_id. Decompositions are cached per byte string, so the
    tokenizer sampled at each training step mostly hits the cache.
    """

    def __init__(self, source: TokenVocab, max_len: int = SURFACE_LEN) -> None:
        if max_len < 1:
            raise ValueError(f"max_len={max_len} must be >= 1")
        self.source = source
        self.max_len = max_len
        self.pad_id = source.roles.get("pad", source.roles.get("eos", 0))
        self._cache: dict[bytes, tuple[int, ...]] = {}
        exact: dict[bytes, int] = {}
        byte_piece_ids = set(source.byte_pieces.values())
        # Byte pieces first, so that a normal piece spelling the same bytes ("A") wins.
        order = sorted(range(source.vocab_size), key=lambda i: (i not in byte_piece_ids, -i))
        for i in order:
            b = source.token_bytes[i]
            if b:
                exact[b] = i
        self._exact = exact
        if source.alphabet == BYTELEVEL:
            table = bytes_to_unicode()
            ids = [exact.get(bytes([b])) for b in range(NUM_FALLBACK)]
            self._byte_ids = [
                i if i is not None and source.pieces[i] == table[b] else source.vocab_size + b
                for b, i in enumerate(ids)
            ]
        else:
            self._byte_ids = [
                source.byte_pieces.get(b, source.vocab_size + b) for b in range(NUM_FALLBACK)
            ]

    def byte_id(self, byte: int) -> int:
        """Source id of one byte value: its single-byte token ("Ġ", "<0x20>"), else the
        fallback row source.vocab_size + byte."""
        return self._byte_ids[byte]

    def render(self, data: bytes) -> list[str | int]:
        """data in the source's alphabet: surface strings, and byte values (ints) for bytes a
        sentencepiece source can only spell as bytes (not a complete UTF-8 character)."""
        if self.source.alphabet == BYTELEVEL:
            table = bytes_to_unicode()
            return ["".join(table[b] for b in data)]
        out: list[str | int] = []
        text = data.decode("utf-8", "surrogateescape")  # bad bytes -> U+DC80..U+DCFF
        for run in re.split(r"([\udc80-\udcff])", text):
            if len(run) == 1 and 0xDC80 <= ord(run) <= 0xDCFF:
                out.append(ord(run) - 0xDC00)
            elif run:
                out.append(run.replace(" ", META))
        return out

    def _surface_bytes(self, piece: str) -> bytes:
        """The text bytes a piece of source surface stands for."""
        if self.source.alphabet == BYTELEVEL:
            table = unicode_to_bytes()
            if all(c in table for c in piece):
                return bytes(table[c] for c in piece)
            return piece.encode("utf-8")
        return piece.replace(META, " ").encode("utf-8")

    def _tokenize(self, surface: str) -> list[int]:
        src = self.source
        spans = src.model_spans(surface)
        if b"".join(s for _, s in spans) != surface.encode("utf-8"):  # characters dropped
            if len(surface) == 1:
                return [self._byte_ids[b] for b in self._surface_bytes(surface)]
            return [i for c in surface for i in self._tokenize(c)]
        out: list[int] = []
        for i, span in spans:
            if i in src.special_ids:  # unk (or a special the model matched): its bytes
                text = self._surface_bytes(span.decode("utf-8", "surrogateescape"))
                out.extend(self._byte_ids[b] for b in text)
            else:
                out.append(i)
        return out

    def decompose_bytes(self, data: bytes) -> list[int]:
        """Source ids spelling `data` (not truncated, >= 1 entry for non-empty data)."""
        hit = self._cache.get(data)
        if hit is None:
            if not data:
                raise ValueError("cannot decompose an empty byte string")
            exact = self._exact.get(data)
            if exact is not None:
                hit = (exact,)
            else:
                ids: list[int] = []
                for part in self.render(data):
                    if isinstance(part, int):
                        ids.append(self._byte_ids[part])
                    else:
                        ids.extend(self._tokenize(part))
                hit = tuple(ids)
            self._cache[data] = hit
        return list(hit)

    def special_source(self, target: TokenVocab) -> np.ndarray:
        """[V_target] int32: for each special target token the source special of the same role
        (tried in MATCH_ORDER; a pad role falls back to the source's pad_id), else the source
        special of the same string; -1 for every other row (also for target specials with
        no counterpart: they decompose as their text)."""
        src = self.source
        by_role: dict[int, list[str]] = {}
        for role, i in target.roles.items():
            by_role.setdefault(i, []).append(role)
        src_special = {src.pieces[i]: i for i in sorted(src.special_ids)}
        out = np.full((target.vocab_size,), -1, np.int32)
        for t in sorted(target.special_ids):
            roles = by_role.get(t, [])
            match = next((src.roles[r] for r in MATCH_ORDER if r in roles and r in src.roles), None)
            if match is None and "pad" in roles:
                match = self.pad_id
            if match is None:
                match = src_special.get(target.pieces[t])
            if match is None and target.pieces[t] is None:  # an unassigned id
                match = self.pad_id
            if match is not None:
                out[t] = match
        return out

    def _row_bytes(self, target: TokenVocab, t: int) -> bytes:
        data = target.token_bytes[t]
        return data if data is not None else (target.pieces[t] or "").encode("utf-8")

    def decompositions(self, target: TokenVocab) -> list[list[int]]:
        """Untruncated source ids of every target id; special rows [their source special]
        (the input of `zoo.zett.hypernet.fvt_embeddings`)."""
        special = self.special_source(target)
        return [
            [int(special[t])]
            if special[t] >= 0
            else self.decompose_bytes(self._row_bytes(target, t))
            for t in range(target.vocab_size)
        ]

    def surface_matrix(self, target: TokenVocab) -> SurfaceForms:
        """Decompositions of every target id as `zoo.zett.vocab.SurfaceForms`: ids
        [V_target, max_len] int32 right-padded with pad_id, lengths [V_target] (>= 1, after
        truncation), special_source [V_target] (see `special_source`); special rows are
        [source special, pad, ...]."""
        V, L = target.vocab_size, self.max_len
        ids = np.full((V, L), self.pad_id, np.int32)
        lengths = np.ones((V,), np.int32)
        special = self.special_source(target)
        for t in range(V):
            if special[t] >= 0:
                ids[t, 0] = special[t]
                continue
            seq = self.decompose_bytes(self._row_bytes(target, t))[:L]
            ids[t, : len(seq)] = seq
            lengths[t] = len(seq)
        return SurfaceForms(ids=ids, lengths=lengths, special_source=special)
