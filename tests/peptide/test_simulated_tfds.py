"""The simulated-spectra TFDS builder: features, peptide-disjoint splits, determinism."""

import numpy as np
import pytest

from zoo.data.sources import load_source
from zoo.peptide.residues import CASANOVO, precursor_mz
from zoo.peptide.simulate import embedded_fasta, fasta_digest, peptide_key
from zoo.peptide.simulated_tfds import (
    SPLITS,
    SimulatedConfig,
    _make_config,
    config_splits,
    generate_examples,
    peptide_splits,
    simulated_builder,
)

SIZES = {"train": 64, "validation": 16, "test": 16}
FEATURES = {"mz", "intensity", "precursor_mz", "precursor_charge", "peptide", "title"}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    return simulated_builder(
        tmp_path_factory.mktemp("sim"),
        num_train=SIZES["train"],
        num_validation=SIZES["validation"],
        num_test=SIZES["test"],
        max_length=12,
        seed=3,
    )


@pytest.fixture(scope="module")
def sources(builder):
    return {split: load_source(builder, split) for split in SPLITS}


def test_tiny_build_loads_with_the_shared_spectrum_features(sources):
    for split, source in sources.items():
        assert len(source) == SIZES[split]
        for i in range(len(source)):
            ex = source[i]
            assert set(ex) == FEATURES
            mz, intensity = ex["mz"], ex["intensity"]
            assert mz.dtype == np.float32 and intensity.dtype == np.float32
            assert 20 <= len(mz) == len(intensity) <= 150  # Casanovo's min_peaks and n_peaks
            assert np.all(np.diff(mz) > 0) and mz.min() >= 50 and mz.max() <= 2500
            assert np.linalg.norm(intensity) == pytest.approx(1.0, abs=1e-5)
            charge = int(ex["precursor_charge"])
            assert charge in (2, 3)
            tokens = CASANOVO.parse(_text(ex["peptide"]))
            assert CASANOVO.to_string(tokens) == _text(ex["peptide"])  # canonical notation
            assert 6 <= sum(t not in CASANOVO.nterm for t in tokens) <= 12
            # Stored precursor m/z agrees with the peptide: to 1e-6 Da, or exactly its float32
            # rounding where the schema stores a float64 scalar as a float32 FloatList.
            expected = precursor_mz(CASANOVO.peptide_mass(tokens), charge)
            stored = float(ex["precursor_mz"])
            assert abs(stored - expected) <= 1e-6 or stored == float(np.float32(expected))
            assert _text(ex["title"]) == f"sim:{split}:{i}"


def test_stored_splits_are_peptide_disjoint_ignoring_il_and_modifications(sources):
    keys = {
        split: {peptide_key(_text(source[i]["peptide"])) for i in range(len(source))}
        for split, source in sources.items()
    }
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    # Held-out splits have more peptides than spectra here: one spectrum per peptide.
    for split in ("validation", "test"):
        assert len(keys[split]) == SIZES[split]


def test_peptide_pools_partition_the_digest_by_il_insensitive_key():
    config = _make_config(max_length=30)
    splits = config_splits(config)
    keys = {split: {peptide_key(p) for p in peptides} for split, peptides in splits.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]
    everything = fasta_digest(embedded_fasta(), missed_cleavages=1, min_length=6, max_length=30)
    assert sorted(p for ps in splits.values() for p in ps) == everything
    share = {split: len(ps) / len(everything) for split, ps in splits.items()}
    assert 0.08 < share["validation"] < 0.12 and 0.08 < share["test"] < 0.12

    # I/L variants of one peptide always share a split, and the split of a peptide does not
    # depend on which other peptides are in the pool.
    variants = [f"PEPT{a}DE{b}K" for a in "IL" for b in "IL"]
    pool = variants + [f"{x}AGK" for x in ("GGG", "SSS", "TTT", "WWW")]
    assigned = peptide_splits(pool, seed=0, validation_fraction=0.3, test_fraction=0.3)
    where = {p: s for s, ps in assigned.items() for p in ps}
    assert len({where[v] for v in variants}) == 1
    alone = peptide_splits(variants[:1], seed=0, validation_fraction=0.3, test_fraction=0.3)
    assert alone[where[variants[0]]] == variants[:1]


def test_generation_is_deterministic_in_the_seed():
    def first(seed, n=5):
        config = _make_config(num_validation=n, seed=seed, max_length=12)
        return [ex for _, ex in generate_examples(config, "validation")]

    a, b, c = first(7), first(7), first(8)
    for x in a:  # before storage the precursor m/z is the peptide's to 1e-6 Da
        tokens = CASANOVO.parse(_text(x["peptide"]))
        expected = precursor_mz(CASANOVO.peptide_mass(tokens), int(x["precursor_charge"]))
        assert float(x["precursor_mz"]) == pytest.approx(expected, abs=1e-6)
    for x, y in zip(a, b):
        assert _text(x["peptide"]) == _text(y["peptide"])
        np.testing.assert_array_equal(x["mz"], y["mz"])
        np.testing.assert_array_equal(x["intensity"], y["intensity"])
    assert [_text(x["peptide"]) for x in a] != [_text(x["peptide"]) for x in c]


def test_config_name_tracks_every_parameter():
    base = _make_config()
    assert isinstance(base, SimulatedConfig)
    assert _make_config(noise_peaks=5.0).name != base.name
    assert _make_config(seed=1).name != base.name
    assert _make_config(oxidation_rate=0.1).name == base.name  # the default value
    with pytest.raises(TypeError, match="unknown simulated data parameters"):
        _make_config(num_trian=5)
    with pytest.raises(ValueError, match="sum to < 1"):
        _make_config(validation_fraction=0.5, test_fraction=0.5)


def test_random_pool_is_peptide_disjoint_and_keeps_a_digest_test_set(tmp_path):
    """pool='random': (almost) every train spectrum is a new peptide, no key crosses a
    split, the residues follow the proteome (K/R only last), and test_digest holds the
    digest's own test peptides."""
    built = simulated_builder(
        tmp_path, pool="random", num_train=300, num_validation=40, num_test=40, seed=1
    )
    keys = {}
    for split in (*SPLITS, "test_digest"):
        source = load_source(built, split)
        peptides = [_text(source[i]["peptide"]) for i in range(len(source))]
        keys[split] = {peptide_key(p) for p in peptides}
        if split != "test_digest":
            letters = [peptide_key(p) for p in peptides]
            assert all(k[-1] in "KR" and not set(k[:-1]) & set("KR") for k in letters)
            assert all(6 <= len(k) <= 30 for k in letters)
    assert len(keys["train"]) >= 295  # 300 spectra: random peptides hardly ever repeat
    for a in keys:
        for b in keys:
            if a < b and {a, b} != {"test", "test_digest"}:
                assert not keys[a] & keys[b], (a, b)
    digest_test = {peptide_key(p) for p in config_splits(_make_config(seed=1))["test"]}
    assert keys["test_digest"] <= digest_test
    # A data set of its own (its own cache directory).
    assert _make_config(pool="random").name != _make_config().name
    with pytest.raises(ValueError, match="pool='bogus'"):
        _make_config(pool="bogus")
