"""Casanovo 5.2.1 checkpoints import into the AR-only peptide model and compute what Casanovo does.

Fixtures: tests/fixtures/casanovo/ (tiny_casanovo.ckpt, a real Lightning checkpoint of a small
Spec2Pep, and Casanovo's own outputs on 8 spectra), written by
tests/fixtures/make_casanovo_fixtures.py with casanovo 5.2.1 / torch. Casanovo is not needed here.
"""

import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from flax.linen import meta

import zoo.peptide
from zoo.peptide import casanovo
from zoo.peptide.model import PeptideConfig, PeptideModel

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "casanovo"
CKPT = FIXTURES / "tiny_casanovo.ckpt"
DATA = dict(np.load(FIXTURES / "parity.npz"))
META = json.loads((FIXTURES / "parity.json").read_text())
# Cheap XLA backend settings: 3-4x faster compiles on a small CPU, same float semantics.
jit = functools.partial(
    jax.jit,
    compiler_options={
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    },
)
# Token columns for every teacher-forced call (one compile): the longest prediction + stop,
# rounded up; trailing pads change no logit before them.
_LONGEST = max(len(p["aa_scores"]) for ps in META["predictions"]["beam3"] for p in ps)
WIDTH = -(-(max(_LONGEST, DATA["tokens"].shape[1]) + 1) // 8) * 8


@pytest.fixture(scope="module")
def imported():
    config, params, info = zoo.peptide.load_casanovo(CKPT)  # the family's Python face
    model = PeptideModel(config)
    encode = jit(lambda p, mz, it: model.apply({"params": p}, mz, it, method="encode"))
    ar = jit(
        lambda p, toks, mass, charge, mem, mask: model.apply(
            {"params": p}, toks, mass, charge, mem, mask, method="ar"
        )
    )
    memory, mask = encode(params, DATA["mz"], DATA["intensity"])
    return config, params, info, model, ar, memory, mask


def our_tokens(peptides, residues, stop_id):
    """Casanovo 5 peptide strings -> our ids in decoding order (C->N), stop, 0-padded."""
    out = np.zeros((len(peptides), WIDTH), np.int32)
    for i, pep in enumerate(peptides):
        ids = [residues.tokens.index(t) + 1 for t in residues.parse(pep)][::-1] + [stop_id]
        out[i, : len(ids)] = ids
    return out


def test_config_and_vocabulary_come_from_the_checkpoint(imported):
    config, _, info, *_ = imported
    assert config == PeptideConfig(
        mode="ar",
        n_residues=27,
        d_model=32,
        n_heads=4,
        d_ff=64,
        encoder_layers=2,
        ar_layers=2,
        nar_layers=0,
        dropout=0.0,
        max_charge=4,
        max_peptide_len=100,
        reverse=True,
    )
    res = info.residues
    # Casanovo 5's default vocabulary: plain C kept, I replaced by L, ProForma names.
    assert res.replace_isoleucine and "I" not in res.tokens and res.tokens[-1] == "C"
    assert res.tokens[:7] == ("G", "A", "S", "P", "V", "T", "C+57.021")
    assert res.parse("[Acetyl]-C[Carbamidomethyl]M[Oxidation]IK") == [
        "+42.011",
        "C+57.021",
        "M+15.995",
        "L",
        "K",
    ]
    assert res.masses["+43.006-17.027"] == pytest.approx(25.980265)
    # Our class i is Casanovo's class casanovo_index[i]: pad, residues by name, stop.
    names = [info.casanovo_tokens[j] for j in info.casanovo_index]
    assert names[0] is None and names[-1] == "$"
    assert [res.canonical(n) for n in names[1:-1]] == list(res.tokens)


def test_encoder_outputs_match_casanovo(imported):
    *_, memory, mask = imported
    np.testing.assert_array_equal(mask, ~DATA["memory_padding"])
    assert mask[5, 1] and not mask[5, 2:].any()  # the [[0, 1]] spectrum: its one peak is real
    np.testing.assert_allclose(np.asarray(memory)[mask], DATA["memory"][mask], atol=1e-5, rtol=0)


def test_precursor_mass_is_casanovos_float32_formula():
    mass = (DATA["precursor_mz"] - np.float32(1.007276)) * DATA["charge"].astype(np.float32)
    np.testing.assert_array_equal(mass.astype(np.float32), DATA["precursor_mass"])


def test_teacher_forced_decoder_scores_match_casanovo(imported):
    config, params, info, model, ar, memory, mask = imported
    tokens = our_tokens(META["peptides"], info.residues, config.stop_id)
    # Our tokenisation of Casanovo's peptide strings is its tokenisation, permuted.
    width = DATA["tokens"].shape[1]
    np.testing.assert_array_equal(info.casanovo_index[tokens[:, :width]], DATA["tokens"])
    logits = ar(params, tokens, DATA["precursor_mass"], DATA["charge"], memory, mask)
    theirs = DATA["logits_tf"][..., info.casanovo_index]
    np.testing.assert_allclose(np.asarray(logits)[:, : width + 1], theirs, atol=1e-5, rtol=0)
    probs = jax.nn.softmax(logits[:, : width + 1])
    np.testing.assert_allclose(probs, jax.nn.softmax(theirs), atol=1e-6)


def test_cached_steps_match_casanovos_per_step_scores(imported):
    """Casanovo reruns its decoder on each prefix; our KV cache gives the same scores."""
    config, params, info, model, _, memory, mask = imported
    tokens = our_tokens(META["peptides"], info.residues, config.stop_id)
    init = jit(
        lambda p, mass, charge: model.apply(
            {"params": p}, mass, charge, memory, mask, None, WIDTH, method="ar_init_cache"
        )
    )
    step = jit(lambda p, toks, cache: model.apply({"params": p}, toks, cache, method="ar_step"))
    logits, cache = init(params, DATA["precursor_mass"], DATA["charge"])
    got = [logits]
    for t in range(DATA["tokens"].shape[1]):
        logits, cache = step(params, tokens[:, t], cache)
        got.append(logits)
    theirs = DATA["logits_steps"][..., info.casanovo_index]
    np.testing.assert_allclose(np.stack(got, 1), theirs, atol=1e-5, rtol=0)


def test_casanovo_prediction_scores_are_products_of_softmax_probabilities(imported):
    """What the fixture's predictions mean (the beam search engineer's contract): for every
    kept hypothesis, aa_scores are the softmax probabilities of its residues (N->C order) and
    the score is their product times the stop token's probability, computed in float32."""
    config, params, info, model, ar, memory, mask = imported
    preds = [
        (i, p)
        for key in ("beam1", "beam3")
        for i, ps in enumerate(META["predictions"][key])
        for p in ps
    ]
    assert len(preds) > 20
    preds += [preds[0]] * (-len(preds) % 8)  # batches of 8, the shape `ar` is compiled for
    rows = np.array([i for i, _ in preds])
    tokens = our_tokens([p["peptide"] for _, p in preds], info.residues, config.stop_id)
    probs = np.concatenate(
        [
            jax.nn.softmax(
                ar(
                    params,
                    tokens[b : b + 8],
                    DATA["precursor_mass"][rows[b : b + 8]],
                    DATA["charge"][rows[b : b + 8]],
                    memory[rows[b : b + 8]],
                    mask[rows[b : b + 8]],
                )
            )
            for b in range(0, len(preds), 8)
        ]
    )
    for r, (_, pred) in enumerate(preds):
        n = len(pred["aa_scores"])
        p = probs[r, np.arange(n + 1), tokens[r, : n + 1]]
        np.testing.assert_allclose(p[:n][::-1], pred["aa_scores"], atol=2e-5, rtol=1e-4)
        # Casanovo: exp(sum(log(clip(p, eps64, 1)))) over residues and stop, all in float32
        # (it pins numpy < 2, whose casting keeps float32), so long peptides underflow to 0.
        log_score = np.log(np.clip(p.astype(np.float32), np.float32(2.220446e-16), 1)).sum()
        assert log_score.dtype == np.float32
        assert np.exp(log_score) == pytest.approx(pred["score"], rel=1e-3, abs=0)


def test_convert_writes_a_model_dir_that_loads_back(imported, tmp_path):
    config, params, info, *_ = imported
    out = tmp_path / "casanovo_zoo"
    casanovo.convert(CKPT, out)
    meta_json = json.loads((out / "model.json").read_text())
    assert meta_json["family"] == "peptide"
    loaded_config, loaded_params, residues = casanovo.load_model_dir(out)
    assert loaded_config == config
    assert residues.tokens == info.residues.tokens and residues.masses == info.residues.masses
    assert residues.replace_isoleucine
    a = traverse_util.flatten_dict(params, sep="/")
    b = traverse_util.flatten_dict(loaded_params, sep="/")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(FileExistsError):
        casanovo.convert(CKPT, out)


def test_warm_start_copies_encoder_and_ar_decoder_into_a_hybrid(imported):
    config, params, *_ = imported
    hybrid = PeptideModel(dataclasses.replace(config, mode="hybrid", nar_layers=1, nar_slots=8))
    args = (
        DATA["mz"],
        DATA["intensity"],
        DATA["precursor_mass"],
        DATA["charge"],
        np.ones((8, 3), np.int32),
    )
    boxed = jax.eval_shape(hybrid.init, jax.random.key(0), *args)["params"]
    target = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), boxed)
    warm = casanovo.warm_start_hybrid(target, params)
    assert jax.tree.structure(warm) == jax.tree.structure(target)  # still boxed
    flat_warm = traverse_util.flatten_dict(meta.unbox(warm), sep="/")
    flat_src = traverse_util.flatten_dict(params, sep="/")
    for key, value in flat_warm.items():
        if key in flat_src:
            np.testing.assert_array_equal(value, flat_src[key])
        else:  # the NAR decoder and the hybrid-only slot positions keep their values
            assert key.startswith(("nar_", "ar_nar_slot_positions")), key
            assert (np.asarray(value) == 7.0).all()
    flat_target = traverse_util.flatten_dict(meta.unbox(target), sep="/")
    flat_target["ar_layer_1/ffn/fc1/kernel"] = jnp.zeros((32, 16))  # a narrower FFN
    with pytest.raises(ValueError, match="ar_layer_1/ffn/fc1/kernel is \\[32, 64\\]"):
        casanovo.warm_start_hybrid(traverse_util.unflatten_dict(flat_target, sep="/"), params)


