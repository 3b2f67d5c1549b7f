"""Batched greedy, sampling, beam and diverse beam search over any step function; jit-friendly.

A model plugs in through two things:

- `step_fn(token_ids [N] int32, cache) -> (logits [N, vocab] f32, cache)`: feeds one token per
  row and returns the next-token logits. It must be a pure function (it runs inside
  `lax.while_loop`), and the cache must know its own position (e.g. a step counter per row).
- an initial `cache`: a pytree whose every leaf has the batch as its leading dim. Beam search
  repeats each row `beam_size` times (`[B*K, ...]`, row `b*K + k` is beam k of item b) and
  gathers rows after every step, so the model needs no beam logic of its own.

Conventions (those of transformers 4.57 `generate`, which the tests check token for token):

- `max_len` counts the tokens generated after the start token, the forced BOS and the EOS
  included: it is HF's `max_new_tokens`, i.e. `max_length - 1` for an encoder-decoder. It may
  differ per row (`max_length_for`); the output width is `T = max(max_len)`. A row that reaches
  its `max_len` stops there, with EOS when `forced_eos_id` is set (mBART configs set 2).
- Forcing (HF `ForcedBOS`/`ForcedEOSTokenLogitsProcessor`): at a forced step every log-prob is
  -inf except the forced token's, which is 0, so a forced token adds nothing to a beam score.
- Beam score of a finished hypothesis = sum of log-probs / gen_len ** length_penalty, gen_len =
  tokens after the start token (EOS and forced BOS included). fairseq divides by the same count
  but, for cc25 in `translation_from_pretrained_bart`, its hypotheses also end in the `[tgt]`
  code (one token longer) and its forced prefix tokens carry their real log-probs.
- Beam mechanics follow HF's vectorised `_beam_search`: 2K candidates per item; an EOS (or
  max-length) candidate becomes a finished hypothesis only if it ranks in the top K; the K best
  unfinished candidates continue; finished hypotheses are the K best seen; stopping follows
  `early_stopping` (False: HF's "no running beam can beat the worst finished one" heuristic at
  the current length; True: stop once K hypotheses are finished; "never": the same heuristic
  at max_len when length_penalty > 0). fairseq stops an item once K hypotheses are finished
  (like True) and keeps EOS candidates from the top K of its 2K as well.
- Scores use HF's -1e9 markers (not -inf) for empty beams, so returned numbers match.

All functions trace to one `lax.while_loop` with static shapes; call them inside `jax.jit`
(build `step_fn` from the params inside the jitted function).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zoo.decode.beams import (
    Beams,
    EarlyStopping,
    beam_update,
    hamming_penalty,
    init_beams,
    rows_finished,
)
from zoo.nn.cache import gather_rows, repeat_rows

StepFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


# ---------------------------------------------------------------------------------------------
# Helpers shared by all searches
# ---------------------------------------------------------------------------------------------


def max_length_for(src_lengths_B, a: float, b: int, limit: int) -> jax.Array:
    """Per-row generation budget `min(int(a * src_len + b), limit)`, fairseq's max_len_a/b.

    src_lengths_B: [B] int, non-pad source tokens per row. Returns [B] int32, in this module's
    `max_len` units (tokens after the start token, EOS included). fairseq's `max_len` excludes
    the EOS and uses the batch's padded source length; pass `b + 1` and per-row lengths to get
    its per-sentence budget. `limit` should be at most the decoder position-table size (the
    start token plus `max_len - 1` fed tokens use positions 0..max_len-1).
    Computed in float32, so `a * src_len` landing within ~1e-6 of an integer may round.
    """
    length_B = jnp.floor(a * jnp.asarray(src_lengths_B, jnp.float32) + b).astype(jnp.int32)
    return jnp.clip(length_B, 1, limit)


def _batch_size(cache, start_ids) -> int:
    leaves = jax.tree.leaves(cache)
    if leaves:
        return int(leaves[0].shape[0])
    if np.ndim(start_ids) == 1:
        return int(np.shape(start_ids)[0])
    raise ValueError(
        "cannot tell the batch size: the cache has no leaves and start_ids is a scalar; "
        "pass start_ids as a [batch] array"
    )


def _per_row(value, batch: int, name: str) -> jax.Array:
    arr = jnp.asarray(value, jnp.int32)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != batch):
        raise ValueError(
            f"{name} has shape {arr.shape}; pass an int or a [batch={batch}] int array"
        )
    return jnp.broadcast_to(arr, (batch,))


def _static_steps(max_len, max_steps: int | None) -> int:
    """Output width T: `max_steps` if given, else max(max_len), which must then be concrete."""
    if max_steps is not None:
        return int(max_steps)
    try:
        return int(np.max(np.asarray(max_len)))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as e:
        raise ValueError(
            "max_len is a traced array, so the output width is unknown under jit; pass "
            "max_steps=<static int >= max(max_len)> (e.g. the position-table size)"
        ) from e


def _check_cache(cache, rows: int) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(cache):
        if leaf.ndim == 0 or leaf.shape[0] != rows:
            raise ValueError(
                f"cache leaf {jax.tree_util.keystr(path)} has shape {leaf.shape}; every leaf "
                f"needs the batch ({rows}) as its leading dim (keep step counters per row)"
            )


def compiler_options() -> dict[str, str]:
    """XLA options for jitting a search (`jax.jit(..., compiler_options=...)`).

    On CPU, XLA's default hands the LM head to YNNPACK fused with the log-softmax's max
    reduction and the bias, which ran ~2.5x slower than the plain matmul, and the layer
    projections likewise; individual dots only measured 25-40% faster generation
    (benchmarks/mbart_vs_torch.py). Training keeps the default, which was faster there.
    """
    if jax.default_backend() == "cpu":
        return {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    return {}


def force_tokens(scores_NxV: jax.Array, token_N: jax.Array, where_N: jax.Array) -> jax.Array:
    """Rows where `where_N`: every score -inf except `token_N`, which becomes 0 (HF forcing)."""
    vocab = scores_NxV.shape[-1]
    is_token_NxV = jnp.arange(vocab, dtype=jnp.int32)[None, :] == token_N[:, None]
    forced_NxV = jnp.where(is_token_NxV, 0.0, -jnp.inf).astype(scores_NxV.dtype)
    return jnp.where(where_N[:, None], forced_NxV, scores_NxV)


def _apply_forcing(scores_NxV, step, max_len_N, forced_bos_N, forced_eos_id):
    # Same order as HF's processor list: forced BOS, then forced EOS (EOS wins if both apply).
    n = scores_NxV.shape[0]
    if forced_bos_N is not None:
        scores_NxV = force_tokens(scores_NxV, forced_bos_N, jnp.full((n,), step == 0))
    if forced_eos_id is not None:
        eos_N = jnp.full((n,), forced_eos_id, jnp.int32)
        scores_NxV = force_tokens(scores_NxV, eos_N, step == max_len_N - 1)
    return scores_NxV


# ---------------------------------------------------------------------------------------------
# Greedy
# ---------------------------------------------------------------------------------------------


class GreedyState(NamedTuple):
    step: jax.Array  # scalar int32: index of the token being generated
    tokens_BxT: jax.Array  # int32, pad-filled
    last_B: jax.Array  # int32: token fed at this step
    finished_B: jax.Array  # bool
    cache: Any


def greedy_search(
    step_fn: StepFn,
    cache,
    *,
    start_ids_B,
    max_len,
    eos_id: int,
    pad_id: int,
    forced_bos_id=None,
    forced_eos_id: int | None = None,
    max_steps: int | None = None,
) -> jax.Array:
    """Argmax decoding, HF `generate(num_beams=1, do_sample=False)` semantics.

    start_ids_B: int or [B] int (decoder start: cc25 `[tgt]`, mBART-50 `</s>`).
    max_len: int or [B] int, tokens generated per row (see module doc); max_steps: static
      output width when max_len is traced. forced_bos_id: int or [B] int forced as the first
      generated token (mBART-50 `[tgt]`). forced_eos_id: token forced at each row's last step.
    Returns tokens: [B, T] int32, the tokens after the start token, pad after EOS.
    """
    batch = _batch_size(cache, start_ids_B)
    forced_bos_B = None if forced_bos_id is None else _per_row(forced_bos_id, batch, "forced_bos")

    def choose(logits_BxV, step, max_len_B):
        logits_BxV = _apply_forcing(logits_BxV, step, max_len_B, forced_bos_B, forced_eos_id)
        return jnp.argmax(logits_BxV, axis=-1)

    return _one_token_per_step(
        step_fn, cache, choose, start_ids_B=start_ids_B, max_len=max_len, eos_id=eos_id,
        pad_id=pad_id, max_steps=max_steps,
    )  # fmt: skip


def _one_token_per_step(
    step_fn: StepFn, cache, choose, *, start_ids_B, max_len, eos_id, pad_id, max_steps
) -> jax.Array:
    """The loop greedy and sampling share: `choose(logits_BxV f32, step, max_len_B) -> [B]`
    picks each row's next token; finished rows get pad; a row ends at EOS or its max_len."""
    batch = _batch_size(cache, start_ids_B)
    _check_cache(cache, batch)
    steps = _static_steps(max_len, max_steps)
    max_len_B = _per_row(max_len, batch, "max_len")

    def cond(s: GreedyState):
        return (s.step < steps) & ~jnp.all(s.finished_B)

    def body(s: GreedyState) -> GreedyState:
        logits_BxV, cache = step_fn(s.last_B, s.cache)
        next_B = choose(logits_BxV.astype(jnp.float32), s.step, max_len_B).astype(jnp.int32)
        next_B = jnp.where(s.finished_B, pad_id, next_B)
        tokens_BxT = jax.lax.dynamic_update_slice(s.tokens_BxT, next_B[:, None], (0, s.step))
        finished_B = s.finished_B | (next_B == eos_id) | (s.step + 1 >= max_len_B)
        return GreedyState(s.step + 1, tokens_BxT, next_B, finished_B, cache)

    init = GreedyState(
        step=jnp.int32(0),
        tokens_BxT=jnp.full((batch, steps), pad_id, jnp.int32),
        last_B=_per_row(start_ids_B, batch, "start_ids"),
        finished_B=max_len_B <= 0,
        cache=cache,
    )
    return jax.lax.while_loop(cond, body, init).tokens_BxT


