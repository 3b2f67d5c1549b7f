"""Vocabularies for zero-shot tokenizer transfer (ZeTT, Minixhofer et al. 2024).

ZeTT's hypernetwork predicts the embedding of every token of a new tokenizer from the token's
decomposition into the base model's original tokens. This module holds the tokenizer side:

* `Decomposer`: a target piece string -> source fairseq ids, by running only the *model* of the
  source sentencepiece tokenizer (Unigram Viterbi or BPE merges) on exactly the piece's
  characters; bytes the source cannot represent go to byte pieces or to a 256-row table of
  learned fallback embeddings (ids source.vocab_size + byte). `surface_matrix` gives the
  hypernetwork's input [V_target, 7] for a whole tokenizer.
* `SubstringCounts` / `sample_unigram_model`: ZeTT's per-step tokenizer sampler (§2 of the
  brief): a UnigramLM whose log-probabilities are noisy substring frequencies, no EM.
* `load_target_model_proto`: a sentencepiece `.model` or a transformers `tokenizer.json`
  as a serialized sentencepiece model in mBART's control layout.

Every tokenizer here is an `MBartTokenizer` (fairseq ids: 0 <s>, 1 <pad>, 2 </s>, 3 <unk>,
spm pieces at spm id + 1, language codes, <mask>). No jax, no network, no `tokenizers`.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2
from sentencepiece import sentencepiece_pb2

from zoo.mbart.tokenizer import FAIRSEQ_OFFSET, PAD_ID, MBartTokenizer

SURFACE_LEN = 7  # ZeTT's hn_surface_maxlen for every released hypernetwork
NUM_FALLBACK = 256  # one learned fallback row per byte value

META = "\u2581"  # "▁", sentencepiece's whitespace marker
CONTROL_PIECES = ("<unk>", "<s>", "</s>")  # spm ids 0, 1, 2 in mBART's layout
MIN_PROB = 1e-12  # floor of the noisy probabilities before the log (noise can make them <= 0)

_Piece = model_pb2.ModelProto.SentencePiece
_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")
_ACCEPTED = (
    "a sentencepiece .model file, or a transformers tokenizer.json with a Unigram or BPE "
    "model and a Metaspace (sentencepiece-style) pre-tokenizer"
)


def _parse(serialized: bytes) -> model_pb2.ModelProto:
    proto = model_pb2.ModelProto()
    proto.ParseFromString(serialized)
    return proto


def model_only_processor(tok: MBartTokenizer) -> spm.SentencePieceProcessor:
    """A copy of tok's sentencepiece model with normalization switched off.

    Encoding a piece string such as "▁Haus" with it runs only the model (Unigram Viterbi / BPE
    merges) on exactly those characters: no NFKC, no dummy prefix, no whitespace handling, "▁"
    kept verbatim ("▁Haus" -> pieces concatenating to "▁Haus"; "haus" -> no leading "▁").
    """
    return identity_processor(tok.processor.serialized_model_proto())


def identity_processor(serialized_model: bytes) -> spm.SentencePieceProcessor:
    """`model_only_processor` for any serialized sentencepiece model (any id layout)."""
    proto = _parse(serialized_model)
    spec = proto.normalizer_spec
    spec.name = "identity"
    spec.precompiled_charsmap = b""
    spec.add_dummy_prefix = False
    spec.remove_extra_whitespaces = False
    spec.escape_whitespaces = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


# --- decomposition ------------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceForms:
    """Decompositions of a target vocabulary into source ids (the hypernetwork's input).

    ids: [V_target, max_len] int32 source fairseq ids, right-padded with PAD_ID (1) and
        truncated to max_len; ids >= source.vocab_size index the NUM_FALLBACK byte rows.
    lengths: [V_target] int32 real entries per row after truncation (>= 1).
    special_source: [V_target] int32 source id of the same special token (<s>, <pad>, </s>,
        <unk>, language codes, <mask>) for special target rows, else -1.
    """

    ids: np.ndarray
    lengths: np.ndarray
    special_source: np.ndarray


class Decomposer:
    """Splits target pieces into SOURCE fairseq ids with the source tokenizer's model only.

    source: the base model's tokenizer. max_len: surface length (ZeTT: 7). Results of
    `decompose` are cached per piece string, so decomposing one sampled tokenizer per training
    step mostly hits the cache.
    """

    def __init__(self, source: MBartTokenizer, max_len: int = SURFACE_LEN) -> None:
        if max_len < 1:
            raise ValueError(f"max_len={max_len} must be >= 1")
        self.source = source
        self.max_len = max_len
        self._sp = model_only_processor(source)
        self._cache: dict[str, tuple[int, ...]] = {}
        # Source ids of the 256 byte values: its own "<0xNN>" byte pieces where it has them
        # (byte_fallback models), else the learned fallback rows.
        sp = source.processor
        self._byte_ids = []
        for b in range(NUM_FALLBACK):
            i = sp.piece_to_id(f"<0x{b:02X}>")
            ok = sp.is_byte(i) if 0 < i < sp.get_piece_size() else False
            self._byte_ids.append(i + FAIRSEQ_OFFSET if ok else source.vocab_size + b)

    def byte_id(self, byte: int) -> int:
        """Source id of one byte value: its "<0xNN>" piece, else source.vocab_size + byte."""
        return self._byte_ids[byte]

    def _from_spm(self, piece: str, spm_ids: list[int]) -> tuple[int, ...]:
        if 0 not in spm_ids:
            return tuple(i + FAIRSEQ_OFFSET for i in spm_ids)
        # Unknown spans: their UTF-8 bytes (surfaces come from the proto output).
        text = sentencepiece_pb2.SentencePieceText()
        text.ParseFromString(self._sp.encode(piece, out_type="serialized_proto"))
        out: list[int] = []
        for p in text.pieces:
            if p.id == 0:
                out.extend(self._byte_ids[b] for b in p.surface.encode("utf-8"))
            else:
                out.append(p.id + FAIRSEQ_OFFSET)
        return tuple(out)

    def decompose(self, piece: str) -> list[int]:
        """Source fairseq ids of one target piece string (not truncated, >= 1 entry).

        A string of the form "<0xNN>" is taken as a byte piece (spm byte_fallback) and maps to
        `byte_id(0xNN)`.
        """
        hit = self._cache.get(piece)
        if hit is None:
            m = _BYTE_PIECE.fullmatch(piece)
            if m:
                hit = (self._byte_ids[int(m.group(1), 16)],)
            elif not piece:
                raise ValueError("cannot decompose an empty piece string")
            else:
                hit = self._from_spm(piece, self._sp.encode(piece))
            self._cache[piece] = hit
        return list(hit)

    def _fill_cache(self, pieces: list[str]) -> None:
        todo = [p for p in dict.fromkeys(pieces) if p not in self._cache]
        todo = [p for p in todo if p and not _BYTE_PIECE.fullmatch(p)]
        for piece, spm_ids in zip(todo, self._sp.encode(todo) if todo else []):
            self._cache[piece] = self._from_spm(piece, spm_ids)

    def surface_matrix(self, target: MBartTokenizer) -> SurfaceForms:
        """Decompositions of every id of `target` (see SurfaceForms), V_target = target.vocab_size.

        Pieces decompose by their strings (byte pieces by their byte); special tokens map to
        the source's special of the same name as rows [source_id, 1, 1, ...]. Raises
        ValueError if the source lacks one of the target's language codes.
        """
        sp = target.processor
        num_pieces = target.num_pieces
        pieces = [sp.id_to_piece(i) for i in range(3, num_pieces)]  # fairseq ids 4..num_pieces
        is_byte = [sp.is_byte(i) for i in range(3, num_pieces)]
        self._fill_cache([p for p, b in zip(pieces, is_byte) if not b])

        V, L = target.vocab_size, self.max_len
        ids = np.full((V, L), PAD_ID, np.int32)
        lengths = np.ones((V,), np.int32)
        special = np.full((V,), -1, np.int32)

        src = self.source
        special_pairs = [(target.bos_id, src.bos_id), (target.pad_id, src.pad_id)]
        special_pairs += [(target.eos_id, src.eos_id), (target.unk_id, src.unk_id)]
        missing = [code for code in target.languages if code not in src.languages]
        if missing:
            raise ValueError(
                f"the target tokenizer's language codes {missing} are not among the source "
                f"tokenizer's codes ({', '.join(src.languages)}); build the target "
                "MBartTokenizer with languages= a subset of the source's"
            )
        special_pairs += [(target.lang_id(c), src.lang_id(c)) for c in target.languages]
        special_pairs.append((target.mask_id, src.mask_id))
        for t_id, s_id in special_pairs:
            ids[t_id, 0] = special[t_id] = s_id

        for row, (piece, byte) in enumerate(zip(pieces, is_byte), start=3 + FAIRSEQ_OFFSET):
            seq = ((self._byte_ids[int(piece[3:5], 16)],) if byte else self._cache[piece])[:L]
            ids[row, : len(seq)] = seq
            lengths[row] = len(seq)
        return SurfaceForms(ids=ids, lengths=lengths, special_source=special)

    def source_surface(self) -> SurfaceForms:
        """surface_matrix of the source's own vocabulary (most rows have length 1)."""
        return self.surface_matrix(self.source)


# --- tokenizer sampling (ZeTT §2) -----------------------------------------------------------


def pretokens(text: str) -> list[str]:
    """Whitespace-split words of text, each prefixed with "▁" (sentencepiece's convention)."""
    return [META + w for w in text.split()]


class SubstringCounts:
    """Counts of every substring (lengths 1..max_substring_len, every start) of pretokens.

    normalize: optional str -> str applied to each text first, e.g. the template tokenizer's
        `processor.normalize` so that counts see the text exactly as the tokenizer segments it
        (NFKC etc.; its "▁" are read as spaces). Without it, characters that the normalizer
        rewrites (e.g. "ﬁ" -> "fi") are counted as written.
    `counts` accumulates over all `add` calls; `remove` takes a batch back out (for ZeTT's
    window of the last 16 batches).
    """

    def __init__(
        self, max_substring_len: int = 15, *, normalize: Callable[[str], str] | None = None
    ) -> None:
        if max_substring_len < 1:
            raise ValueError(f"max_substring_len={max_substring_len} must be >= 1")
        self.max_substring_len = max_substring_len
        self.normalize = normalize
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, texts: Iterable[str]) -> collections.Counter[str]:
        """Substring counts of these texts (also added to self.counts)."""
        words: collections.Counter[str] = collections.Counter()
        for text in texts:
            if self.normalize is not None:
                text = self.normalize(text).replace(META, " ")
            words.update(pretokens(text))
        k = self.max_substring_len
        batch: collections.Counter[str] = collections.Counter()
        for word, n in words.items():
            size = len(word)
            subs = [word[i:j] for i in range(size) for j in range(i + 1, min(i + k, size) + 1)]
            if n == 1:
                batch.update(subs)  # C loop
            else:
                for s in subs:
                    batch[s] += n
        self.counts.update(batch)
        return batch

    def remove(self, batch: collections.Counter[str]) -> None:
        """Subtracts a batch returned by `add`; drops substrings whose count reaches 0."""
        self.counts.subtract(batch)
        self.counts = +self.counts


