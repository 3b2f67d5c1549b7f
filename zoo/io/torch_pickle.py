"""Read files written by `torch.save` into numpy, without importing torch and running no code.

Covers transformers' `pytorch_model.bin`, fairseq's `model.pt` and Lightning's `.ckpt`:

    ckpt = torch_pickle.load("model.pt")              # the whole object, tensors as numpy
    params = torch_pickle.load_state_dict("model.pt")  # {name: np.ndarray}

Two container formats exist (torch/serialization.py):
- zip (torch >= 1.6 default): `<name>/data.pkl` is the pickled object, `<name>/data/<key>` holds
  each storage's raw bytes, `<name>/byteorder` says "little" or "big" (little when absent).
- legacy (`_use_new_zipfile_serialization=False`): consecutive pickles of the magic number, the
  protocol version 1001, a sys-info dict, the object, the sorted list of storage keys; then each
  storage as an int64 little-endian element count followed by its little-endian bytes.
In both, a tensor is pickled as a call to `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)` (`_v3` with an explicit dtype for the newer dtypes) and a storage as the persistent
id `('storage', storage_type, key, location, numel[, view_metadata])`.

Security (files come from strangers): the pickles are read by `zoo.io.safe_pickle`, which calls
nothing but fresh per-load constructors (`zoo.io.torch_globals`: NumPy re-implementations of
torch's rebuild functions, a few builtins and library types, all checking their arguments) and
lets BUILD touch only objects those made; any other global becomes a `StandIn` that records
its arguments (`os.system`, `eval`, `subprocess.Popen` are never called). No read or
allocation exceeds what the file holds: zip records are read with their real sizes, checked
against the archive's actual length before any buffer is allocated, compressed records only
up to `INFLATE_LIMIT` times their compressed size, storages are checked against the bytes
present, tensor views against their storage, and container sizes against a budget.

Conversions:
- tensor, nn.Parameter -> np.ndarray (C-contiguous, writable), dtype as in torch; bfloat16 and
  float8 become `ml_dtypes` types (a jax dependency), so values are bit-exact. A tensor that is
  a contiguous run of its storage is a view of the storage buffer: tensors that shared memory
  under torch (tied embeddings) share it here too, as `torch.load` gives them. Other tensors
  (transposed, strided, expanded up to `EXPAND_LIMIT` times their storage) are copied.
  Parameter attributes and tensor-subclass state are dropped. Quantized, sparse, nested and
  meta tensors raise ValueError.
- collections.OrderedDict -> dict (a dict subclass that also keeps attributes such as torch's
  `_metadata`); argparse.Namespace -> argparse.Namespace; torch.Size -> tuple;
  torch.device -> str ("cpu", "cuda:0"); torch.float16 etc. -> `TorchDtype`.
- anything else -> `StandIn` (see there).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import sys
import zipfile
import zlib
from typing import Any

import numpy as np

from zoo.io.safe_pickle import (
    BoundedReader,
    SafeUnpickler,
    StandIn,
    UnsafePickleError,
    short_repr,
)
from zoo.io.torch_globals import (
    EXPAND_LIMIT,
    MODULE_RENAMES,
    FileFormatError,
    Storage,
    StorageType,
    TorchDtype,
    resolve,
)

__all__ = ["EXPAND_LIMIT", "StandIn", "TorchDtype", "load", "load_state_dict"]

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip spec 4.3.7; name/extra lengths last
# torch.save never compresses; a re-zipped file may, but a record may not inflate to more than
# this many times its compressed size (deflate can reach ~1000x: a 3 MB "zip bomb" of 6.6 GB).
INFLATE_LIMIT = 64
_SMALL_RECORD = 1 << 16  # records this small may inflate any amount (e.g. data.pkl of zeros)
_MAX_PICKLE_BYTES = 1 << 30  # a data.pkl holds structure only; tensors are separate records


def _unpickler(file: Any, persistent_load: Any) -> SafeUnpickler:
    # utf-8: torch.load's default for Python 2 strings.
    return SafeUnpickler(
        file, resolve=resolve, persistent_load=persistent_load, module_renames=MODULE_RENAMES
    )


def _no_persistent_ids(pid: Any) -> Any:
    raise FileFormatError(f"unexpected persistent id {short_repr(pid)} outside the object pickle")


def _split_persistent_id(pid: Any) -> tuple[str, tuple]:
    if not isinstance(pid, tuple) or not pid:
        raise FileFormatError(f"persistent id {short_repr(pid)} is not a tuple")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    return kind, pid[1:]


def _check_storage_fields(storage_type: Any, key: Any, numel: Any) -> str:
    if not isinstance(storage_type, StorageType):
        raise FileFormatError(
            f"storage of type {short_repr(storage_type)}, not a torch storage type"
        )
    if type(numel) is not int or numel < 0:
        raise FileFormatError(f"storage {short_repr(key)} with {short_repr(numel)} elements")
    if not isinstance(key, (str, bytes)) or len(key) > 256:
        raise FileFormatError(f"storage key {short_repr(key)} is not a short string")
    return key.decode("ascii") if isinstance(key, bytes) else str(key)


def _swap_to_native(data: np.ndarray, file_byteorder: str) -> None:
    # Reverse each scalar's bytes in place (a complex number is two scalars).
    unit = data.dtype.itemsize // (2 if data.dtype.kind == "c" else 1)
    if file_byteorder != sys.byteorder and unit > 1:
        data.view(np.dtype(f"u{unit}")).byteswap(inplace=True)


# ---------------------------------------------------------------------------------------------
# The two file formats
# ---------------------------------------------------------------------------------------------


def _read_zip_record(
    zip_file: zipfile.ZipFile, file: Any, name: str, nbytes: int | None, file_size: int
) -> bytearray:
    """Record `name` (its first `nbytes` bytes, or all of it) in a writable buffer.

    Sizes come from the bytes actually there, never from what the archive declares: a stored
    record must lie inside the file before its buffer is allocated, and a compressed one is
    inflated in chunks up to `INFLATE_LIMIT` times its compressed size."""
    try:
        info = zip_file.getinfo(name)
    except KeyError:
        raise FileFormatError(f"record {name} is missing from the zip archive") from None
    file.seek(info.header_offset)
    header = file.read(_ZIP_LOCAL_HEADER.size)
    fields = _ZIP_LOCAL_HEADER.unpack(header) if len(header) == _ZIP_LOCAL_HEADER.size else None
    if fields is None or fields[0] != _ZIP_MAGIC:
        raise FileFormatError(f"record {name} has no valid local zip header")
    start = info.header_offset + _ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1]
    present = min(info.compress_size, max(0, file_size - start))
    if info.compress_type == zipfile.ZIP_STORED:
        want = present if nbytes is None else nbytes
        if want > present:
            raise FileFormatError(
                f"record {name} should hold {want:,} bytes but the file has {present:,} of them "
                "(it is truncated, or its zip directory claims more than it holds)"
            )
        file.seek(start)
        buffer = bytearray(want)
        if file.readinto(buffer) != want:
            raise FileFormatError(f"record {name} is cut short; the file is truncated")
        return buffer
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise FileFormatError(f"record {name} uses zip compression {info.compress_type}")
    # torch never compresses; someone re-zipped the file. Inflate under a bound.
    limit = max(INFLATE_LIMIT * present, _SMALL_RECORD)
    if nbytes is not None and nbytes > limit:
        raise FileFormatError(
            f"record {name} should inflate to {nbytes:,} bytes from {present:,}: more than "
            f"{INFLATE_LIMIT}x, as only a zip bomb does; save the file again with torch.save"
        )
    file.seek(start)
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    cap = limit if nbytes is None else nbytes
    left = present
    while left and len(out) < cap:
        chunk = file.read(min(left, 1 << 20))
        if not chunk:
            break
        left -= len(chunk)
        out += inflate.decompress(chunk, cap - len(out) + 1)
        if len(out) > cap and nbytes is None:
            raise FileFormatError(
                f"record {name} inflates to more than {cap:,} bytes from {present:,} "
                f"({INFLATE_LIMIT}x): a zip bomb; save the file again with torch.save"
            )
    if nbytes is not None:
        if len(out) < nbytes:
            raise FileFormatError(
                f"record {name} inflates to {len(out):,} bytes; expected {nbytes:,}"
            )
        del out[nbytes:]
    return out


def _load_zip(file: Any) -> Any:
    try:
        zip_file = zipfile.ZipFile(file)
    except zipfile.BadZipFile as error:
        raise FileFormatError(
            f"starts like a zip archive (torch >= 1.6 format) but cannot be read ({error}); "
            "the file is probably truncated or corrupt: copy or download it again"
        ) from None
    names = zip_file.namelist()
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if not pickles:
        raise FileFormatError(
            f"zip archive without <name>/data.pkl (records: {names[:5]}); not written by torch.save"
        )
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "constants.pkl" in names:
        raise FileFormatError(
            "a TorchScript archive (torch.jit.save); save `model.state_dict()` with torch.save"
        )
    file_size = os.fstat(file.fileno()).st_size
    byteorder = "little"
    if prefix + "byteorder" in names:
        record = _read_zip_record(zip_file, file, prefix + "byteorder", None, file_size)
        byteorder = bytes(record[:16]).decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise FileFormatError(f"byteorder record says {byteorder!r}, not little or big")
    storages: dict[str, Storage] = {}

    def persistent_load(pid: Any) -> Storage:
        kind, fields = _split_persistent_id(pid)
        if kind != "storage" or len(fields) != 4:
            raise FileFormatError(
                f"persistent id {short_repr(pid)}; expected ('storage', type, key, …)"
            )
        storage_type, key, _location, numel = fields
        key = _check_storage_fields(storage_type, key, numel)
        if key not in storages:
            np_dtype = storage_type.dtype.numpy
            nbytes = numel * np_dtype.itemsize
            buffer = _read_zip_record(zip_file, file, f"{prefix}data/{key}", nbytes, file_size)
            data = np.frombuffer(buffer, dtype=np_dtype)
            _swap_to_native(data, byteorder)
            storages[key] = Storage(key, storage_type.dtype, numel, data)
        return storages[key]

    data_pkl = _read_zip_record(zip_file, file, prefix + "data.pkl", None, file_size)
    if len(data_pkl) > _MAX_PICKLE_BYTES:
        raise FileFormatError(f"data.pkl of {len(data_pkl):,} bytes; torch's hold structure only")
    return _unpickler(io.BytesIO(data_pkl), persistent_load).load()


def _load_legacy(raw_file: Any) -> Any:
    file_size = os.fstat(raw_file.fileno()).st_size
    file = BoundedReader(raw_file, file_size)  # pickle reads never ask for more than is left

    def load_small_pickle(what: str, expected: Any = None) -> Any:
        value = _unpickler(file, _no_persistent_ids).load()
        if expected is not None and value != expected:
            raise FileFormatError(
                f"the {what} is {str(value)[:60]!r}, expected {expected!r}: not a file written "
                "by torch.save"
            )
        return value

    try:
        load_small_pickle("first pickle (magic number)", _LEGACY_MAGIC_NUMBER)
    except FileFormatError:
        raise
    except _UNPICKLING_ERRORS as error:
        raise FileFormatError(
            f"starts like a pickle but is not one torch.save wrote ({type(error).__name__}: "
            f"{error})"
        ) from None
    load_small_pickle("protocol version", _LEGACY_PROTOCOL_VERSION)
    load_small_pickle("sys info")
    object_start = file.tell()
    roots: dict[str, Storage] = {}
    views: dict[str, Storage] = {}

    def persistent_load(pid: Any) -> Any:
        kind, fields = _split_persistent_id(pid)
        if kind == "module":  # torch.save(model): the class, and its source for a diff
            return fields[0]
        if kind != "storage" or len(fields) != 5:
            raise FileFormatError(
                f"persistent id {short_repr(pid)}; expected ('storage', type, key, …)"
            )
        storage_type, key, _location, numel, view = fields
        key = _check_storage_fields(storage_type, key, numel)
        root = roots.setdefault(key, Storage(key, storage_type.dtype, numel))
        if view is None:
            return root
        # torch < 0.4 saved storage slices: (view_key, offset, numel) in elements of the root.
        ints = isinstance(view, tuple) and len(view) == 3 and type(view[1]) is type(view[2]) is int
        if not ints:
            raise FileFormatError(f"storage view {short_repr(view)} of storage {key}")
        view_key, offset, view_numel = view
        if view_key not in views:
            data = None
            if root.data is not None:
                if not 0 <= offset <= offset + view_numel <= root.numel:
                    raise FileFormatError(f"storage view {view!r} outside storage {key}")
                data = root.data[offset : offset + view_numel]
            views[view_key] = Storage(str(view_key), root.dtype, view_numel, data)
        return views[view_key]

    # The storages follow the object, so read the object once only to learn which storages
    # (and dtypes, hence byte counts) to expect, then again with the data in place.
    _unpickler(file, persistent_load).load()
    views.clear()
    keys = load_small_pickle("storage key list")
    if not isinstance(keys, list):
        raise FileFormatError(f"the storage key list is {str(keys)[:60]!r}, not a list")
    for key in keys:
        if key not in roots:
            raise FileFormatError(f"storage {key!r} is listed but no tensor uses it")
        storage = roots[key]
        np_dtype = storage.dtype.numpy
        start = file.tell()
        header = file.read(8)
        nbytes = storage.numel * np_dtype.itemsize
        if len(header) < 8 or start + 8 + nbytes > file_size:
            raise FileFormatError(
                f"storage {key} ({nbytes} bytes) starts at byte {start} but the file ends at "
                f"byte {file_size}: the file is truncated"
            )
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise FileFormatError(
                f"storage {key} at byte {start} has {numel} elements; the object pickle said "
                f"{storage.numel}: the file is corrupt"
            )
        buffer = bytearray(nbytes)
        if file.readinto(buffer) != nbytes:
            raise FileFormatError(f"storage {key} is cut short; the file is truncated")
        storage.data = np.frombuffer(buffer, dtype=np_dtype)
        _swap_to_native(storage.data, "little")  # legacy storages are always little-endian
    file.seek(object_start)
    return _unpickler(file, persistent_load).load()


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


# What a corrupt or hostile pickle makes the unpickler or our rebuild functions raise.
_UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile)
_UNPICKLING_ERRORS += (AttributeError, IndexError, KeyError, TypeError, ValueError)
_UNPICKLING_ERRORS += (OverflowError, UnicodeDecodeError, MemoryError)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def load(path: str | os.PathLike) -> Any:
    """Unpickles a file written by `torch.save`, with tensors as numpy arrays.

    Args:
      path: a `torch.save` file in the zip or the legacy format.
    Returns:
      the saved object; see the module docstring for what each type becomes.
    Raises:
      ValueError naming `path`: not a torch.save file, truncated or corrupt, or holding a
        tensor kind or storage type this reader does not support.
    """
    with open(path, "rb") as file:
        head = file.read(512)
        file.seek(0)
        try:
            if head.startswith(_ZIP_MAGIC):
                return _load_zip(file)
            if head.startswith(b"\x80"):  # pickle PROTO opcode
                return _load_legacy(file)
        except (FileFormatError, UnsafePickleError) as error:
            raise ValueError(f"{path}: {_one_line(error)}") from None
        except RecursionError:
            raise ValueError(f"{path}: the pickle nests deeper than Python can follow") from None
        except _UNPICKLING_ERRORS as error:
            raise ValueError(
                f"{path}: cannot unpickle ({type(error).__name__}: {_one_line(error)}); the "
                "file is corrupt, truncated or not written by torch.save"
            ) from None
        if head[257:262] == b"ustar":
            raise ValueError(
                f"{path}: a tar archive, torch's format before 0.4, which this reader does not "
                "support; load it with torch and save it again with torch.save"
            )
        kind = "empty" if not head else f"starts with {head[:8]!r}"
        raise ValueError(
            f"{path}: not a file written by torch.save ({kind}); expected a zip archive "
            "(torch >= 1.6) or a pickle starting with torch's magic number "
            "(_use_new_zipfile_serialization=False). A .safetensors file needs "
            "safetensors.numpy.load_file instead"
        )


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint by name: `{"encoder.layers.0.fc1.weight": [out, in] f32, …}`.

    Takes the `state_dict` entry of a Lightning checkpoint or the `model` entry of a fairseq
    one when it holds only tensors; otherwise the loaded dict itself (transformers'
    `pytorch_model.bin`). Raises ValueError when that is not a dict of str -> tensor.
    """
    obj = load(path)
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            candidate = obj.get(key)
            if isinstance(candidate, dict) and candidate:
                if all(isinstance(v, np.ndarray) for v in candidate.values()):
                    state = candidate
                    break
    if not isinstance(state, dict):
        raise ValueError(
            f"{path}: holds a {type(obj).__name__}, not a dict of tensors; "
            "use torch_pickle.load() to read it"
        )
    bad = [(k, type(v).__name__) for k, v in state.items() if not isinstance(k, str)]
    bad += [(k, type(v).__name__) for k, v in state.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(
            f"{path}: not a state dict: entries {bad[:5]} are not str -> tensor (top-level keys: "
            f"{list(obj)[:10]}); use torch_pickle.load() to read the whole object"
        )
    return dict(state)