# ---------------------------------------------------------------------------------------------
# Sampling (temperature, top-k, top-p)
# ---------------------------------------------------------------------------------------------


def filter_logits(logits_NxV: jax.Array, *, temperature=1.0, top_k=0, top_p=1.0) -> jax.Array:
    """HF's TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper, in that order.

    Scores divided by temperature (> 0); top_k > 0 keeps the tokens scoring at least the
    k-th best (ties kept); top_p < 1 sorts ascending and drops every token whose cumulative
    probability is <= 1 - top_p, keeping the last (best) one: the smallest set whose mass
    reaches top_p. Dropped tokens get -inf. All three may be traced. logits: [N, V] f32.
    """
    vocab = logits_NxV.shape[-1]
    scores_NxV = logits_NxV.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    top_k = jnp.asarray(top_k, jnp.int32)
    kth_N = jnp.sort(scores_NxV, axis=-1)[:, ::-1][:, jnp.clip(top_k, 1, vocab) - 1]
    scores_NxV = jnp.where((top_k > 0) & (scores_NxV < kth_N[:, None]), -jnp.inf, scores_NxV)
    order_NxV = jnp.argsort(scores_NxV, axis=-1)  # ascending, as HF's sort
    sorted_NxV = jnp.take_along_axis(scores_NxV, order_NxV, axis=-1)
    cum_NxV = jnp.cumsum(jax.nn.softmax(sorted_NxV, axis=-1), axis=-1)
    drop_sorted_NxV = (cum_NxV <= 1 - jnp.asarray(top_p, jnp.float32)).at[:, -1].set(False)
    rows_N1 = jnp.arange(scores_NxV.shape[0])[:, None]
    drop_NxV = jnp.zeros_like(drop_sorted_NxV).at[rows_N1, order_NxV].set(drop_sorted_NxV)
    return jnp.where(drop_NxV, -jnp.inf, scores_NxV)


