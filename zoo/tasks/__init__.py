"""Per-family glue for the loop. Importing this registers every task."""

from zoo.tasks import reverse  # noqa: F401  (registers "reverse")
from zoo.tasks.base import Task, get_task, register  # noqa: F401
