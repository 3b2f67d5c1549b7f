"""Parallel text for the mBART tasks: (source, target) sentence pairs of a split.

`task.corpus` picks the corpus:
- "gettext": the catalogs under task.locale_dir (`zoo.data.gettext`, no TensorFlow).
- "tfds:NAME" (e.g. tfds:wmt16_translate/ro-en): a TFDS catalog dataset, whose builder needs
  TensorFlow (`pip install -e '.[tfds-catalog]'`) and downloads once, with network, into
  task.data_dir.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow_datasets as tfds

from zoo.data import gettext

# Fields of a task config that say where the text comes from (other tasks copy them, e.g.
# ZeTT's task passes them to the base model's translation task).
DATA_KEYS = ("corpus", "locale_dir", "data_dir", "src_text_lang", "tgt_text_lang")


def text_pairs(task_config, split: str) -> list[tuple[str, str]]:
    """(source, target) sentences of `split` from task_config.corpus (see the module doc)."""
    t = task_config
    corpus = t.get("corpus", "gettext")
    if corpus == "gettext":
        builder = gettext.gettext_builder(
            os.path.expanduser(t.data_dir),
            src_lang=t.src_text_lang,
            tgt_lang=t.tgt_text_lang,
            locale_dir=t.locale_dir,
        )
        ds = builder.as_data_source()[split]
    elif corpus.startswith("tfds:"):
        ds = tfds_catalog_source(corpus[len("tfds:") :], split, t.data_dir)
    else:
        raise ValueError(f"task.corpus={corpus!r}; use 'gettext' or 'tfds:NAME'")
    return [(_text(ex[t.src_text_lang]), _text(ex[t.tgt_text_lang])) for ex in ds]


def tfds_catalog_source(name: str, split: str, data_dir: str):
    """Random-access `split` of TFDS catalog dataset `name` (prepared once, with network)."""
    try:
        builder = tfds.builder(name, data_dir=os.path.expanduser(data_dir))
    except Exception as e:  # DatasetNotFoundError without TensorFlow's registered builders
        raise ValueError(
            f"TFDS catalog dataset {name!r} is not available ({type(e).__name__}); catalog "
            "builders such as wmt16_translate need TensorFlow: pip install -e '.[tfds-catalog]'"
        ) from e
    if not builder.is_prepared():
        builder.download_and_prepare(file_format="array_record")  # needs network, once
    return builder.as_data_source(split=split)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
