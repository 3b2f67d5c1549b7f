"""mBART checkpoint I/O: export round trip, transformers' layout, formats, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import struct

import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from zoo.mbart import convert as pm
from zoo.mbart.convert import HubUnavailableError, load_mbart, save_mbart_hf

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "mbart")


def _equal_trees(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        jax.tree.leaves(jax.tree.map(np.array_equal, a, b))
    )


def _copy_with_config(tmp_path, variant: str, **changes) -> str:
    d = tmp_path / variant
    shutil.copytree(os.path.join(FIXTURES, variant), d)
    config = json.loads((d / "config.json").read_text())
    config.update(changes)
    (d / "config.json").write_text(json.dumps(config))
    return str(d)


@pytest.mark.parametrize("variant", ["cc25", "m50"])
def test_export_round_trip_is_bit_exact(tmp_path, variant):
    model, params = load_mbart(os.path.join(FIXTURES, variant))
    save_mbart_hf(model.config, params, tmp_path / "out")
    model2, params2 = load_mbart(tmp_path / "out")
    assert model2.config == model.config
    assert _equal_trees(params, params2)


@pytest.mark.parametrize("variant", ["cc25", "m50"])
def test_export_writes_the_tensors_save_pretrained_writes(tmp_path, variant):
    """Same keys (one copy of the tied matrix) and bit-identical values as transformers' file."""
    model, params = load_mbart(os.path.join(FIXTURES, variant))
    save_mbart_hf(model.config, params, tmp_path)
    ours = load_file(str(tmp_path / "model.safetensors"))
    theirs = load_file(os.path.join(FIXTURES, variant, "model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    assert all(
        ours[k].dtype == theirs[k].dtype and np.array_equal(ours[k], theirs[k]) for k in ours
    )
    # and every key of transformers' full state dict is one of these or a tied copy
    with open(os.path.join(FIXTURES, "hf_keys.json")) as f:
        hf_keys = set(json.load(f)[variant])
    assert hf_keys - set(ours) == {
        "model.encoder.embed_tokens.weight",
        "model.decoder.embed_tokens.weight",
        "lm_head.weight",
    }


def test_export_config_is_what_transformers_wrote_plus_defaults(tmp_path):
    model, params = load_mbart(os.path.join(FIXTURES, "m50"))
    save_mbart_hf(model.config, params, tmp_path)
    ours = json.loads((tmp_path / "config.json").read_text())
    theirs = json.loads(open(os.path.join(FIXTURES, "m50", "config.json")).read())
    theirs.pop("transformers_version")
    assert {k: ours.get(k) for k in theirs} == theirs


def _write_bf16_safetensors(path, tensors: dict[str, np.ndarray]) -> None:
    """Hand-written safetensors file (safetensors.numpy cannot write BF16)."""
    header, blobs, offset = {}, [], 0
    for k, v in tensors.items():
        raw = np.ascontiguousarray(v.astype(ml_dtypes.bfloat16)).tobytes()
        header[k] = {
            "dtype": "BF16",
            "shape": list(v.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_bf16_safetensors_load_as_the_exact_float32_values(tmp_path):
    d = _copy_with_config(tmp_path, "cc25")
    state = load_file(os.path.join(d, "model.safetensors"))
    _write_bf16_safetensors(os.path.join(d, "model.safetensors"), state)
    _, params = load_mbart(d)
    want = pm.params_from_hf_state(
        {k: v.astype(ml_dtypes.bfloat16).astype(np.float32) for k, v in state.items()},
        pm.MBartConfig.from_hf_config(json.load(open(os.path.join(d, "config.json")))),
    )
    assert _equal_trees(params, want)


def test_sharded_safetensors_index_loads_like_one_file(tmp_path):
    d = _copy_with_config(tmp_path, "cc25")
    state = load_file(os.path.join(d, "model.safetensors"))
    os.remove(os.path.join(d, "model.safetensors"))
    keys = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": keys[:40],
        "model-00002-of-00002.safetensors": keys[40:],
    }
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, os.path.join(d, name), metadata={"format": "pt"})
    weight_map = {k: name for name, ks in shards.items() for k in ks}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    assert _equal_trees(load_mbart(d)[1], load_mbart(os.path.join(FIXTURES, "cc25"))[1])


def test_shape_mismatch_names_key_both_shapes_file_and_fix(tmp_path):
    d = _copy_with_config(tmp_path, "cc25", encoder_ffn_dim=64)
    with pytest.raises(ValueError) as e:
        load_mbart(d)
    msg = str(e.value)
    for part in (
        "model.encoder.layers.0.fc1.weight",
        "(32, 16)",
        "(64, 16)",
        os.path.join(d, "model.safetensors"),
        "encoder_ffn_dim",
        "fix config.json",
    ):
        assert part in msg, (part, msg)


def test_vocab_mismatch_is_reported_on_the_embedding(tmp_path):
    d = _copy_with_config(tmp_path, "cc25", vocab_size=100)
    with pytest.raises(
        ValueError, match=r"model\.shared\.weight has shape \(99, 16\).*\(100, 16\).*vocab_size"
    ):
        load_mbart(d)


def test_checkpoint_with_more_layers_than_the_config_is_rejected(tmp_path):
    d = _copy_with_config(tmp_path, "cc25", encoder_layers=1)
    with pytest.raises(ValueError, match=r"not used by the config.*model\.encoder\.layers\.1\."):
        load_mbart(d)


def test_checkpoint_with_fewer_layers_than_the_config_is_rejected(tmp_path):
    d = _copy_with_config(tmp_path, "cc25", decoder_layers=3)
    with pytest.raises(ValueError, match=r"missing model\.decoder\.layers\.2\..*decoder_layers=3"):
        load_mbart(d)


def test_untied_embedding_copies_are_rejected(tmp_path):
    d = _copy_with_config(tmp_path, "cc25")
    state = load_file(os.path.join(d, "model.safetensors"))
    state["lm_head.weight"] = state["model.shared.weight"] + 1.0
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lm_head\.weight differs from model\.shared\.weight"):
        load_mbart(d)


def test_hub_download_offline_raises_an_error_that_says_network_and_local_dir(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match=r"network.*load_mbart"):
        pm.hub_download("facebook/mbart-large-cc25", tmp_path)


def test_missing_path_that_looks_like_a_hub_name_points_to_hub_download():
    with pytest.raises(FileNotFoundError, match=r"looks like a Hub name.*hub_download"):
        load_mbart("facebook/mbart-large-cc25")
