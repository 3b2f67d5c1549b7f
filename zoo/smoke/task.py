"""Smoke task: reverse a token sequence with the core's encoder-decoder (`zoo.nn`).

Small, real and learnable in a minute on a CPU, so the loop can be proven end
to end on any machine. Batches: `inputs`, `targets` [B, L]
int32 (0 = pad), plus `*_segment_ids` / `*_positions` when packed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from zoo.data.sources import load_source
from zoo.nn import encoder_decoder
from zoo.smoke import data as reverse_data
from zoo.smoke.data import BOS_ID, PAD_ID
from zoo.train.losses import token_loss
from zoo.train.task import Task


def model_config(config) -> encoder_decoder.TransformerConfig:
    c = encoder_decoder.TransformerConfig(**config.model.to_dict())
    c.validate()  # a clear error now rather than inside the first jitted step
    return c


def positions_from_end(ids_BxL: jax.Array, segment_ids_BxL=None) -> jax.Array:
    """Position of each token counted from the end of its sequence (or packed segment).

    With encoder positions counted this way, target token t of the reversed
    sequence sits at encoder position t + 1 whatever the length, so reversal is
    a fixed-offset alignment that a small model learns in a few hundred steps
    (from the start, the offset depends on each sequence's length and learning
    takes thousands). Pads get 0.
    """
    valid = ids_BxL != PAD_ID
    if segment_ids_BxL is None:
        segment_ids_BxL = valid.astype(jnp.int32)
    same = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
    idx = jnp.arange(ids_BxL.shape[1])
    later = same & (idx[None, None, :] > idx[None, :, None])  # tokens after me, same segment
    return jnp.where(valid, later.sum(-1), 0).astype(jnp.int32)


def shift_right(targets_BxL: jax.Array, bos_id: int, positions_BxL=None) -> jax.Array:
    """Decoder inputs: BOS then targets[:-1]; with packing, BOS at each segment start."""
    shifted = jnp.pad(targets_BxL, ((0, 0), (1, 0)), constant_values=bos_id)[:, :-1]
    if positions_BxL is not None:
        shifted = jnp.where(positions_BxL == 0, bos_id, shifted)
    return shifted


class ReverseTask(Task):
    name = "reverse"

    def __init__(self, config):
        super().__init__(config)
        self.model = encoder_decoder.EncoderDecoder(model_config(config))

    # --- model ---------------------------------------------------------------
    def _logits(self, params, batch, rng, train: bool):
        inputs, targets = batch["inputs"], batch["targets"]
        packed = "targets_positions" in batch
        dec_in = shift_right(targets, BOS_ID, batch["targets_positions"] if packed else None)
        return self.model.apply(
            {"params": params},
            inputs,
            inputs != PAD_ID,
            dec_in,
            decoder_attention_mask=targets != PAD_ID,
            input_positions=positions_from_end(inputs, batch.get("inputs_segment_ids")),
            input_segment_ids=batch.get("inputs_segment_ids"),
            decoder_positions=batch.get("targets_positions"),
            decoder_segment_ids=batch.get("targets_segment_ids"),
            deterministic=not train,
            rngs={"dropout": rng} if train else {},
        )

    def init_variables(self, rng, batch):
        inputs, targets = batch["inputs"], batch["targets"]
        return self.model.init(
            {"params": rng},
            inputs,
            inputs != PAD_ID,
            targets,
            input_positions=positions_from_end(inputs),
        )

    def loss(self, params, batch, rng, *, train, step=None):
        logits = self._logits(params, batch, rng, train)
        return token_loss(logits, batch["targets"], PAD_ID, self.config.task.label_smoothing)

    # --- batch layout ----------------------------------------------------------
    def batch_axes(self):
        axes = {"inputs": ("batch", "length"), "targets": ("batch", "length")}
        if self.config.data.mode == "pack":
            for f in ("inputs", "targets"):
                axes[f"{f}_segment_ids"] = ("batch", "length")
                axes[f"{f}_positions"] = ("batch", "length")
        return axes

    def max_length(self) -> int:
        d = self.config.data
        return max(d.bucket_boundaries) if d.mode == "bucket" else d.max_length

    def example_batch(self, batch_size):
        length = self.max_length()
        return {k: np.zeros((batch_size, length), np.int32) for k in self.batch_axes()}

    def flops_per_batch(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
        b, s = batch_shapes["inputs"]
        t = batch_shapes["targets"][1]
        return encoder_decoder.count_flops(self.model.config, b, s, t)

    # --- data ------------------------------------------------------------------
    def builder(self):
        t = self.config.task
        data_dir = os.path.expanduser(t.data_dir)
        return reverse_data.reverse_builder(
            data_dir,
            vocab_size=self.config.model.vocab_size,
            min_length=t.min_length,
            max_length=t.max_length,
            num_train=t.num_train,
            num_validation=t.num_validation,
            seed=t.data_seed,
        )

    def prepare_data(self):
        self.builder()

    def dataset(self, split, *, seed, process_index, process_count, batch_multiple, train):
        return self.batched(
            load_source(self.builder(), split),
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            batch_multiple=batch_multiple,
            train=train,
        )
