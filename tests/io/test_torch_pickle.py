"""torch_pickle reads torch.save files (zip and legacy format) into numpy without torch.

Fixtures: tests/fixtures/torch_pickle/, written by tests/fixtures/make_torch_pickle_fixtures.py.
"""

import argparse
import copy
import datetime
import io
import json
import pathlib
import pickle
import tarfile
import zipfile

import ml_dtypes
import numpy as np
import pytest

from zoo.io import torch_pickle

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "torch_pickle"
FORMATS = ["zip", "legacy"]
EXPECTED = dict(np.load(FIXTURES / "expected.npz"))
EXPECTED_DTYPES = json.loads((FIXTURES / "expected_dtypes.json").read_text())
META = json.loads((FIXTURES / "expected_meta.json").read_text())
# Written independently of the module's table: torch dtype name -> numpy dtype.
NUMPY_DTYPE = {
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "bool": np.dtype(bool),
}


def fixture(name: str, fmt: str) -> pathlib.Path:
    (path,) = FIXTURES.glob(f"{name}_{fmt}.*")
    return path


def assert_arrays_match(group: str, loaded: dict) -> None:
    keys = [k.split("::", 1)[1] for k in EXPECTED if k.startswith(group + "::")]
    assert keys, f"no expected arrays for {group}"
    for key in keys:
        array, expected = loaded[key], EXPECTED[f"{group}::{key}"]
        torch_dtype = EXPECTED_DTYPES[f"{group}::{key}"]
        assert isinstance(array, np.ndarray), key
        assert array.dtype == NUMPY_DTYPE.get(torch_dtype, np.dtype(torch_dtype)), key
        assert array.shape == expected.shape, key
        if torch_dtype in ("bfloat16", "float8_e4m3fn"):  # expected holds the bit patterns
            array = array.view(expected.dtype)
        np.testing.assert_array_equal(array, expected, err_msg=key, strict=True)


