"""Datasets whose batch number `step` is a pure function of the step, built one step ahead.

For batches that cannot be planned from example lengths (e.g. ZeTT's: a tokenizer is sampled
per step and the batch is tokenized with it). Because batch `step` depends only on `step`
(and the seeds inside `make_batch`), the iterator state is just the step and a resumed run
sees exactly the batches it would have seen. While the model runs on batch `step`, a
background thread builds batch `step + 1`.

    ds = StepBatches(lambda step: {...} or None)   # None: the dataset has ended
    it = iter(ds); batch = next(it); it.get_state()  # {"step": 1}
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Batch = dict[str, Any]


class StepBatches:
    """An iterable of `make_batch(0), make_batch(1), ...` until one returns None."""

    def __init__(self, make_batch: Callable[[int], Batch | None]):
        self.make_batch = make_batch

    def __iter__(self) -> StepIterator:
        return StepIterator(self.make_batch)


class StepIterator:
    """Checkpointable iterator over a `StepBatches`: state {"step": the next batch}."""

    def __init__(self, make_batch: Callable[[int], Batch | None]):
        self._make_batch = make_batch
        self.step = 0
        self._prefetch: tuple[threading.Thread, int, dict] | None = None

    def get_state(self) -> dict[str, Any]:
        return {"step": self.step}

    def set_state(self, state: dict[str, Any]) -> None:
        if set(state) != {"step"}:
            raise ValueError(
                f"iterator state {state} is not a step iterator's; expected the key 'step'"
            )
        self._join()
        self.step = int(state["step"])

    def close(self) -> None:
        self._join()

    def _join(self) -> None:
        if self._prefetch is not None:
            self._prefetch[0].join()
            self._prefetch = None

    def _start(self, step: int) -> None:
        box: dict[str, Any] = {}

        def work():
            try:
                box["batch"] = self._make_batch(step)
            except BaseException as e:  # re-raised in __next__
                box["error"] = e

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self._prefetch = (thread, step, box)

    def __next__(self) -> Batch:
        if self._prefetch is None or self._prefetch[1] != self.step:
            self._join()
            self._start(self.step)
        thread, _, box = self._prefetch
        thread.join()
        self._prefetch = None
        if "error" in box:
            raise box["error"]
        batch = box["batch"]
        if batch is None:
            raise StopIteration
        self.step += 1
        self._start(self.step)  # the next batch is built while the model runs
        return batch

    def __iter__(self) -> StepIterator:
        return self
