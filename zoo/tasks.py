"""Every family's tasks by name: what a recipe's `task.name` selects.

The one place a new family adds its tasks (the core, `zoo.train`, knows none of them; `zoo
train` and `zoo compile` get `get_task` from `zoo.cli`).
"""

from __future__ import annotations

from zoo.lm.task import CausalLMTask
from zoo.mbart.tasks import CsrTask, DenoisingTask, TranslationTask
from zoo.peptide.task import DenovoTask
from zoo.smoke.task import ReverseTask
from zoo.train.task import Task
from zoo.zett.lm_task import LMTokenizerTransferTask
from zoo.zett.task import TokenizerTransferTask

TASKS: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (
        ReverseTask,
        TranslationTask,
        CsrTask,
        DenoisingTask,
        DenovoTask,
        TokenizerTransferTask,
        CausalLMTask,
        LMTokenizerTransferTask,
    )
}


def get_task(config) -> Task:
    """Builds the task named by config.task.name."""
    name = config.task.name
    if name not in TASKS:
        raise ValueError(f"task.name={name!r} is not a known task; known: {sorted(TASKS)}")
    return TASKS[name](config)