@pytest.mark.parametrize("fmt", FORMATS + ["big_endian"])
def test_every_tensor_loads_with_its_dtype_shape_and_exact_values(fmt):
    path = FIXTURES / "tensors_big_endian.pt" if fmt == "big_endian" else fixture("tensors", fmt)
    assert_arrays_match("big_endian" if fmt == "big_endian" else "tensors", torch_pickle.load(path))


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensors_that_shared_storage_share_memory_and_views_are_copied(fmt):
    loaded = torch_pickle.load(fixture("tensors", fmt))
    assert loaded["tied_a"] is loaded["tied_b"]
    # shared_first = storage[0:6], shared_second = storage[3:10]: they overlap in torch too.
    assert np.shares_memory(loaded["shared_first"], loaded["shared_second"])
    for key in ("transposed", "sliced", "expanded"):
        assert loaded[key].flags.c_contiguous and loaded[key].flags.writeable, key
        assert not np.shares_memory(loaded[key], loaded["f32"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_ordered_dict_loads_as_dict_keeping_torch_metadata(fmt):
    loaded = torch_pickle.load(fixture("tensors", fmt))
    assert isinstance(loaded, dict)
    assert list(loaded)[:4] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert loaded._metadata["0"] == {"version": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_fairseq_checkpoint_keeps_namespace_numpy_values_and_custom_objects(fmt):
    ckpt = torch_pickle.load(fixture("fairseq", fmt))
    assert isinstance(ckpt["args"], argparse.Namespace)
    assert vars(ckpt["args"]) == META["fairseq_args"]
    assert_arrays_match("fairseq", ckpt["model"])
    extra = ckpt["extra_state"]
    assert type(extra["best"]) is np.float64 and extra["best"] == 3.25
    np.testing.assert_array_equal(extra["loss_history"], np.array([1.5, 1.25]), strict=True)
    meter = extra["meter"]
    assert isinstance(meter, torch_pickle.StandIn)
    assert (meter.module, meter.qualname) == ("__main__", "TrainMeter")
    assert meter.state == {"count": 7, "avg": 0.5} and meter.count == 7
    assert repr(meter) == "StandIn[__main__.TrainMeter](state={'count': 7, 'avg': 0.5})"
    copied = copy.deepcopy(meter)
    assert type(copied) is type(meter) and copied.state == meter.state
    assert copied.state is not meter.state
    assert ckpt["last_optimizer_state"]["param_groups"][0]["betas"] == (0.9, 0.98)


@pytest.mark.parametrize("fmt", FORMATS)
def test_lightning_checkpoint_keeps_hyper_parameters(fmt):
    ckpt = torch_pickle.load(fixture("lightning", fmt))
    hparams = ckpt["hyper_parameters"]
    assert {k: hparams[k] for k in META["lightning_hyper_parameters"]} == META[
        "lightning_hyper_parameters"
    ]
    assert hparams["out_dir"] == pathlib.PurePosixPath("/runs/casanovo")
    assert hparams["started"] == datetime.datetime(2024, 5, 1, 12, 30)
    callback = ckpt["callbacks"]["ModelCheckpoint{'monitor': 'valid_CELoss'}"]
    assert callback["best_model_score"].shape == () and callback["best_model_score"] == 0.25
    assert_arrays_match("lightning", ckpt["state_dict"])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("name", "group"), [("fairseq", "fairseq"), ("lightning", "lightning"), ("tensors", "tensors")]
)
def test_load_state_dict_picks_model_or_state_dict_entry(fmt, name, group):
    state = torch_pickle.load_state_dict(fixture(name, fmt))
    assert type(state) is dict
    expected_keys = [k.split("::", 1)[1] for k in EXPECTED if k.startswith(group + "::")]
    assert sorted(state) == sorted(expected_keys)
    assert_arrays_match(group, state)


def test_load_state_dict_rejects_a_dict_with_non_tensor_values():
    with pytest.raises(ValueError, match=r"evil_zip\.pt: not a state dict.*torch_pickle\.load"):
        torch_pickle.load_state_dict(fixture("evil", "zip"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_pickled_os_system_and_eval_are_never_called(fmt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the payloads write files into the working directory
    loaded = torch_pickle.load(fixture("evil", fmt))
    assert list(tmp_path.iterdir()) == []
    system, evaluated = loaded["system"], loaded["eval"]
    assert isinstance(system, torch_pickle.StandIn) and system.qualname == "system"
    assert system.args == ("echo pwned > torch_pickle_pwned_system.txt",)
    assert isinstance(evaluated, torch_pickle.StandIn)
    assert (evaluated.module, evaluated.qualname) == ("builtins", "eval")
    np.testing.assert_array_equal(loaded["weights"], np.ones(2, np.float32), strict=True)


def legacy_file(payload: bytes) -> bytes:
    """A legacy-format torch file around a hand-written object pickle, with no storages."""
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    return b"".join(pickle.dumps(x, protocol=2) for x in header) + payload + pickle.dumps([])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80\x02cbuiltins\nbytearray\nJ\x00\x00\x00\x40\x85R.", r"bytearray\(1073741824\)"),
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R.", "rot13"),
        (b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x40\x85\x81.", r"numpy\.ndarray with __new__"),
    ],
    ids=["huge_bytearray", "codec", "ndarray_new"],
)
def test_crafted_pickles_cannot_allocate_or_decode_arbitrarily(tmp_path, payload, message):
    path = tmp_path / "crafted.pt"
    path.write_bytes(legacy_file(payload))
    with pytest.raises(ValueError, match=message):
        torch_pickle.load(path)


def test_crafted_subprocess_call_becomes_a_stand_in(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = b"X\x05\x00\x00\x00touchX\x06\x00\x00\x00pwned!\x86\x85"  # (("touch", "pwned!"),)
    path = tmp_path / "crafted.pt"
    path.write_bytes(legacy_file(b"\x80\x02csubprocess\nPopen\n" + args + b"R."))
    loaded = torch_pickle.load(path)
    assert isinstance(loaded, torch_pickle.StandIn)
    assert (loaded.module, loaded.qualname, loaded.args) == (
        "subprocess",
        "Popen",
        (("touch", "pwned!"),),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.pt"]


def write_tar(path: pathlib.Path) -> None:
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("storages")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"\x80\x02K\x00"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.random.default_rng(0).bytes(1000), "not a file written by torch.save"),
        (b"", r"not a file written by torch\.save \(empty\)"),
        (pickle.dumps({"a": 1}, protocol=2), r"magic number.*not a file written by torch\.save"),
        (b"\x80\x02" + np.random.default_rng(1).bytes(100), "not one torch.save wrote"),
        (None, "tar archive"),
    ],
    ids=["random", "empty", "plain_pickle", "garbage_after_proto", "tar"],
)
def test_non_torch_files_raise_value_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "model.bin"
    if content is None:
        write_tar(path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        torch_pickle.load(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_file_raises_value_error(fmt, keep, tmp_path):
    data = fixture("tensors", fmt).read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="truncated") as error:
        torch_pickle.load(path)
    assert str(path) in str(error.value)


def test_unknown_storage_type_raises_value_error_naming_it(tmp_path):
    path = tmp_path / "odd.pt"
    with zipfile.ZipFile(fixture("tensors", "zip")) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"torch\nFloatStorage\n", b"torch\nFlxxtStorage\n")
            dst.writestr(info.filename, data)
    with pytest.raises(ValueError, match=r"odd\.pt: unknown storage type torch\.FlxxtStorage"):
        torch_pickle.load(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantized_tensor_raises_value_error(fmt):
    with pytest.raises(ValueError, match=r"QInt8Storage.*quantized"):
        torch_pickle.load(fixture("quantized", fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensor_reaching_past_its_storage_raises_instead_of_reading_out_of_bounds(fmt):
    with pytest.raises(ValueError, match=r"reaches element 99 of storage .*which has 4"):
        torch_pickle.load(fixture("bad_view", fmt))


def test_fixture_folder_stays_small():
    total = sum(p.stat().st_size for p in FIXTURES.iterdir())
    assert total < 300_000, total
