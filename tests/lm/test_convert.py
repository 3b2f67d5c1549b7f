"""zoo.lm.convert: transformers directories in and out (bit for bit), clear errors for
checkpoints that do not fit their config.json, and `load` of every kind of source."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util
from safetensors.numpy import save_file

import zoo.lm
from zoo.io.weights import read_safetensors, read_transformers_weights
from zoo.lm.convert import config_from_hf, convert, read_hf, save_hf
from zoo.lm.generate import find_tokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "lm")
VARIANTS = ("llama3_gqa", "llama_linear", "mistral_window", "qwen2_tied")


def hf_state(folder: str) -> dict[str, np.ndarray]:
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    return read_transformers_weights(index if os.path.exists(index) else single)


def same_params(a, b) -> None:
    fa, fb = traverse_util.flatten_dict(a, sep="/"), traverse_util.flatten_dict(b, sep="/")
    assert sorted(fa) == sorted(fb)
    for key in fa:
        assert fa[key].dtype == fb[key].dtype == np.float32, key
        np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


@pytest.mark.parametrize("name", VARIANTS)
def test_export_round_trip_is_bitwise(name, tmp_path):
    src = os.path.join(FIXTURES, name)
    config, params = read_hf(src)
    save_hf(config, params, tmp_path)
    theirs, ours = hf_state(src), hf_state(str(tmp_path))
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert ours[key].tobytes() == theirs[key].tobytes(), key
    config2, params2 = read_hf(tmp_path)
    assert config2 == config
    same_params(params, params2)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["architectures"] == [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                    "qwen2": "Qwen2ForCausalLM"}[config.model_type]]  # fmt: skip


def test_export_shards_above_max_shard_bytes(tmp_path):
    config, params = read_hf(os.path.join(FIXTURES, "qwen2_tied"))
    save_hf(config, params, tmp_path, max_shard_bytes=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    assert all(os.path.getsize(tmp_path / s) < 20_000 + 17_000 for s in shards)  # + one tensor
    same_params(params, read_hf(tmp_path)[1])


def _copy(name: str, tmp_path) -> str:
    dst = os.path.join(tmp_path, name)
    shutil.copytree(os.path.join(FIXTURES, name), dst)
    return dst


def _edit_config(folder: str, **changes) -> None:
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        hf = json.load(f)
    hf.update(changes)
    with open(path, "w") as f:
        json.dump(hf, f)


def test_shape_that_does_not_fit_the_config_names_file_tensor_and_shapes(tmp_path):
    folder = _copy("llama_linear", tmp_path)  # sharded: the error names the shard
    _edit_config(folder, intermediate_size=50)
    with pytest.raises(ValueError) as e:
        read_hf(folder)
    message = str(e.value)
    assert "\n" not in message
    assert "model-0000" in message and ".safetensors" in message
    assert "model.layers.0.mlp.gate_proj.weight has shape [48, 32]" in message
    assert "makes it [50, 32]" in message


def test_missing_and_unknown_tensors_are_clear_errors(tmp_path):
    folder = _copy("qwen2_tied", tmp_path)
    path = os.path.join(folder, "model.safetensors")
    state = read_safetensors(path)
    extra = {**state, "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4, np.float32)}
    save_file(extra, path, metadata={"format": "pt"})
    read_hf(folder)  # rotary buffers are ignored
    save_file({**state, "model.layers.0.extra.weight": np.ones(3, np.float32)}, path)
    with pytest.raises(ValueError, match=r"model.safetensors: unexpected tensor model.layers.0"):
        read_hf(folder)
    del state["model.norm.weight"]
    save_file(state, path)
    with pytest.raises(ValueError, match=r"model.safetensors: lacks tensor model.norm.weight"):
        read_hf(folder)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"model_type": "gpt2"}, "model_type='gpt2'"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"num_key_value_heads": 4}, "not a multiple of model.num_kv_heads=4"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_type='dynamic'"),
    ],
)
def test_unsupported_configs_are_refused(changes, message):
    with open(os.path.join(FIXTURES, "llama3_gqa", "config.json")) as f:
        hf = {**json.load(f), **changes}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        config_from_hf(hf)
    qwen = {"model_type": "qwen2", "use_sliding_window": True}
    with pytest.raises(ValueError, match="use_sliding_window"):
        config_from_hf(qwen)


def test_load_reads_transformers_dirs_zoo_model_dirs_and_train_workdirs(tmp_path):
    src = os.path.join(FIXTURES, "llama3_gqa")
    model, params = zoo.lm.load(src)
    out = convert(src, tmp_path / "converted")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "generation_config.json"):  # fmt: skip
        assert os.path.exists(os.path.join(out, name)), name
    meta = json.loads((tmp_path / "converted" / "model.json").read_text())
    assert meta["family"] == "lm" and meta["tokenizer"] == {"file": "tokenizer.json"}
    model2, params2 = zoo.lm.load(out)
    assert model2.config == model.config
    same_params(params, params2)

    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "3").mkdir(parents=True)
    # A recipe's 0s: vocab_size read off the params, head_dim / sliding_window None.
    fields = {**model.config.to_dict(), "vocab_size": 0, "head_dim": 0, "sliding_window": 0}
    run = {"task": {"name": "causal_lm", "tokenizer": src}, "model": fields}
    (workdir / "config.json").write_text(json.dumps(run))
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(workdir / "checkpoints" / "3" / "state", {"params": params, "step": 3})
    model3, params3 = zoo.lm.load(workdir)
    assert model3.config == model.config
    same_params(params, params3)
    assert find_tokenizer(str(workdir)).get_vocab_size() == 300  # the recipe's task.tokenizer
    with pytest.raises(FileExistsError):
        convert(src, out)
