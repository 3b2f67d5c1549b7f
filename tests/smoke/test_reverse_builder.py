"""The synthetic reverse-task TFDS builder: content, split sizes, determinism, no TensorFlow."""

import sys

import numpy as np
import pytest

from zoo.data import load_source
from zoo.smoke.data import EOS_ID, FIRST_CONTENT_ID, generate_examples, reverse_builder


def _examples(builder, split):
    source = load_source(builder, split)
    return [source[i] for i in range(len(source))]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_targets_are_reversed_inputs_plus_eos(reverse_data, split):
    config = reverse_data.builder_config
    examples = _examples(reverse_data, split)
    assert len(examples) == (config.num_train if split == "train" else config.num_validation)
    for example in examples:
        inputs, targets = example["inputs"], example["targets"]
        assert inputs.dtype == np.int32 and targets.dtype == np.int32
        assert config.min_length <= len(inputs) <= config.max_length
        assert inputs[-1] == EOS_ID
        np.testing.assert_array_equal(targets, np.append(inputs[:-1][::-1], EOS_ID))
        content = inputs[:-1]
        assert content.min() >= FIRST_CONTENT_ID and content.max() < config.vocab_size


def test_stored_order_is_generation_order(reverse_data):
    generated = generate_examples(reverse_data.builder_config, split_index=0)
    for (key, expected), stored in zip(generated, _examples(reverse_data, "train"), strict=True):
        np.testing.assert_array_equal(stored["inputs"], expected["inputs"], err_msg=str(key))


def test_lengths_cover_the_whole_range_so_bucketing_matters(reverse_data):
    config = reverse_data.builder_config
    lengths = {len(example["inputs"]) for example in _examples(reverse_data, "train")}
    assert lengths == set(range(config.min_length, config.max_length + 1))


def test_same_seed_gives_identical_data_in_another_directory(reverse_data, tmp_path):
    config = reverse_data.builder_config
    again = reverse_builder(
        tmp_path,
        vocab_size=config.vocab_size,
        min_length=config.min_length,
        max_length=config.max_length,
        num_train=config.num_train,
        num_validation=config.num_validation,
        seed=config.seed,
    )
    for split in ("train", "validation"):
        for a, b in zip(_examples(reverse_data, split), _examples(again, split), strict=True):
            np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_different_seed_gives_different_data(tmp_path):
    a = _examples(reverse_builder(tmp_path, num_train=20, num_validation=5, seed=1), "train")
    b = _examples(reverse_builder(tmp_path, num_train=20, num_validation=5, seed=2), "train")
    assert any(
        len(x["inputs"]) != len(y["inputs"]) or (x["inputs"] != y["inputs"]).any()
        for x, y in zip(a, b)
    )


def test_parameter_sets_never_share_a_directory_and_preparing_is_idempotent(tmp_path):
    small = reverse_builder(tmp_path, num_train=10, num_validation=3)
    large = reverse_builder(tmp_path, num_train=25, num_validation=3)
    assert small.data_dir != large.data_dir
    assert len(load_source(small, "train")) == 10
    assert len(load_source(large, "train")) == 25
    files = sorted(p for p in tmp_path.rglob("*.array_record*"))
    mtimes = [p.stat().st_mtime_ns for p in files]
    again = reverse_builder(tmp_path, num_train=10, num_validation=3)
    assert again.data_dir == small.data_dir
    assert [p.stat().st_mtime_ns for p in files] == mtimes


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"vocab_size": 3}, "vocab_size=3"),
        ({"min_length": 1}, "min_length=1"),
        ({"min_length": 9, "max_length": 8}, "min_length=9"),
        ({"num_train": 0}, "num_train=0"),
    ],
)
def test_invalid_parameters_raise_naming_the_value(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        reverse_builder(tmp_path, **kwargs)


def test_preparing_and_reading_do_not_import_tensorflow(tmp_path):
    """In a fresh process: another test of the same pytest worker may import TensorFlow."""
    import subprocess

    code = (
        "import sys\n"
        "from zoo.data.sources import load_source\n"
        "from zoo.smoke.data import reverse_builder\n"
        f"b = reverse_builder({str(tmp_path)!r}, vocab_size=16, min_length=2, max_length=6,"
        " num_train=20, num_validation=4, seed=0)\n"
        "assert load_source(b, 'train')[0]['inputs'].size > 0\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
