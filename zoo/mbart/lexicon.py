"""Piece-level bilingual lexicons for code-switching restoration (CSR).

A `Lexicon` maps a source piece id to up to k candidate target piece ids (k = 3 in the CSR
release, which stores a `[V, 3]` table of nearest neighbours per source piece). CSR replaces a
covered piece by a uniform pick among its candidates, so every candidate is exactly one piece.

Two ways to build one:

- `from_muse_file`: a MUSE-style word dictionary (`src tgt` per line).
- `induce_from_parallel`: a dictionary induced from parallel token-id data (the CSR release
  builds its lexicon from the downstream parallel train+valid data only; see
  `induce_from_parallel` for why we use Dice scores instead of word2vec + VecMap).

Ids follow the mBART layout: ids below `num_special` (`<s> <pad> </s> <unk>`) and ids at or above
`vocab_limit` (language codes, `<mask>`) never enter a lexicon.

    lex = induce_from_parallel(src_seqs, tgt_seqs, k=3, vocab_limit=tokenizer.num_pieces_ids)
    lex.save("en-ro.lexicon.npz"); lex = Lexicon.load("en-ro.lexicon.npz")
    lex[1234]            # -> array([5678, 91, 234]) candidate target piece ids
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

NUM_SPECIAL = 4  # <s>=0 <pad>=1 </s>=2 <unk>=3
PIECE_PREFIX = "\u2581"  # sentencepiece's word-start marker '▁'
_FORMAT_VERSION = 1

# A MUSE word is turned into piece ids either by a tokenizer function (word -> ids) or by a
# piece -> id map (looked up as PIECE_PREFIX + word, i.e. the word as a whole word-start piece).
WordToIds = Callable[[str], Sequence[int]] | Mapping[str, int]


class Lexicon(Mapping[int, np.ndarray]):
    """Source piece id -> array of candidate target piece ids (1..k of them, best first).

    Storage (what `save` writes):
        src_ids: [n] int32, sorted, unique: the source pieces that have candidates.
        candidates: [n, k] int32, row i holds the candidates of src_ids[i], best first, padded
            with -1 after the last valid one; every row has at least one candidate.
        scores: [n, k] f32 or None, the score of each candidate (NaN for padding).
    """

    def __init__(
        self,
        src_ids: np.ndarray,
        candidates: np.ndarray,
        scores: np.ndarray | None = None,
    ) -> None:
        src_ids = np.asarray(src_ids, dtype=np.int32).reshape(-1)
        candidates = np.asarray(candidates, dtype=np.int32)
        if candidates.ndim != 2 or candidates.shape[0] != src_ids.shape[0]:
            raise ValueError(
                f"Lexicon candidates must be [n, k] with n = len(src_ids) = {src_ids.shape[0]}, "
                f"got shape {candidates.shape}; build it with Lexicon.from_dict if in doubt."
            )
        if src_ids.size and np.any(np.diff(src_ids) <= 0):
            raise ValueError("Lexicon src_ids must be sorted and unique; use Lexicon.from_dict.")
        valid = candidates >= 0
        counts = valid.sum(axis=1)
        # Valid entries first, then padding: rows are a prefix of valid candidates.
        if np.any(valid[:, 1:] & ~valid[:, :-1]) or np.any(counts == 0):
            raise ValueError(
                "Every Lexicon row needs >= 1 candidate, valid ones first and -1 padding after; "
                "drop source ids without candidates before building the Lexicon."
            )
        self.src_ids = src_ids
        self.candidates = candidates
        self.num_candidates = counts.astype(np.int32)
        self.scores = None if scores is None else np.asarray(scores, dtype=np.float32)

    # -- Mapping interface -------------------------------------------------------------------

    def __getitem__(self, src_id: int) -> np.ndarray:
        row = int(self.rows(np.asarray([src_id]))[0])
        if row < 0:
            raise KeyError(src_id)
        return self.candidates[row, : self.num_candidates[row]].copy()

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self.src_ids)

    def __len__(self) -> int:
        return int(self.src_ids.shape[0])

    def __repr__(self) -> str:
        return f"Lexicon({len(self)} source pieces, k={self.k})"

    @property
    def k(self) -> int:
        """Maximum number of candidates per source piece."""
        return int(self.candidates.shape[1])

    # -- vectorised use ----------------------------------------------------------------------

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in `candidates`, -1 where the id is not in the lexicon.

        ids: [...] int. Returns [...] int64.
        """
        ids = np.asarray(ids)
        if len(self) == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.src_ids, ids)
        pos_c = np.minimum(pos, len(self) - 1)
        return np.where(self.src_ids[pos_c] == ids, pos_c, -1).astype(np.int64)

    def switch(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Replaces every id that is in the lexicon by a uniform pick among its candidates.

        ids: [n] int. Returns a new [n] array of the same dtype; ids not in the lexicon are
        returned unchanged (CSR neither deletes nor masks them).
        """
        ids = np.asarray(ids)
        out = ids.copy()
        rows = self.rows(ids)
        hit = np.flatnonzero(rows >= 0)
        if hit.size:
            r = rows[hit]
            # Uniform over the valid candidates of each row (random.sample(cands, 1) upstream).
            pick = (rng.random(hit.size) * self.num_candidates[r]).astype(np.int64)
            out[hit] = self.candidates[r, pick]
        return out

    # -- construction and files --------------------------------------------------------------

    @classmethod
    def from_dict(
        cls,
        mapping: Mapping[int, Sequence[int]],
        k: int | None = None,
    ) -> Lexicon:
        """Builds a Lexicon from {src_id: [tgt_id, ...]} (best first; duplicates dropped, the
        first k kept; entries with no candidates dropped). k defaults to the longest list."""
        items = []
        for src, cands in mapping.items():
            seen = list(dict.fromkeys(int(c) for c in cands))
            if k is not None:
                seen = seen[:k]
            if seen:
                items.append((int(src), seen))
        items.sort()
        width = k if k is not None else max((len(c) for _, c in items), default=1)
        table = np.full((len(items), width), -1, dtype=np.int32)
        for i, (_, cands) in enumerate(items):
            table[i, : len(cands)] = cands
        return cls(np.array([s for s, _ in items], dtype=np.int32), table)

    def save(self, path: str | os.PathLike) -> None:
        """Writes a small .npz (src_ids, candidates, optional scores)."""
        arrays = {
            "format_version": np.int32(_FORMAT_VERSION),
            "src_ids": self.src_ids,
            "candidates": self.candidates,
        }
        if self.scores is not None:
            arrays["scores"] = self.scores
        with open(path, "wb") as f:  # open() so that numpy does not append ".npz" to the name
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Lexicon:
        """Reads a file written by `save`."""
        with np.load(path) as data:
            missing = {"src_ids", "candidates"} - set(data.files)
            if missing:
                raise ValueError(
                    f"{os.fspath(path)!r} is not a Lexicon file (missing {sorted(missing)}); "
                    "write one with Lexicon.save."
                )
            scores = data["scores"] if "scores" in data.files else None
            return cls(data["src_ids"], data["candidates"], scores)


# ---------------------------------------------------------------------------------------------
# MUSE dictionaries
# ---------------------------------------------------------------------------------------------


def _word_to_piece(
    word: str, to_ids: WordToIds, num_special: int, vocab_limit: int | None
) -> int | None:
    """The single piece id of `word`, or None when it is not exactly one ordinary piece."""
    if isinstance(to_ids, Mapping):
        piece = to_ids.get(PIECE_PREFIX + word)
        ids = [] if piece is None else [int(piece)]
    else:
        ids = [int(i) for i in to_ids(word)]
    # Drop what a tokenizer may add around the pieces (</s>, language code) and <unk>.
    ids = [i for i in ids if i >= num_special and (vocab_limit is None or i < vocab_limit)]
    return ids[0] if len(ids) == 1 else None


def from_muse_file(
    path: str | os.PathLike,
    src_to_ids: WordToIds,
    tgt_to_ids: WordToIds,
    *,
    k: int = 3,
    num_special: int = NUM_SPECIAL,
    vocab_limit: int | None = None,
) -> Lexicon:
    """Reads a MUSE-style dictionary (one `src_word tgt_word` pair per line, whitespace
    separated) into a piece-level Lexicon.

    Several lines with the same source word give its candidates in file order (duplicates
    dropped, first k kept). Source words that map to the same piece pool their candidates in file
    order.

    src_to_ids, tgt_to_ids: a tokenizer function (word -> piece ids; ids < num_special and
        >= vocab_limit, e.g. an appended </s> and language code, are ignored) or a piece -> id
        map, where a word is looked up as the word-start piece '▁' + word.

    Multi-piece words: a pair is kept only when BOTH words are exactly one piece. CSR swaps one
    piece for one piece, so a candidate must be a single piece; mapping the first piece of a
    multi-piece word would put a prefix of an unrelated word in its place ("▁in" of
    "information" -> "▁in" of "información"), and spreading a word over its pieces has no
    piece-to-piece correspondence to rely on. Skipped pairs are counted in the log.
    """
    table: dict[int, list[int]] = {}
    kept = skipped_src = skipped_tgt = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(
                    f"{os.fspath(path)}:{line_no}: expected 'src_word tgt_word', got {line!r}; "
                    "MUSE dictionaries have exactly two whitespace-separated fields per line."
                )
            src = _word_to_piece(fields[0], src_to_ids, num_special, vocab_limit)
            if src is None:
                skipped_src += 1
                continue
            tgt = _word_to_piece(fields[1], tgt_to_ids, num_special, vocab_limit)
            if tgt is None:
                skipped_tgt += 1
                continue
            table.setdefault(src, []).append(tgt)
            kept += 1
    log.info(
        "MUSE %s: %d pairs kept, %d skipped (source not one piece), %d skipped (target not "
        "one piece)",
        os.fspath(path),
        kept,
        skipped_src,
        skipped_tgt,
    )
    return Lexicon.from_dict(table, k=k)


# ---------------------------------------------------------------------------------------------
# Induction from parallel data
# ---------------------------------------------------------------------------------------------


def _presence_matrix(
    seqs: Sequence[np.ndarray], num_special: int, vocab_limit: int | None
) -> tuple[sp.csr_matrix, np.ndarray]:
    """[num_sentences, num_kept_pieces] 0/1 matrix of which pieces occur in which sentence, and
    the piece id of each column."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = (
        np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs])
        if len(seqs)
        else np.zeros(0, np.int64)
    )
    sent = np.repeat(np.arange(len(seqs)), lengths)
    keep = flat >= num_special
    if vocab_limit is not None:
        keep &= flat < vocab_limit
    flat, sent = flat[keep], sent[keep]
    piece_ids, cols = np.unique(flat, return_inverse=True)
    m = sp.csr_matrix(
        (np.ones(flat.shape[0], np.float32), (sent, cols)),
        shape=(len(seqs), piece_ids.shape[0]),
    )
    m.sum_duplicates()
    m.data[:] = 1.0  # sentence presence, not token counts
    return m, piece_ids


