"""The Task contract: what a model family gives the training loop (`zoo.train.loop`).

The loop knows tasks only through this interface; it never imports a model. A task turns a
recipe's config into: a model and its init inputs, a loss, eval metrics, the batch layout
with logical axes, FLOPs per batch, and the train/eval datasets. Every family's tasks are
listed by name in `zoo.tasks`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from zoo.data import pipeline, plans
from zoo.data.sources import scan_shared

Batch = Mapping[str, Any]  # feature name -> array [batch, ...]
Params = Any


class Task(abc.ABC):
    """One model family's glue for the loop; `name` is what recipes put in task.name."""

    name: str = ""

    def __init__(self, config):
        self.config = config

    @abc.abstractmethod
    def init_variables(self, rng: jax.Array, batch: Batch) -> Any:
        """model.init(...) on a batch of the right shapes: boxed variables {'params': ...}."""

    @abc.abstractmethod
    def loss(
        self,
        params: Params,
        batch: Batch,
        rng: jax.Array,
        *,
        train: bool,
        step: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Returns (loss summed over the batch, aux).

        `step` is the optimizer step being taken (a traced int32 scalar) in training and
        None in eval, for objectives that change over training (e.g. annealed mixtures).

        aux must hold 'weight': the number of loss terms (e.g. target tokens) in
        the batch, so the loop can normalise across microbatches and devices
        exactly. Other aux entries are sums too (e.g. 'correct').
        """

    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        """Summed eval statistics; the loop divides every key by 'weight'."""
        loss, aux = self.loss(params, batch, jax.random.PRNGKey(0), train=False)
        return {"loss": loss, **aux}

    @abc.abstractmethod
    def batch_axes(self) -> dict[str, tuple[str | None, ...]]:
        """Logical axes of each batch feature, e.g. {'inputs': ('batch', 'length')}."""

    @abc.abstractmethod
    def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """A zero batch of the largest shape the data produces (for init and AOT compile)."""

    @abc.abstractmethod
    def flops_per_batch(self, batch_shapes: Mapping[str, tuple[int, ...]]) -> float:
        """Model FLOPs (forward + backward) of one train step on a batch of these shapes."""

    @abc.abstractmethod
    def dataset(
        self,
        split: str,
        *,
        seed: int,
        process_index: int,
        process_count: int,
        batch_multiple: int,
        train: bool,
    ) -> Any:
        """A grain IterDataset of process-local batches (checkpointable iterator)."""

    def batched(
        self,
        source,
        *,
        seed: int,
        process_index: int,
        process_count: int,
        batch_multiple: int,
        train: bool,
        pad_id: int = 0,
        features: tuple[str, ...] = ("inputs", "targets"),
    ) -> Any:
        """`features` (default `inputs`/`targets`) of `source`'s examples batched as
        config.data says (train: shuffled, repeated; eval: one ordered pass)."""
        d = self.config.data
        batching = pipeline.BatchingConfig(
            mode=d.mode,
            global_batch_size=d.global_batch_size,
            max_length=d.max_length,
            tokens_per_batch=d.tokens_per_batch,
            bucket_boundaries=tuple(d.bucket_boundaries),
            batch_multiple=batch_multiple,
            pad_id=pad_id,
        )
        features = list(features)
        lengths = scan_shared(
            len(source),
            lambda rows: plans.feature_lengths(source, features, rows),
            process_index,
            process_count,
        )
        return pipeline.make_dataset(
            source,
            features,
            batching,
            seed=seed,
            shuffle=train,
            num_epochs=None if train else 1,
            process_index=process_index,
            process_count=process_count,
            lengths=lengths,
        )

    def finish_init(self, params: Params) -> Params:
        """Parameters after init (random or train.init_from), before training starts.

        For tasks whose initial parameters depend on files or on other parameters (e.g. a
        frozen pretrained base model and scalers fitted to it). Return the same tree
        structure; leaves may be jax or NumPy arrays. Not called when a run resumes."""
        return params

    def prepare_data(self) -> None:
        """Builds on-disk datasets; the loop calls it on process 0 before the others read."""
        return None

    def tokens_in_batch(self, batch: Batch) -> int:
        """Non-pad tokens in a (process-local) batch, for throughput."""
        return int(
            sum(
                np.count_nonzero(np.asarray(v))
                for k, v in batch.items()
                if k in self.batch_axes() and not k.endswith(("_segment_ids", "_positions"))
            )
        )

    def positions_in_batch(self, batch: Batch) -> tuple[int, int]:
        """(real, padded) sequence positions in a (process-local) batch: `padding_fraction`
        in metrics.jsonl is 1 - real / padded. Default: every feature with a 'length' axis,
        a position being real when it is not `self.pad_id` (0 if the task has none)."""
        pad = getattr(self, "pad_id", 0)
        real = total = 0
        for k, axes in self.batch_axes().items():
            if k in batch and "length" in axes and not k.endswith(("_segment_ids", "_positions")):
                v = np.asarray(batch[k])
                real += int(np.count_nonzero(v != pad))
                total += v.size
        return real, total

    def describe(self) -> str:
        return self.name