def sample_unigram_model(
    counts: collections.Counter[str],
    num_pieces: int,
    rng: np.random.Generator,
    *,
    noise_std: float | None = None,
    template: MBartTokenizer,
) -> bytes:
    """A random UnigramLM tokenizer from substring counts (ZeTT's sampler); serialized spm model.

    p(s) = count(s) * len(s) / sum over substrings; noisy p = p + N(0, sigma) with
    sigma = noise_std, or sigma ~ LogNormal(ln 1e-5, 4) drawn from rng per call when noise_std
    is None (no noise at all for 0). The pieces kept are every character that occurs in the
    counted substrings plus "▁" (so no counted text yields <unk>) and then the highest noisy p,
    ties broken by the substring, up to exactly num_pieces spm pieces including the 3 controls
    <unk>, <s>, </s> (spm ids 0, 1, 2); fewer only when there are not enough distinct
    substrings. Scores are log-probabilities over the kept pieces:
    log(q / sum q) with q = max(noisy p, MIN_PROB) (the floor keeps noise-negative pieces
    usable but last). Substrings with whitespace or equal to a control piece are skipped.

    template: the source tokenizer; its normalizer (e.g. nmt_nfkc, dummy prefix, whitespace
    escaping) is kept, so text is normalized exactly as for the source. Deterministic for a
    given rng state. Load the result with `MBartTokenizer(None, model_proto=...)`.
    """
    budget = num_pieces - len(CONTROL_PIECES)
    if budget < 1:
        raise ValueError(f"num_pieces={num_pieces} leaves no room next to the 3 control pieces")
    chars = set("".join(s for s, n in counts.items() if n > 0))
    required = {c for c in chars if not c.isspace()} | {META}
    if len(required) > budget:
        raise ValueError(
            f"the counted texts have {len(required)} distinct characters (with '▁'), more than "
            f"num_pieces={num_pieces} - 3 controls; raise num_pieces so every character fits"
        )
    # Candidates: substrings with a positive count, and every required character.
    extra = sorted(required.difference(counts))
    keys = [*counts, *extra]
    count = np.fromiter(
        itertools.chain(counts.values(), itertools.repeat(0, len(extra))), np.float64, len(keys)
    )
    length = np.fromiter(map(len, keys), np.int64, len(keys))
    ok = count > 0
    for i in np.flatnonzero(length == 1).tolist():
        ok[i] = ok[i] or keys[i] in required
    for control in CONTROL_PIECES:
        if control in counts:
            ok[keys.index(control)] = False
    spaces = chars - required
    if spaces:
        ok &= np.fromiter((not any(c in spaces for c in s) for s in keys), bool, len(keys))
    # Canonical (string) order, so neither noise nor tie-breaks depend on the Counter's order.
    cand = np.asarray(sorted(np.flatnonzero(ok).tolist(), key=keys.__getitem__), np.int64)
    count, length = np.maximum(count[cand], 0.0), length[cand]
    score = count * length
    p = score / score.sum()
    sigma = math.exp(rng.normal(math.log(1e-5), 4.0)) if noise_std is None else noise_std
    if sigma < 0:
        raise ValueError(f"noise_std={noise_std} must be >= 0 (or None for ZeTT's random sigma)")
    noisy = p + rng.normal(0.0, sigma, len(cand)) if sigma > 0 else p

    is_required = length == 1  # exactly the required characters remain with length 1
    others = np.flatnonzero(~is_required)
    order = others[np.lexsort((others, -noisy[others]))]  # noisy p desc, then string
    keep = np.concatenate([np.flatnonzero(is_required), order[: budget - len(required)]])
    q = np.maximum(noisy[keep], MIN_PROB)
    logp = np.log(q) - np.log(q.sum())
    spm_order = np.lexsort((keep, -logp))  # score desc, then string
    keep, logp = keep[spm_order], logp[spm_order]

    proto = _parse(template.processor.serialized_model_proto())
    del proto.pieces[:]
    _add_controls(proto)
    for i, lp in zip(keep.tolist(), logp.tolist()):
        proto.pieces.add(piece=keys[cand[i]], score=lp, type=_Piece.NORMAL)
    _set_trainer(proto, model_pb2.TrainerSpec.UNIGRAM, byte_fallback=False)
    return proto.SerializeToString()


