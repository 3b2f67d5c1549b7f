"""Per-family glue for the loop. Importing this registers every task."""

from zoo.tasks import csr, denovo, reverse, translation  # noqa: F401  (registers every task)
from zoo.tasks.base import Task, get_task, register  # noqa: F401
