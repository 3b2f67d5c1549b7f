"""Data layer: TFDS sources and grain pipelines (pad / bucket / pack batching)."""

from zoo.data.pipeline import (
    BatchingConfig,
    DataStats,
    bucket_batch_sizes,
    dropped_examples,
    make_dataset,
    required_multiple,
)
from zoo.data.synthetic import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    ReverseConfig,
    ReverseSequence,
    load_source,
    reverse_builder,
)

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "BatchingConfig",
    "DataStats",
    "ReverseConfig",
    "ReverseSequence",
    "bucket_batch_sizes",
    "dropped_examples",
    "load_source",
    "make_dataset",
    "required_multiple",
    "reverse_builder",
]

from zoo.data.gettext import GettextConfig, GettextParallel, gettext_builder, gettext_stats  # noqa: E402
from zoo.data.tokenizer import (  # noqa: E402
    CC25_LANGUAGES,
    MBART50_LANGUAGES,
    MBartTokenizer,
    shift_tokens_right,
    train_sentencepiece,
)

__all__ += [
    "CC25_LANGUAGES",
    "MBART50_LANGUAGES",
    "GettextConfig",
    "GettextParallel",
    "MBartTokenizer",
    "gettext_builder",
    "gettext_stats",
    "shift_tokens_right",
    "train_sentencepiece",
]

from zoo.data.lexicon import Lexicon, from_muse_file, induce_from_parallel  # noqa: E402
from zoo.data.noising import (  # noqa: E402
    code_switch,
    csr_example,
    denoise,
    example_rng,
    permute_sentences,
    word_start_table,
)

__all__ += [
    "Lexicon",
    "code_switch",
    "csr_example",
    "denoise",
    "example_rng",
    "from_muse_file",
    "induce_from_parallel",
    "permute_sentences",
    "word_start_table",
]