def sample_search(
    step_fn: StepFn,
    cache,
    *,
    start_ids_B,
    max_len,
    rng: jax.Array,
    eos_id: int,
    pad_id: int,
    temperature: float | jax.Array = 1.0,
    top_k: int | jax.Array = 0,
    top_p: float | jax.Array = 1.0,
    max_steps: int | None = None,
) -> jax.Array:
    """Ancestral sampling, HF `generate(do_sample=True, temperature, top_k, top_p)` semantics.

    Each step draws from softmax(`filter_logits`(logits)) with key fold_in(rng, step); a
    temperature of 0 takes the argmax instead (greedy_search's tokens). Other arguments and
    the result as `greedy_search`: tokens [B, T] int32, the tokens after the start token,
    pad after EOS. HF's defaults differ: its generation config defaults top_k to 50.
    """
    temperature = jnp.asarray(temperature, jnp.float32)
    greedy = temperature <= 0
    safe_temperature = jnp.where(greedy, 1.0, temperature)

    def choose(logits_BxV, step, max_len_B):
        scores_BxV = filter_logits(
            logits_BxV, temperature=safe_temperature, top_k=top_k, top_p=top_p
        )
        drawn_B = jax.random.categorical(jax.random.fold_in(rng, step), scores_BxV, axis=-1)
        return jnp.where(greedy, jnp.argmax(logits_BxV, axis=-1), drawn_B)

    return _one_token_per_step(
        step_fn, cache, choose, start_ids_B=start_ids_B, max_len=max_len, eos_id=eos_id,
        pad_id=pad_id, max_steps=max_steps,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Beam search (the per-step update is zoo.decode.beams.beam_update)
# ---------------------------------------------------------------------------------------------


class BeamState(NamedTuple):
    step: jax.Array  # scalar int32
    beams: Beams  # R = batch (beam search) or batch*groups (diverse), K beams each
    last_N: jax.Array  # [B*beam_size] int32 tokens to feed
    cache: Any  # leaves [B*beam_size, ...]


def _validate_beam_args(beam_size: int, early_stopping) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size={beam_size}; use 1 or more")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping={early_stopping!r}; use True, False or 'never'")


