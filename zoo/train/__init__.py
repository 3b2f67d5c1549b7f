"""THE training loop, model-agnostic: every family trains through `loop.train`.

Part of the core: nothing here knows a model family; a family plugs in through the `Task`
contract (`zoo.train.task`), and `zoo.tasks` lists every family's tasks by name.

- `loop`: mesh -> sharded state -> data -> restore or init -> steps -> checkpoints, eval,
  preemption; read it top to bottom.
- `step`: the train state, sharded init and the jitted train / eval steps.
- `mesh`: the device mesh and THE logical-axis rules table.
- `optim`: AdamW, schedules, clipping, frozen parameters.
- `checkpoint`: orbax checkpoints with the data iterator's position; preemption.
- `metrics`: metrics.jsonl, TensorBoard, progress bar, MFU.
- `aot`: compile a recipe's step for a Cloud TPU topology without a TPU (`zoo compile`).
- `config`: recipes (`get_config(variant)`) and `--config.key=value` overrides.
- `losses`: losses that tasks share (label-smoothed cross-entropy).
- `main`: what `zoo train` runs.
"""
