"""Parity with transformers' MBartForConditionalGeneration on tiny random checkpoints.

Fixtures: tests/fixtures/make_mbart_fixtures.py (transformers 4.57.6, fp32, eager).
Logits are compared at real (non-pad) target positions and the encoder output at real source
positions: transformers lets pad queries attend, ours masks them (both are ignored downstream).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import numpy as np
import pytest

import zoo.mbart
from zoo.mbart.convert import convert, load_mbart
from zoo.mbart.model import MBart

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "mbart")
TOL = 1e-5

_forward = jax.jit(
    lambda model, params, ids, mask, dec, dec_mask: model.apply(
        {"params": params}, ids, mask, dec, decoder_attention_mask=dec_mask
    ),
    static_argnums=0,
)
_encode = jax.jit(
    lambda model, params, ids, mask: model.apply({"params": params}, ids, mask, method="encode"),
    static_argnums=0,
)


@functools.cache
def _load(variant: str):
    return load_mbart(os.path.join(FIXTURES, variant))


@functools.cache
def _expected(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(os.path.join(FIXTURES, f"expected_{name}.npz")))


def _logit_diff(model, params, exp, key="logits") -> float:
    logits = np.asarray(
        _forward(
            model,
            params,
            exp["input_ids"],
            exp["attention_mask"],
            exp["decoder_input_ids"],
            exp["decoder_attention_mask"],
        )
    )
    real = exp["decoder_attention_mask"].astype(bool)
    return float(np.abs(logits - exp[key])[real].max())


@pytest.mark.parametrize(
    "variant, reference",
    [
        ("cc25", "cc25"),  # GELU, non-zero final_logits_bias, save_pretrained safetensors
        ("cc25_bin_zip", "cc25"),  # pytorch_model.bin, torch >= 1.6 zip format
        ("cc25_bin_legacy", "cc25"),  # pytorch_model.bin, legacy pickle format
        ("m50", "m50"),  # ReLU, decoder heads/FFN differ from the encoder's
        ("m50_lm_head_only", "m50"),  # tied matrix only as lm_head.weight, no bias key
    ],
)
def test_logits_match_transformers_within_1e_5(variant, reference):
    model, params = _load(variant)
    assert _logit_diff(model, params, _expected(reference)) <= TOL


@pytest.mark.parametrize("variant", ["cc25", "m50"])
def test_encoder_output_matches_transformers_within_1e_5(variant):
    model, params = _load(variant)
    exp = _expected(variant)
    encoded = np.asarray(_encode(model, params, exp["input_ids"], exp["attention_mask"]))
    real = exp["attention_mask"].astype(bool)
    assert np.abs(encoded - exp["encoder_output"])[real].max() <= TOL


@pytest.mark.parametrize("variant", ["cc25_fairseq_args", "cc25_fairseq_cfg"])
def test_fairseq_import_equals_transformers_import(variant):
    hf_model, hf_params = _load("cc25")
    model, params = _load(variant)
    assert model.config == hf_model.config
    # fairseq has no output bias: identical params except final_logits_bias, which is zeros.
    assert not params["final_logits_bias"].any()
    same = jax.tree.map(
        np.array_equal,
        {**params, "final_logits_bias": None},
        {**hf_params, "final_logits_bias": None},
    )
    assert all(jax.tree.leaves(same))
    assert _logit_diff(model, params, _expected("cc25"), key="logits_no_bias") <= TOL


def test_fairseq_without_readable_args_warns_and_an_explicit_config_restores_parity():
    path = os.path.join(FIXTURES, "cc25_fairseq_opaque", "model.pt")
    with pytest.warns(UserWarning, match=r"args/cfg are missing or unreadable.*heads=1"):
        guessed, _ = load_mbart(path)
    assert guessed.config.num_heads == 1  # d_model 16 // 64, floored at 1: wrong for this file
    model, params = load_mbart(path, config=_load("cc25")[0].config)
    assert _logit_diff(model, params, _expected("cc25"), key="logits_no_bias") <= TOL


def test_lm_head_only_file_gives_the_same_params_as_the_full_file():
    _, full = _load("m50")
    _, lm_head_only = _load("m50_lm_head_only")
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, full, lm_head_only)))


@pytest.mark.parametrize(
    "override",
    [
        dict(layer_norm_eps=1e-6),  # flax.linen.LayerNorm's default
        dict(activation="gelu_tanh"),  # flax.linen.gelu's default (approximate=True)
    ],
)
def test_flax_defaults_break_parity(override):
    """Negative control: the parity test can fail, and each of these would make it fail."""
    model, params = _load("cc25")
    wrong = MBart(dataclasses.replace(model.config, **override))
    assert _logit_diff(wrong, params, _expected("cc25")) > TOL


@pytest.mark.parametrize("kind", ["transformers_dir", "zoo_model_dir"])
def test_public_load_gives_transformers_logits(tmp_path, kind):
    """zoo.mbart.load(SRC) -> (model, params) with the documented call
    model.apply({'params': params}, input_ids, attention_mask, decoder_input_ids)."""
    src = os.path.join(FIXTURES, "cc25")
    if kind == "zoo_model_dir":
        src = convert(src, str(tmp_path / "converted"))
    model, params = zoo.mbart.load(src)
    exp = _expected("cc25")
    logits = model.apply(
        {"params": params}, exp["input_ids"], exp["attention_mask"], exp["decoder_input_ids"]
    )
    assert logits.shape == exp["logits"].shape and logits.dtype == np.float32
    real = exp["decoder_attention_mask"].astype(bool)
    assert float(np.abs(np.asarray(logits) - exp["logits"])[real].max()) < TOL