def beam_search(
    step_fn: StepFn,
    cache,
    *,
    start_ids_B,
    beam_size: int,
    max_len,
    eos_id: int,
    pad_id: int,
    length_penalty: float | jax.Array = 1.0,
    early_stopping: EarlyStopping = False,
    forced_bos_id=None,
    forced_eos_id: int | None = None,
    max_steps: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Beam search with HF `generate(num_beams=K)` semantics (see module doc).

    Arguments as `greedy_search`; early_stopping (static): False (HF default), True (mBART-50
    checkpoints' generation config), or "never"; length_penalty may be traced.
    Returns (sequences [B, K, T] int32, pad after EOS; scores [B, K] f32, best first), the
    finished hypotheses: HF's `sequences` / `sequences_scores` with num_return_sequences=K.
    """
    return diverse_beam_search(
        step_fn,
        cache,
        start_ids_B=start_ids_B,
        beam_size=beam_size,
        num_groups=1,
        diversity_strength=0.0,
        max_len=max_len,
        eos_id=eos_id,
        pad_id=pad_id,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        forced_bos_id=forced_bos_id,
        forced_eos_id=forced_eos_id,
        max_steps=max_steps,
    )


# ---------------------------------------------------------------------------------------------
# Diverse beam search (Vijayakumar et al. 2018, Hamming diversity)
# ---------------------------------------------------------------------------------------------


def diverse_beam_search(
    step_fn: StepFn,
    cache,
    *,
    start_ids_B,
    beam_size: int,
    num_groups: int,
    diversity_strength: float | jax.Array,
    max_len,
    eos_id: int,
    pad_id: int,
    length_penalty: float | jax.Array = 1.0,
    early_stopping: EarlyStopping = False,
    forced_bos_id=None,
    forced_eos_id: int | None = None,
    max_steps: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Diverse beam search: `num_groups` beam searches of beam_size/num_groups beams each.

    At every step the groups are processed in order, and group g's log-probs get
    `-diversity_strength * count(token)` over the tokens the groups before it chose at this
    step (Hamming diversity). As in HF's group beam search, the count runs over the tokens of
    the live beams those groups keep (fairseq counts all 2K candidates of each group), the
    penalised log-probs accumulate into beam scores, and forcing overrides the penalty. A
    group that has finished (its K/G hypotheses can no longer change) stops counting.
    Groups own contiguous beams (HF; fairseq strides them g, g+G, ...): beams
    [g*K/G, (g+1)*K/G) are group g's finished hypotheses, best first within the group.
    With strength 0 each group is exactly `beam_search(beam_size=K/G)`, and group 0 always is.
    Returns (sequences [B, beam_size, T] int32, scores [B, beam_size] f32).
    """
    _validate_beam_args(beam_size, early_stopping)
    if num_groups < 1 or beam_size % num_groups:
        raise ValueError(
            f"num_groups={num_groups} does not divide beam_size={beam_size}; pick a divisor"
        )
    batch = _batch_size(cache, start_ids_B)
    _check_cache(cache, batch)
    steps = _static_steps(max_len, max_steps)
    max_len_B = _per_row(max_len, batch, "max_len")
    k, g_count = beam_size, num_groups
    kg = k // g_count
    max_len_Ng = jnp.repeat(max_len_B, kg)  # one group's rows, b-major
    max_len_BG = jnp.repeat(max_len_B, g_count)  # rows of the beam blocks: (b, g)
    forced_bos_Ng = (
        None
        if forced_bos_id is None
        else jnp.repeat(_per_row(forced_bos_id, batch, "forced_bos_id"), kg)
    )
    update = functools.partial(
        beam_update, eos_id=eos_id, length_penalty=length_penalty, early_stopping=early_stopping
    )

    def cond(s: BeamState):
        return (s.step < steps) & ~jnp.all(
            rows_finished(s.beams, s.step, max_len_BG, early_stopping)
        )

    def body(s: BeamState) -> BeamState:
        logits_NxV, cache = step_fn(s.last_N, s.cache)
        vocab = logits_NxV.shape[-1]
        logp_NxV = jax.nn.log_softmax(logits_NxV.astype(jnp.float32), axis=-1)
        logp_BxGxKgxV = logp_NxV.reshape(batch, g_count, kg, vocab)
        beams_BxG = jax.tree.map(lambda x: x.reshape((batch, g_count) + x.shape[1:]), s.beams)
        # A group already finished only idles along; its tokens should not push others away.
        idle_BxG = rows_finished(s.beams, s.step, max_len_BG, early_stopping)
        idle_BxG = idle_BxG.reshape(batch, g_count)
        new_groups, parents, tokens, counted = [], [], [], []
        for g in range(g_count):  # groups see the choices of the groups before them
            logp_BxKgxV = logp_BxGxKgxV[:, g]
            if g > 0:  # strength may be traced, so no Python test for 0
                chosen_BxM = jnp.concatenate(counted, axis=1)
                logp_BxKgxV = (
                    logp_BxKgxV - hamming_penalty(chosen_BxM, vocab, diversity_strength)[:, None, :]
                )
            # Forcing replaces whole rows, so it overrides the diversity penalty (HF order).
            logp_NgxV = _apply_forcing(
                logp_BxKgxV.reshape(batch * kg, vocab),
                s.step,
                max_len_Ng,
                forced_bos_Ng,
                forced_eos_id,
            )
            logp_BxKgxV = logp_NgxV.reshape(batch, kg, vocab)
            group = jax.tree.map(lambda x, g=g: x[:, g], beams_BxG)
            group, parent_BxKg, token_BxKg = update(group, logp_BxKgxV, s.step, max_len_B)
            new_groups.append(group)
            parents.append(parent_BxKg + g * kg)  # parent index within the item's K beams
            tokens.append(token_BxKg)
            # one_hot maps -1 to a zero row, so idle groups add no counts.
            counted.append(jnp.where(idle_BxG[:, g, None], -1, token_BxKg))

        beams = jax.tree.map(
            lambda *xs: jnp.stack(xs, axis=1).reshape((batch * g_count,) + xs[0].shape[1:]),
            *new_groups,
        )
        parent_BxK = jnp.concatenate(parents, axis=1)
        last_N = jnp.concatenate(tokens, axis=1).reshape(-1)
        return BeamState(s.step + 1, beams, last_N, gather_rows(cache, parent_BxK))

    init = BeamState(
        step=jnp.int32(0),
        beams=init_beams(batch * g_count, kg, steps, pad_id),
        last_N=jnp.repeat(_per_row(start_ids_B, batch, "start_ids"), k),
        cache=repeat_rows(cache, k),
    )
    beams = jax.lax.while_loop(cond, body, init).beams
    seqs_BxKxT = beams.done_seqs_RxKxT.reshape(batch, k, steps)
    scores_BxK = beams.done_scores_RxK.reshape(batch, k)
    return seqs_BxKxT, scores_BxK