def _add_controls(proto: model_pb2.ModelProto) -> None:
    proto.pieces.add(piece="<unk>", score=0.0, type=_Piece.UNKNOWN)
    proto.pieces.add(piece="<s>", score=0.0, type=_Piece.CONTROL)
    proto.pieces.add(piece="</s>", score=0.0, type=_Piece.CONTROL)


def _set_trainer(proto: model_pb2.ModelProto, model_type: int, *, byte_fallback: bool) -> None:
    t = proto.trainer_spec
    t.model_type = model_type
    t.vocab_size = len(proto.pieces)
    t.byte_fallback = byte_fallback
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = 0, 1, 2, -1
    t.unk_piece, t.bos_piece, t.eos_piece = CONTROL_PIECES
    del t.control_symbols[:]
    del t.user_defined_symbols[:]


# --- target tokenizers from files -------------------------------------------------------------


def load_target_model_proto(path: str) -> bytes:
    """A target tokenizer file as a serialized sentencepiece model in mBART's layout.

    path: a sentencepiece `.model` or a transformers `tokenizer.json` (parsed here; the
    `tokenizers` library is not needed). Result: spm ids 0, 1, 2 are <unk>, <s>, </s>, then
    every other non-control piece in the file's order (other control pieces such as <pad>, and
    tokenizer.json special tokens, are dropped: they map onto mBART's own specials). A .model
    already in that layout comes back byte for byte; a rebuilt one keeps the scores, so text
    segments into the same pieces.

    tokenizer.json support (else ValueError): model Unigram, or BPE (approximate, see below);
    pre-tokenizer Metaspace("▁") optionally after WhitespaceSplit, or the Llama-style
    normalizers Prepend("▁") + Replace(" ", "▁"); normalizers Precompiled (its charsmap is
    sentencepiece's own format), NFKC (spm's builtin nfkc table), Strip / Replace(" {2,}", " ")
    (as spm's remove_extra_whitespaces). Byte-level (GPT-2 style) tokenizers are rejected
    (decoder-only LM tokenizers: zoo.zett.bytelevel).
    Known differences from the tokenizers library: text that starts with whitespace gets one
    more "▁" from spm's dummy prefix than from Metaspace (unless whitespace is stripped);
    non-special added tokens become USER_DEFINED pieces, matched after normalization.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"target tokenizer {file} does not exist; pass {_ACCEPTED}")
    data = file.read_bytes()
    if data.lstrip()[:1] == b"{":
        try:
            cfg = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{file} looks like JSON but does not parse ({e})") from None
        proto = _proto_from_tokenizer_json(cfg, file)
        return _check_loads(proto.SerializeToString(), file)
    try:
        proto = _parse(data)
        spm.SentencePieceProcessor(model_proto=data)
    except Exception as e:
        raise ValueError(
            f"{file} is neither a sentencepiece model nor JSON ({e}); pass {_ACCEPTED}"
        ) from None
    types = [p.type for p in proto.pieces]
    special = (_Piece.UNKNOWN, _Piece.CONTROL)
    if types[:3] == [_Piece.UNKNOWN, _Piece.CONTROL, _Piece.CONTROL] and not any(
        t in special for t in types[3:]
    ):
        return data
    kept = [p for p in proto.pieces if p.type not in special]
    del proto.pieces[:]
    _add_controls(proto)
    _extend(proto, kept, file)
    _set_trainer(
        proto, proto.trainer_spec.model_type, byte_fallback=proto.trainer_spec.byte_fallback
    )
    return _check_loads(proto.SerializeToString(), file)


def _extend(proto: model_pb2.ModelProto, pieces: Iterable[Any], file: Path) -> None:
    for p in pieces:
        if p.piece in CONTROL_PIECES:
            raise ValueError(
                f"{file}: the non-control piece {p.piece!r} clashes with mBART's control piece "
                "of that name; rename it in the tokenizer"
            )
        proto.pieces.add(piece=p.piece, score=p.score, type=p.type)


def _check_loads(serialized: bytes, file: Path) -> bytes:
    try:
        sp = spm.SentencePieceProcessor(model_proto=serialized)
    except Exception as e:
        raise ValueError(f"{file}: the converted sentencepiece model does not load ({e})") from None
    if (sp.unk_id(), sp.bos_id(), sp.eos_id()) != (0, 1, 2):  # a bug here, not in the file
        raise RuntimeError(f"{file}: conversion gave (unk, bos, eos) ids != (0, 1, 2)")
    return serialized


def walk_nodes(node: Any) -> list[dict]:
    """A normalizer/pre-tokenizer/decoder node and, for a Sequence, its members, flattened."""
    if not node:
        return []
    members = node.get("normalizers") or node.get("pretokenizers") or node.get("decoders")
    if node.get("type") == "Sequence" and members is not None:
        return [leaf for m in members for leaf in walk_nodes(m)]
    return [node]


def _normalizer_spec(cfg: dict, file: Path) -> model_pb2.NormalizerSpec:
    """normalizer + pre_tokenizer of a tokenizer.json as a sentencepiece NormalizerSpec."""
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        if any(n.get("type") == "ByteLevel" for n in walk_nodes(cfg.get(part))):
            raise ValueError(
                f"{file}: byte-level BPE tokenizers (GPT-2 style, ByteLevel {part}) are not "
                "supported for mBART; pass a sentencepiece .model (or a Metaspace "
                "tokenizer.json) instead. Decoder-only LM tokenizers (GPT-2 / Llama-3 / Qwen2) "
                "load with zoo.zett.bytelevel.TokenVocab.from_file and decompose with "
                "zoo.zett.bytelevel.ByteDecomposer"
            )
    spec = model_pb2.NormalizerSpec(name="identity")
    spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = False
    charsmaps = []
    for node in walk_nodes(cfg.get("normalizer")):
        kind = node.get("type")
        pattern = node.get("pattern") or {}
        if kind == "Precompiled":
            charsmaps.append(
                ("user_defined", base64.b64decode(node.get("precompiled_charsmap") or ""))
            )
        elif kind == "NFKC":
            builtin = spm.SentencePieceNormalizer(rule_name="nfkc").serialized_normalizer_spec()
            charsmaps.append(
                ("nfkc", model_pb2.NormalizerSpec.FromString(builtin).precompiled_charsmap)
            )
        elif kind == "Prepend" and node.get("prepend") == META:  # Llama-style
            spec.add_dummy_prefix = True
        elif kind == "Replace" and pattern.get("String") == " " and node.get("content") == META:
            spec.escape_whitespaces = True
        elif kind == "Replace" and pattern.get("Regex") == " {2,}" and node.get("content") == " ":
            spec.remove_extra_whitespaces = True  # (spm also strips the ends)
        elif kind == "Strip":
            spec.remove_extra_whitespaces = True  # (spm also collapses inner runs)
        else:
            raise ValueError(
                f"{file}: normalizer {kind!r} ({json.dumps(node)[:120]}) has no sentencepiece "
                "equivalent here (supported: Precompiled, NFKC, Strip, Prepend('▁'), "
                "Replace(' ', '▁'), Replace(' {2,}', ' ')); pass a sentencepiece .model"
            )
    if len(charsmaps) > 1:
        raise ValueError(f"{file}: more than one of Precompiled/NFKC normalizers cannot be merged")
    if charsmaps and charsmaps[0][1]:
        spec.name, spec.precompiled_charsmap = charsmaps[0]

    meta = None
    for node in walk_nodes(cfg.get("pre_tokenizer")):
        kind = node.get("type")
        if kind == "WhitespaceSplit":
            spec.remove_extra_whitespaces = True
        elif kind == "Metaspace":
            meta = node
        else:
            raise ValueError(
                f"{file}: pre-tokenizer {kind!r} has no sentencepiece equivalent (supported: "
                "Metaspace, WhitespaceSplit); pass a sentencepiece .model"
            )
    if meta is not None:
        if meta.get("replacement", META) != META:
            raise ValueError(f"{file}: Metaspace replacement {meta['replacement']!r} is not '▁'")
        scheme = meta.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if meta.get("add_prefix_space", True) else "never"
        spec.add_dummy_prefix = scheme in ("always", "first")
        spec.escape_whitespaces = True
    elif not spec.escape_whitespaces:
        raise ValueError(
            f"{file}: no Metaspace pre-tokenizer (nor Replace(' ', '▁') normalizer), so its words "
            "are not marked with '▁' as sentencepiece's are; pass a sentencepiece .model"
        )
    return spec


def _proto_from_tokenizer_json(cfg: dict, file: Path) -> model_pb2.ModelProto:
    model = cfg.get("model") or {}
    kind = model.get("type")
    proto = model_pb2.ModelProto()
    proto.normalizer_spec.CopyFrom(_normalizer_spec(cfg, file))
    added = cfg.get("added_tokens") or []
    special = {t["content"] for t in added if t.get("special")}
    user = {t["content"] for t in added if not t.get("special")}
    byte_fallback = bool(model.get("byte_fallback"))
    metaspaces = [n for n in walk_nodes(cfg.get("pre_tokenizer")) if n.get("type") == "Metaspace"]
    split = all(n.get("split", True) for n in metaspaces)

    def piece_type(piece: str, usable: bool) -> int:
        if byte_fallback and _BYTE_PIECE.fullmatch(piece):
            return _Piece.BYTE
        if piece in user:
            return _Piece.USER_DEFINED  # approximate: spm matches them after normalization
        # With Metaspace(split=True) words are segmented one by one, so a piece with an inner
        # "▁" can never be used; spm would use it across words, hence UNUSED.
        if not usable or (split and META in piece[1:]):
            return _Piece.UNUSED
        return _Piece.NORMAL

    _add_controls(proto)
    if kind == "Unigram":
        unk_id = model.get("unk_id")
        entries = []
        for i, (piece, score) in enumerate(model.get("vocab") or []):
            if i != unk_id and piece not in special:
                entries.append(
                    _Piece(piece=piece, score=float(score), type=piece_type(piece, True))
                )
        _extend(proto, entries, file)
        model_type = model_pb2.TrainerSpec.UNIGRAM
    elif kind == "BPE":
        # Approximate: spm merges the adjacent pair whose *result* has the highest score, HF the
        # pair of lowest merge rank. With score = -rank of the merge creating a piece both agree
        # unless one string can be formed from two different pairs (exact for BPE vocabularies
        # converted from sentencepiece, where ranks follow the scores).
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise ValueError(
                    f"{file}: BPE {key}={model[key]!r} has no sentencepiece equivalent"
                )
        if model.get("ignore_merges"):
            raise ValueError(f"{file}: BPE ignore_merges=true has no sentencepiece equivalent")
        rank: dict[str, int] = {}
        for r, merge in enumerate(model.get("merges") or []):
            a, b = merge.split(" ") if isinstance(merge, str) else merge
            rank.setdefault(a + b, r)
        unk = model.get("unk_token")
        entries = []
        for piece, _ in sorted((model.get("vocab") or {}).items(), key=lambda kv: kv[1]):
            if piece == unk or piece in special:
                continue
            usable = piece in rank or len(piece) == 1 or piece in user
            score = -float(rank.get(piece, 0))
            entries.append(_Piece(piece=piece, score=score, type=piece_type(piece, usable)))
        _extend(proto, entries, file)
        model_type = model_pb2.TrainerSpec.BPE
    else:
        raise ValueError(
            f"{file}: tokenizer.json model type {kind!r} is not supported; pass {_ACCEPTED}"
        )
    _set_trainer(proto, model_type, byte_fallback=byte_fallback)
    return proto
