"""mBART tokenization on sentencepiece, with fairseq's id layout (no transformers needed).

Id layout (fairseq dictionary, as in the released mBART checkpoints):

    0 <s>   1 <pad>   2 </s>   3 <unk>
    4 .. S  sentencepiece pieces: fairseq id = spm id + 1 (spm's own <unk>=0 maps to 3;
            spm's <s>/</s> control ids 1/2 never come out of encoding)
    S+1 ..  language codes in checkpoint order (CC25_LANGUAGES or MBART50_LANGUAGES)
    last    <mask>

where S = number of spm pieces (250_000 for the real model: en_XX = 250_004, ro_RO = 250_020,
<mask> = 250_026 for cc25 and 250_053 for mBART-50).

Sequence formats (`style`):

    "cc25"     X </s> [lang]    labels use the same layout with the target language; the decoder
                                starts from [tgt] (shift_tokens_right moves it to position 0).
    "mbart50"  [lang] X </s>    the decoder starts from </s> and generation forces [tgt] as the
                                first generated token (`forced_bos_id`).

Encoding matches transformers' slow `MBartTokenizer` / `MBart50Tokenizer` id for id, including
their treatment of special-token strings inside text: "<mask>", "</s>", "en_XX", ... in a string
become those tokens' ids, and "<mask>" swallows the whitespace on its left (HF's `lstrip=True`).

    tok = MBartTokenizer("sentencepiece.bpe.model")               # cc25 layout
    ids = tok.encode("UN Chief Says", "en_XX")                     # [..., 2, 250004]
    ids_BxL, mask_BxL = tok.encode_batch(["a", "b c"], "en_XX")
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece as spm

# fairseq's dictionary order; the ids of the real checkpoints depend on it.
CC25_LANGUAGES: tuple[str, ...] = (
    "ar_AR", "cs_CZ", "de_DE", "en_XX", "es_XX", "et_EE", "fi_FI", "fr_XX", "gu_IN", "hi_IN",
    "it_IT", "ja_XX", "kk_KZ", "ko_KR", "lt_LT", "lv_LV", "my_MM", "ne_NP", "nl_XX", "ro_RO",
    "ru_RU", "si_LK", "tr_TR", "vi_VN", "zh_CN",
)  # fmt: skip
MBART50_LANGUAGES: tuple[str, ...] = CC25_LANGUAGES + (
    "af_ZA", "az_AZ", "bn_IN", "fa_IR", "he_IL", "hr_HR", "id_ID", "ka_GE", "km_KH", "mk_MK",
    "ml_IN", "mn_MN", "mr_IN", "pl_PL", "ps_AF", "pt_XX", "sv_SE", "sw_KE", "ta_IN", "te_IN",
    "th_TH", "tl_XX", "uk_UA", "ur_PK", "xh_ZA", "gl_ES", "sl_SI",
)  # fmt: skip

STYLES = ("cc25", "mbart50")

BOS_ID = 0
PAD_ID = 1
EOS_ID = 2
UNK_ID = 3
FAIRSEQ_OFFSET = 1  # fairseq id = spm id + 1 for every regular piece

# Label positions ignored by the loss (transformers' convention).
IGNORE_ID = -100


class MBartTokenizer:
    """sentencepiece model + mBART's fairseq id layout and sequence format.

    spm_path: a sentencepiece model with spm's default control ids (<unk>=0, <s>=1, </s>=2, no
        pad), as mBART's `sentencepiece.bpe.model` and `train_sentencepiece` produce.
    model_proto: instead of spm_path, a serialized sentencepiece model (e.g. a tokenizer
        sampled in memory by zoo.zett.vocab).
    languages: language codes in checkpoint order; defaults to CC25_LANGUAGES for style "cc25"
        and MBART50_LANGUAGES for style "mbart50".
    style: "cc25" (`X </s> [lang]`) or "mbart50" (`[lang] X </s>`); see the module docstring.
    """

    def __init__(
        self,
        spm_path: str | os.PathLike | None,
        *,
        languages: Sequence[str] | None = None,
        style: str = "cc25",
        model_proto: bytes | None = None,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"style={style!r} is not one of {STYLES}")
        if languages is None:
            languages = CC25_LANGUAGES if style == "cc25" else MBART50_LANGUAGES
        languages = tuple(languages)
        if not languages or len(set(languages)) != len(languages):
            raise ValueError(f"languages must be non-empty and unique; got {languages}")
        if (spm_path is None) == (model_proto is None):
            raise ValueError("pass exactly one of spm_path or model_proto")
        try:
            if model_proto is not None:
                path = Path("<in-memory sentencepiece model>")
                self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
            else:
                path = Path(spm_path)
                if not str(spm_path) or not path.is_file():
                    what = "is not a file" if path.exists() else "does not exist"
                    raise FileNotFoundError(
                        f"sentencepiece model {str(spm_path)!r} {what}; pass the checkpoint's "
                        "sentencepiece.bpe.model or train one with `zoo spm`"
                    )
                self._sp = spm.SentencePieceProcessor(model_file=os.fspath(path))
        except FileNotFoundError:
            raise
        except (RuntimeError, OSError) as e:  # sentencepiece's "could not parse ModelProto"
            raise ValueError(
                f"{path} is not a sentencepiece model ({' '.join(str(e).split())[:120]}); pass "
                "the checkpoint's sentencepiece.bpe.model or train one with `zoo spm`"
            ) from None
        control = (self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if control != (0, 1, 2):
            # The fixed +1 offset below only reproduces fairseq's dictionary for this layout.
            raise ValueError(
                f"{path} has (unk, bos, eos) spm ids {control}; mBART's layout needs (0, 1, 2). "
                "Retrain with train_sentencepiece() (spm's defaults)."
            )
        self.style = style
        self.languages = languages
        self.spm_path = path
        num_pieces = self._num_pieces = self._sp.get_piece_size()
        self._lang_ids = {code: num_pieces + FAIRSEQ_OFFSET + i for i, code in enumerate(languages)}
        self.mask_id = num_pieces + FAIRSEQ_OFFSET + len(languages)
        self.vocab_size = self.mask_id + 1
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
        self._special_ids = {"<s>": BOS_ID, "<pad>": PAD_ID, "</s>": EOS_ID, "<unk>": UNK_ID}
        self._special_ids.update(self._lang_ids)
        self._special_ids["<mask>"] = self.mask_id
        self._special_names = {i: name for name, i in self._special_ids.items()}
        # Longest first, so the leftmost match is also the longest (HF's trie does the same).
        names = sorted(self._special_ids, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")

    def __repr__(self) -> str:
        return (
            f"MBartTokenizer({str(self.spm_path)!r}, style={self.style!r}, "
            f"{len(self.languages)} languages, vocab_size={self.vocab_size})"
        )

    @property
    def processor(self) -> spm.SentencePieceProcessor:
        """The underlying sentencepiece processor (spm ids: fairseq id - 1 for pieces)."""
        return self._sp

    @property
    def num_pieces(self) -> int:
        """sentencepiece pieces, its 3 control pieces included (fairseq ids 4..num_pieces)."""
        return self._num_pieces

    def pieces(self) -> list[str]:
        """The piece string of every id, in id order (specials, spm pieces, codes, <mask>)."""
        spm_pieces = [self._sp.id_to_piece(i) for i in range(3, self._num_pieces)]
        return ["<s>", "<pad>", "</s>", "<unk>", *spm_pieces, *self.languages, "<mask>"]

    def lang_id(self, code: str) -> int:
        """Id of a language code such as "en_XX"."""
        try:
            return self._lang_ids[code]
        except KeyError:
            raise ValueError(
                f"unknown language code {code!r} for this {self.style} tokenizer; known codes: "
                f"{', '.join(self.languages)}"
            ) from None

    def _text_ids(self, text: str) -> list[int]:
        """Ids of `text` without the sequence's special tokens (special strings in text kept)."""
        chunks = self._special_re.split(text)  # odd positions hold special-token strings
        for i in range(1, len(chunks), 2):
            if chunks[i] == "<mask>":
                chunks[i - 1] = chunks[i - 1].rstrip()  # HF: AddedToken("<mask>", lstrip=True)
        ids: list[int] = []
        for i, chunk in enumerate(chunks):
            if i % 2:
                ids.append(self._special_ids[chunk])
            elif chunk:
                ids.extend(p + FAIRSEQ_OFFSET if p else UNK_ID for p in self._sp.encode(chunk))
        return ids

    def encode(
        self,
        text: str,
        lang: str,
        *,
        target: bool = False,
        max_length: int | None = None,
        truncate: bool = False,
    ) -> list[int]:
        """Token ids of one sentence in this tokenizer's format.

        lang: the sentence's language code (the target language when encoding labels).
        target: marks label-side calls for readers; the ids do not depend on it, since both
            styles lay out labels exactly like sources (HF's target mode only swaps the code).
        max_length: limit on the length including special tokens. A longer sentence raises
            ValueError unless truncate=True, which drops text tokens from the right and keeps the
            special tokens (HF's `truncation=True`).
        """
        del target  # see the docstring
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}: {text!r}")
        lang_id = self.lang_id(lang)
        body = self._text_ids(text)
        if max_length is not None:
            room = max_length - 2
            if room < 0:
                raise ValueError(f"max_length={max_length} cannot hold the 2 special tokens")
            if len(body) > room:
                if not truncate:
                    raise ValueError(
                        f"text encodes to {len(body) + 2} tokens > max_length={max_length}: "
                        f"{text[:60]!r}...; pass truncate=True or a larger max_length"
                    )
                body = body[:room]
        if self.style == "cc25":
            return [*body, EOS_ID, lang_id]
        return [lang_id, *body, EOS_ID]

    def encode_batch(
        self,
        texts: Sequence[str],
        lang: str | Sequence[str],
        *,
        target: bool = False,
        max_length: int | None = None,
        truncate: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes and right-pads a batch.

        lang: one code for the whole batch or one per text.
        Returns (ids_BxL [batch, longest] int32 padded with pad_id, mask_BxL [batch, longest] bool,
        True on real tokens).
        """
        langs = [lang] * len(texts) if isinstance(lang, str) else list(lang)
        if len(langs) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(langs)} language codes")
        rows = [
            self.encode(t, code, target=target, max_length=max_length, truncate=truncate)
            for t, code in zip(texts, langs)
        ]
        length = max((len(r) for r in rows), default=0)
        ids_BxL = np.full((len(rows), length), PAD_ID, dtype=np.int32)
        mask_BxL = np.zeros((len(rows), length), dtype=bool)
        for b, row in enumerate(rows):
            ids_BxL[b, : len(row)] = row
            mask_BxL[b, : len(row)] = True
        return ids_BxL, mask_BxL

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of a sequence of ids (1-D list or array).

        skip_special=True drops <s>, <pad>, </s>, <unk>, <mask> and language codes (as HF's
        `skip_special_tokens=True`); False writes them as their names, space separated, for
        debugging.
        """
        parts: list[str] = []
        run: list[int] = []
        for i in (int(x) for x in np.asarray(ids).reshape(-1)):
            if i in self._special_names:
                if not skip_special:
                    if run:
                        parts.append(self._sp.decode(run))
                        run = []
                    parts.append(self._special_names[i])
            elif UNK_ID < i <= self._num_pieces:
                run.append(i - FAIRSEQ_OFFSET)
            else:
                raise ValueError(
                    f"id {i} is outside this tokenizer's vocabulary [0, {self.vocab_size})"
                )
        if run:
            parts.append(self._sp.decode(run))
        return " ".join(p for p in parts if p).strip()

    def decoder_start_id(self, tgt_lang: str) -> int:
        """First decoder input for generation: [tgt] for cc25, </s> for mBART-50."""
        return self.lang_id(tgt_lang) if self.style == "cc25" else EOS_ID

    def forced_bos_id(self, tgt_lang: str) -> int | None:
        """Token generation must emit first: [tgt] for mBART-50, None for cc25 (already there)."""
        return self.lang_id(tgt_lang) if self.style == "mbart50" else None


def shift_tokens_right(labels_BxT: Any, pad_id: int) -> Any:
    """Decoder inputs from labels, as transformers' mBART `shift_tokens_right`.

    IGNORE_ID (-100) becomes pad_id, each row shifts right by one, and the row's last non-pad
    token (the language code in cc25, </s> in mBART-50) wraps to position 0:
    cc25 `Y </s> [tgt]` -> `[tgt] Y </s>`; mBART-50 `[tgt] Y </s>` -> `</s> [tgt] Y`.
    Assumes right padding. A row of only padding starts with pad_id (HF raises there).

    labels_BxT: [batch, length] integer, numpy or jax array (jit-safe); returns the same kind,
    shape and dtype.
    """
    if isinstance(labels_BxT, np.ndarray):
        xp = np
    else:  # jax only for a jax array: tests/fixtures/make_tokenizer_fixtures.py loads this
        import jax.numpy as xp  # file by path in a venv without jax

    if labels_BxT.ndim != 2:
        raise ValueError(f"labels must be [batch, length]; got shape {labels_BxT.shape}")
    labels_BxT = xp.where(labels_BxT == IGNORE_ID, pad_id, labels_BxT).astype(labels_BxT.dtype)
    last_B = xp.maximum((labels_BxT != pad_id).sum(axis=1) - 1, 0)
    start_Bx1 = xp.take_along_axis(labels_BxT, last_B[:, None], axis=1)
    return xp.concatenate([start_Bx1, labels_BxT[:, :-1]], axis=1)


def train_sentencepiece(
    model_prefix: str | os.PathLike,
    vocab_size: int,
    *,
    files: Sequence[str | os.PathLike] | None = None,
    sentences: Iterable[str] | None = None,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
    seed: int = 0,
    num_threads: int = 1,
) -> Path:
    """Trains a sentencepiece model with mBART's control ids; returns `<model_prefix>.model`.

    Give exactly one of `files` (text files, one sentence a line) or `sentences`. The result is
    deterministic for the same inputs and sentencepiece version with num_threads=1 (more threads
    are faster but not promised to reproduce). Writes `<model_prefix>.model` and `.vocab`.
    Note `seed` sets sentencepiece's process-wide random seed.
    """
    if (files is None) == (sentences is None):
        raise ValueError("pass exactly one of files= or sentences=")
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = dict(
        model_prefix=os.fspath(prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        # mBART's layout (see MBartTokenizer): unk 0, bos 1, eos 2, no pad piece.
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        input_sentence_size=0,  # use every sentence: no sampling, so nothing random to seed
        shuffle_input_sentence=False,
        num_threads=num_threads,
        minloglevel=2,
    )
    if files is not None:
        paths = [os.fspath(f) for f in files]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"training files do not exist: {missing}")
        options["input"] = ",".join(paths)
    else:
        options["sentence_iterator"] = iter(sentences)
    spm.set_random_generator_seed(seed)
    spm.SentencePieceTrainer.train(**options)
    return prefix.with_name(prefix.name + ".model")


def main(args) -> int:
    """`zoo spm --input FILE... --model-prefix PREFIX --vocab-size N`: a sentencepiece model."""
    for f in args.input:
        if not os.path.exists(f):
            raise FileNotFoundError(f"--input {f} does not exist")
    for f in args.input:
        if not os.path.isfile(f):
            raise ValueError(f"--input {f} is not a file")
    if args.vocab_size < 1:
        raise ValueError(f"--vocab-size {args.vocab_size} must be a positive number of pieces")
    try:
        path = train_sentencepiece(
            args.model_prefix, args.vocab_size, files=args.input, model_type=args.model_type
        )
    except RuntimeError as e:  # e.g. "Vocabulary size is smaller than required_chars"
        raise ValueError(
            f"sentencepiece refused --vocab-size {args.vocab_size} for {args.input}: "
            f"{' '.join(str(e).split())[:200]}"
        ) from None
    print(f"zoo: wrote {path} (mBART id layout: unk 0, bos 1, eos 2 in sentencepiece)")
    return 0
