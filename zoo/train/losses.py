"""Losses shared by tasks."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def label_smoothed_cross_entropy(
    logits_BxLxV: jax.Array, targets_BxL: jax.Array, weights_BxL: jax.Array, smoothing: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """fairseq's label_smoothed_cross_entropy, summed over weighted positions.

    loss = (1 - eps - eps_i) * nll + eps_i * sum_v(-log p_v), eps_i = eps / (V - 1)
    (fairseq/criterions/label_smoothed_cross_entropy.py). Returns (loss_sum,
    nll_sum); both f32 scalars. logits: [batch, length, vocab]; targets,
    weights: [batch, length].
    """
    logp = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets_BxL[..., None], axis=-1)[..., 0]
    w = weights_BxL.astype(jnp.float32)
    if smoothing:
        eps_i = smoothing / (logits_BxLxV.shape[-1] - 1)
        smooth = -logp.sum(-1)
        loss = (1.0 - smoothing - eps_i) * nll + eps_i * smooth
    else:
        loss = nll
    return (loss * w).sum(), (nll * w).sum()


def token_loss(
    logits_BxLxV: jax.Array, targets_BxL: jax.Array, pad_id: int, smoothing: float = 0.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A task's (loss sum, aux) for next-token targets: what Task.loss returns.

    Weights are the non-pad targets; aux holds 'weight' (their count), 'nll' and
    'accuracy' (sums; the loop divides by 'weight').
    """
    weights = targets_BxL != pad_id
    loss, nll = label_smoothed_cross_entropy(logits_BxLxV, targets_BxL, weights, smoothing)
    correct = ((logits_BxLxV.argmax(-1) == targets_BxL) & weights).sum()
    return loss, {"weight": weights.sum(), "nll": nll, "accuracy": correct}
