"""Per-family glue for the loop. Importing this registers every task."""

from zoo.tasks import (  # noqa: F401  (registers every task)
    csr,
    denovo,
    reverse,
    tokenizer_transfer,
    translation,
)
from zoo.tasks.base import Task, get_task, register  # noqa: F401
