"""One step of HF-style beam search on blocks of K beams: the bookkeeping behind zoo.decode.

`beam_update` is transformers 4.57 `_beam_search` steps (c)–(g) on R independent rows of K
beams (R = batch for beam search, batch*groups for diverse beam search); the loop, the model
call, forcing and the cache live in `zoo.decode.search`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

EarlyStopping = bool | Literal["never"]

# HF marks impossible beams with an additive -1e9 (not -inf); matching it keeps scores equal.
NEG = -1.0e9


class Beams(NamedTuple):
    """Beam bookkeeping for R independent searches of K beams (R = batch, or batch*groups)."""

    live_seqs_RxKxT: jax.Array  # int32, pad-filled
    live_scores_RxK: jax.Array  # f32 sum of log-probs; NEG marks an empty slot
    done_seqs_RxKxT: jax.Array  # int32: finished hypotheses, best first
    done_scores_RxK: jax.Array  # f32 length-normalised scores
    done_flags_RxK: jax.Array  # bool: slot holds a real finished hypothesis
    improvable_R: jax.Array  # bool: HF's is_early_stop_heuristic_unsatisfied


def init_beams(rows: int, k: int, steps: int, pad_id: int) -> Beams:
    # Only beam 0 is live at first, so the K beams do not all pick the same tokens.
    live_scores = jnp.zeros((rows, k), jnp.float32).at[:, 1:].set(NEG)
    seqs = jnp.full((rows, k, steps), pad_id, jnp.int32)
    return Beams(
        live_seqs_RxKxT=seqs,
        live_scores_RxK=live_scores,
        done_seqs_RxKxT=seqs,
        done_scores_RxK=jnp.full((rows, k), NEG, jnp.float32),
        done_flags_RxK=jnp.zeros((rows, k), bool),
        improvable_R=jnp.ones((rows,), bool),
    )


def _take(x_RxMx, idx_RxK):
    """x[r, idx[r, k], ...] for leading [R, M] arrays."""
    idx = idx_RxK.reshape(idx_RxK.shape + (1,) * (x_RxMx.ndim - 2))
    return jnp.take_along_axis(x_RxMx, idx, axis=1)


def beam_update(
    beams: Beams,
    logp_RxKxV: jax.Array,
    step: jax.Array,
    max_len_R: jax.Array,
    *,
    eos_id: int,
    length_penalty: float | jax.Array,
    early_stopping: EarlyStopping,
) -> tuple[Beams, jax.Array, jax.Array]:
    """One beam-search step on processed log-probs (HF `_beam_search`, steps b–g).

    logp_RxKxV: [R, K, V] f32 log-probs of each live beam's next token (forcing applied).
    step: scalar int32, index of the generated token; max_len_R: [R] int32.
    Returns (beams, parent_RxK, token_RxK): the live beam each new live beam extends and the
    token it appended (to gather the cache and feed the next step).
    """
    rows, k, vocab = logp_RxKxV.shape
    steps = beams.live_seqs_RxKxT.shape[-1]
    total_RxKV = (logp_RxKxV + beams.live_scores_RxK[:, :, None]).reshape(rows, k * vocab)

    # (c) the 2K best continuations, so K unfinished ones remain even if K of them end in EOS.
    cand_scores_Rx2K, cand_idx_Rx2K = jax.lax.top_k(total_RxKV, 2 * k)
    cand_parent_Rx2K = (cand_idx_Rx2K // vocab).astype(jnp.int32)
    cand_token_Rx2K = (cand_idx_Rx2K % vocab).astype(jnp.int32)
    cand_seqs_Rx2KxT = _take(beams.live_seqs_RxKxT, cand_parent_Rx2K)
    at_step_T = jnp.arange(steps, dtype=jnp.int32) == step
    cand_seqs_Rx2KxT = jnp.where(at_step_T, cand_token_Rx2K[:, :, None], cand_seqs_Rx2KxT)

    # (d) a candidate stops on EOS, or on the row's last allowed step (HF MaxLengthCriteria).
    last_step_R = step >= max_len_R - 1
    stops_Rx2K = (cand_token_Rx2K == eos_id) | last_step_R[:, None]

    # (e) the K best candidates that did not stop keep running.
    run_scores_Rx2K = cand_scores_Rx2K + stops_Rx2K.astype(jnp.float32) * NEG
    live_scores_RxK, pick_RxK = jax.lax.top_k(run_scores_Rx2K, k)
    live_seqs_RxKxT = _take(cand_seqs_Rx2KxT, pick_RxK)
    parent_RxK = _take(cand_parent_Rx2K, pick_RxK)
    token_RxK = _take(cand_token_Rx2K, pick_RxK)

    # (f) stopped candidates ranked in the top K join the finished set if they beat its worst.
    gen_len = (step + 1).astype(jnp.float32)
    in_top_k_2K = jnp.arange(2 * k) < k
    just_done_Rx2K = stops_Rx2K & in_top_k_2K[None, :]
    done_cand_Rx2K = cand_scores_Rx2K / gen_len**length_penalty
    if early_stopping is True:
        full_R = jnp.all(beams.done_flags_RxK, axis=-1)
        done_cand_Rx2K = done_cand_Rx2K + full_R[:, None].astype(jnp.float32) * NEG
    # A row past its max_len has stopped in HF (the loop ends); keep it from collecting more.
    closed_R = ~beams.improvable_R | (step > max_len_R - 1)
    done_cand_Rx2K = done_cand_Rx2K + closed_R[:, None].astype(jnp.float32) * NEG
    done_cand_Rx2K = done_cand_Rx2K + (~just_done_Rx2K).astype(jnp.float32) * NEG

    merged_scores_Rx3K = jnp.concatenate([beams.done_scores_RxK, done_cand_Rx2K], axis=1)
    merged_seqs_Rx3KxT = jnp.concatenate([beams.done_seqs_RxKxT, cand_seqs_Rx2KxT], axis=1)
    merged_flags_Rx3K = jnp.concatenate([beams.done_flags_RxK, just_done_Rx2K], axis=1)
    done_scores_RxK, keep_RxK = jax.lax.top_k(merged_scores_Rx3K, k)
    done_seqs_RxKxT = _take(merged_seqs_Rx3KxT, keep_RxK)
    done_flags_RxK = _take(merged_flags_Rx3K, keep_RxK)

    # (g) HF's heuristic: can the best live beam still beat the worst finished hypothesis?
    best_len_R = jnp.broadcast_to(gen_len, (rows,))
    if early_stopping == "never":  # a positive penalty favours length: bound at max_len
        best_len_R = jnp.where(length_penalty > 0.0, max_len_R.astype(jnp.float32), best_len_R)
    best_possible_R = live_scores_RxK[:, 0] / best_len_R**length_penalty
    worst_done_RxK = jnp.where(
        done_flags_RxK, jnp.min(done_scores_RxK, axis=-1, keepdims=True), NEG
    )
    improvable_R = beams.improvable_R & jnp.any(best_possible_R[:, None] > worst_done_RxK, axis=-1)

    new = Beams(
        live_seqs_RxKxT=live_seqs_RxKxT,
        live_scores_RxK=live_scores_RxK,
        done_seqs_RxKxT=done_seqs_RxKxT,
        done_scores_RxK=done_scores_RxK,
        done_flags_RxK=done_flags_RxK,
        improvable_R=improvable_R,
    )
    return new, parent_RxK, token_RxK


def rows_finished(
    beams: Beams, next_step: jax.Array, max_len_R: jax.Array, early_stopping: EarlyStopping
) -> jax.Array:
    """[R] bool: nothing can change this row's finished set any more (HF's stop test, per row)."""
    finished_R = ~beams.improvable_R | (next_step >= max_len_R)
    if early_stopping is True:
        finished_R = finished_R | jnp.all(beams.done_flags_RxK, axis=-1)
    return finished_R


def hamming_penalty(chosen_BxM: jax.Array, vocab: int, strength: float) -> jax.Array:
    """[B, V] f32: strength * how often each token appears among `chosen_BxM` (per row).

    Entries outside [0, V) (e.g. -1) count nothing.
    """
    counts_BxV = jax.nn.one_hot(chosen_BxM, vocab, dtype=jnp.float32).sum(axis=1)
    return strength * counts_BxV