def test_files_that_are_not_casanovo_5_checkpoints_are_refused(tmp_path):
    lightning = FIXTURES.parent / "torch_pickle" / "lightning_zip.ckpt"
    with pytest.raises(casanovo.CasanovoFormatError, match="lightning_zip.ckpt: state_dict has no"):
        casanovo.load_casanovo(lightning)
    fairseq = FIXTURES.parent / "torch_pickle" / "fairseq_zip.pt"
    with pytest.raises(casanovo.CasanovoFormatError, match="not a Lightning checkpoint"):
        casanovo.load_casanovo(fairseq)


def test_checkpoint_without_tokenizer_gets_casanovo5_default_vocabulary(imported):
    """The fixture was built with Casanovo 5.2.1's default config, so dropping its tokenizer
    object must give the same vocabulary, class mapping and parameters."""
    from zoo.io import torch_pickle

    _, params, info, *_ = imported
    ckpt = torch_pickle.load(CKPT)
    assert list(casanovo.casanovo5_default_tokenizer().reverse_index) == META["reverse_index"]
    del ckpt["hyper_parameters"]["tokenizer"]
    with pytest.warns(UserWarning, match="default vocabulary"):
        _, fallback, fb_info = casanovo.from_checkpoint(ckpt, "no_tokenizer.ckpt")
    assert fb_info.residues.tokens == info.residues.tokens
    np.testing.assert_array_equal(fb_info.casanovo_index, info.casanovo_index)
    np.testing.assert_array_equal(
        fallback["ar_aa_embedding"]["embedding"], params["ar_aa_embedding"]["embedding"]
    )