def _rank_within(groups: np.ndarray, score: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of each entry within its group, by score descending then tie ascending."""
    order = np.lexsort((tie, -score, groups))
    g = groups[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, g.shape[0]]))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0]) - group_start
    return rank


def induce_from_parallel(
    src_seqs: Sequence[np.ndarray],
    tgt_seqs: Sequence[np.ndarray],
    *,
    k: int = 3,
    num_special: int = NUM_SPECIAL,
    vocab_limit: int | None = None,
    min_count: int = 5,
    min_cooc: int = 2,
    min_dice: float = 0.05,
    min_relative: float = 0.5,
    mutual_rank: int | None = 10,
) -> Lexicon:
    """Induces a source piece -> target piece lexicon from parallel token-id sentences.

    src_seqs, tgt_seqs: equally long sequences of 1-D int arrays (piece ids; specials below
        `num_special` and ids >= `vocab_limit` such as </s>, language codes and <mask> are
        ignored, so mBART-formatted `X </s> [lang]` sequences can be passed as they are).

    Method: sentence-level co-occurrence with the Dice coefficient,
        dice(s, t) = 2 c(s, t) / (c(s) + c(t)),
    where c counts sentence pairs containing the piece(s). Filters, in order:
    - pieces seen in fewer than `min_count` sentences (word2vec's min-count 5 in the CSR
      release), pairs seen together fewer than `min_cooc` times or below `min_dice`;
    - both directions: with `mutual_rank` set, t stays a candidate of s only if s is also among
      the `mutual_rank` best sources of t, which removes "hub" targets (frequent pieces that
      co-occur with everything);
    - top-k targets per source by Dice (ties: lower id first);
    - candidates below `min_relative` times their source's best score: CSR picks uniformly
      among the candidates, so a weak 2nd/3rd candidate would be used as often as a good 1st.

    Why this method: the CSR paper induces its lexicon with word2vec skip-gram on each side and
    VecMap self-learning, which needs millions of sentences to give useful embeddings and far more
    compute than a CPU demo has. Dice on parallel data is exact counting (one sparse product,
    seconds for ~50k pairs on one core) and recovers one-to-one translations reliably; IBM Model 1
    EM would sharpen many-to-one cases but needs a pass over every (source, target) token pair
    of every sentence per iteration, ~30M pairs at 50k sentences, which costs far more time and
    memory for a small gain on a demo.

    In a joint vocabulary, pieces both languages share (names, numbers, code) usually get
    themselves as best candidate; switching them leaves the text as a translation would.

    Returns a Lexicon with scores = Dice values.
    """
    if len(src_seqs) != len(tgt_seqs):
        raise ValueError(
            f"induce_from_parallel needs aligned sentence pairs: got {len(src_seqs)} source and "
            f"{len(tgt_seqs)} target sentences."
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    xs, src_pieces = _presence_matrix(src_seqs, num_special, vocab_limit)
    xt, tgt_pieces = _presence_matrix(tgt_seqs, num_special, vocab_limit)
    count_s = np.asarray(xs.sum(axis=0)).ravel()
    count_t = np.asarray(xt.sum(axis=0)).ravel()
    # Drop rare pieces before the product: it keeps the co-occurrence matrix small.
    keep_s = np.flatnonzero(count_s >= min_count)
    keep_t = np.flatnonzero(count_t >= min_count)
    xs, count_s, src_pieces = xs[:, keep_s], count_s[keep_s], src_pieces[keep_s]
    xt, count_t, tgt_pieces = xt[:, keep_t], count_t[keep_t], tgt_pieces[keep_t]

    cooc = (xs.T.tocsr() @ xt).tocoo()  # [src_pieces, tgt_pieces] sentence co-occurrence counts
    s, t, c = cooc.row.astype(np.int64), cooc.col.astype(np.int64), cooc.data
    dice = (2.0 * c / (count_s[s] + count_t[t])).astype(np.float32)
    keep = (c >= min_cooc) & (dice >= min_dice)
    s, t, dice = s[keep], t[keep], dice[keep]
    if mutual_rank is not None and s.size:
        keep = _rank_within(t, dice, src_pieces[s]) < mutual_rank
        s, t, dice = s[keep], t[keep], dice[keep]
    if s.size == 0:
        return Lexicon(np.zeros(0, np.int32), np.zeros((0, k), np.int32))
    rank = _rank_within(s, dice, tgt_pieces[t])
    keep = rank < k
    s, t, dice, rank = s[keep], t[keep], dice[keep], rank[keep]
    best = np.zeros(src_pieces.shape[0], np.float32)
    best[s[rank == 0]] = dice[rank == 0]
    keep = dice >= min_relative * best[s]  # rank 0 always passes
    s, t, dice, rank = s[keep], t[keep], dice[keep], rank[keep]

    rows, row_of = np.unique(s, return_inverse=True)
    candidates = np.full((rows.shape[0], k), -1, dtype=np.int32)
    scores = np.full((rows.shape[0], k), np.nan, dtype=np.float32)
    candidates[row_of, rank] = tgt_pieces[t]
    scores[row_of, rank] = dice
    return Lexicon(src_pieces[rows], candidates, scores)
