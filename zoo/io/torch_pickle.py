"""Read files written by `torch.save` into numpy, without importing torch.

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

Security: unpickling runs whatever callables the file names, so `find_class` here resolves only
an allowlist of harmless globals (`_ALLOWED_GLOBALS`: our own re-implementations of torch's
rebuild functions, storage types and dtypes, `collections.OrderedDict`, `argparse.Namespace`,
datetime and pure-path classes, builtins such as set/frozenset/slice/complex, `_codecs.encode`
restricted to latin1, numpy's array/scalar/dtype reconstruction with type checks). Every other
global becomes a `StandIn` class that only records its arguments and state, so `os.system`,
`eval`, `subprocess.Popen` named by a file are never called. Tensor views are bounds-checked
against their storage before numpy sees their strides.

Conversions:
- tensor, nn.Parameter -> np.ndarray (C-contiguous, writable), dtype as in torch; bfloat16 and
  float8 become `ml_dtypes` types (a jax dependency), so values are bit-exact. A tensor that is
  a contiguous run of its storage is a view of the storage buffer: tensors that shared memory
  under torch (tied embeddings) share it here too, as `torch.load` gives them. Other tensors
  (transposed, strided, expanded) are copied. Parameter attributes and tensor-subclass state are
  dropped. Quantized, sparse, nested and meta tensors raise ValueError.
- collections.OrderedDict -> dict (a dict subclass that also keeps attributes such as torch's
  `_metadata`); argparse.Namespace -> argparse.Namespace; torch.Size -> tuple;
  torch.device -> str ("cpu", "cuda:0"); torch.float16 etc. -> `TorchDtype`.
- anything else -> `StandIn` (see there).
"""

from __future__ import annotations

import argparse
import collections
import copyreg
import dataclasses
import datetime
import io
import os
import pathlib
import pickle
import struct
import sys
import zipfile
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

__all__ = ["StandIn", "TorchDtype", "load", "load_state_dict"]

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip spec 4.3.7; name/extra lengths last

# torch dtype name -> numpy dtype; torch and numpy share the names except for ml_dtypes' ones.
_NUMPY_DTYPES: dict[str, np.dtype] = {
    **{name: np.dtype(name) for name in "float64 float32 float16 complex128 complex64".split()},
    **{name: np.dtype(name) for name in "int64 int32 int16 int8 bool".split()},
    **{name: np.dtype(name) for name in "uint64 uint32 uint16 uint8".split()},
    **{
        name: np.dtype(getattr(ml_dtypes, name))
        for name in "bfloat16 float8_e4m3fn float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz".split()
        + ["float8_e8m0fnu"]
    },
}
_TORCH_DTYPE_ALIASES = {"double": "float64", "float": "float32", "half": "float16"}
_TORCH_DTYPE_ALIASES |= {"cdouble": "complex128", "cfloat": "complex64", "chalf": "complex32"}
_TORCH_DTYPE_ALIASES |= {"long": "int64", "int": "int32", "short": "int16"}
# torch dtypes numpy cannot hold; they load as TorchDtype, but a tensor of them raises.
_TORCH_DTYPES_WITHOUT_NUMPY = set(
    "complex32 qint8 quint8 qint32 quint4x2 quint2x4 float4_e2m1fn_x2 bits1x8 bits2x4 bits4x2 "
    "bits8 bits16".split()
)
# Storage classes torch.save names (torch/storage.py `_dtype_to_storage_type_map`).
_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "UntypedStorage": "uint8",  # bytes; `_rebuild_tensor_v3` says how to view them
}


class _FileFormatError(ValueError):
    """A problem with the file's contents; `load` prefixes the file name."""


@dataclasses.dataclass(frozen=True)
class TorchDtype:
    """A `torch.dtype` found in the file, e.g. `TorchDtype("bfloat16")`."""

    name: str

    @property
    def numpy(self) -> np.dtype:
        """The equivalent numpy dtype; ValueError for torch dtypes numpy cannot hold."""
        if self.name not in _NUMPY_DTYPES:
            raise _FileFormatError(
                f"tensor of dtype torch.{self.name}, which has no numpy equivalent; "
                "convert it in torch (e.g. .float()) before saving"
            )
        return _NUMPY_DTYPES[self.name]

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class StandIn:
    """Stands in for an object whose class (or function) `load` does not import.

    The stand-in class for `pkg.mod.Thing` has `module == "pkg.mod"` and `qualname == "Thing"`;
    an instance keeps what unpickling gave it: `args`/`kwargs` (the call or `__new__`
    arguments), `state` (what `__setstate__` got, usually the object's `__dict__`), `mapping`
    (items set on it, for dict subclasses) and `sequence` (items appended, for list
    subclasses). Attribute reads fall through to `state` when it is a dict, so
    `stand_in.lr` works for a config object whose `__dict__` held `lr`.
    """

    module: ClassVar[str] = ""
    qualname: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = super().__new__(cls)
        obj.args, obj.kwargs = args, kwargs
        obj.state, obj.mapping, obj.sequence = None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ kept the arguments; a REDUCE call also lands here

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.mapping[key] = value

    def append(self, item: Any) -> None:
        self.sequence.append(item)

    def extend(self, items: Any) -> None:
        self.sequence.extend(items)

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__.get("state")
        if not name.startswith("__") and isinstance(state, dict) and name in state:
            return state[name]
        raise AttributeError(f"stand-in for {self.module}.{self.qualname} has no {name!r}")

    def __reduce__(self) -> tuple:
        # For copy.deepcopy (the class is made at load time, so pickling it cannot work).
        return (_restore_stand_in, (type(self), self.__dict__))

    def __repr__(self) -> str:
        parts = [
            f"{k}={v!r}"
            for k, v in self.__dict__.items()
            if not (v is None or (isinstance(v, (tuple, list, dict)) and not v))
        ]
        text = f"StandIn[{self.module}.{self.qualname}]({', '.join(parts)})"
        return text if len(text) <= 300 else text[:297] + "..."


def _restore_stand_in(cls: type[StandIn], attributes: dict) -> StandIn:
    obj = cls.__new__(cls)
    obj.__dict__.update(attributes)
    return obj


_STAND_IN_CLASSES: dict[tuple[str, str], type[StandIn]] = {}


def _stand_in_class(module: str, qualname: str) -> type[StandIn]:
    key = (module, qualname)
    if key not in _STAND_IN_CLASSES:
        attrs = {"module": module, "qualname": qualname, "__module__": __name__}
        _STAND_IN_CLASSES[key] = type(qualname.rpartition(".")[2] or "StandIn", (StandIn,), attrs)
    return _STAND_IN_CLASSES[key]


class _DictWithAttrs(dict):
    """What `collections.OrderedDict` loads as: a dict that can also keep the attributes a
    pickle sets on it (torch state dicts carry `_metadata`, module versions)."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str  # e.g. "FloatStorage"

    @property
    def dtype(self) -> TorchDtype:
        return TorchDtype(_STORAGE_DTYPES[self.name])


@dataclasses.dataclass
class _Storage:
    """One storage: `data` is its 1-D array, None in the legacy format's first pass."""

    key: str
    dtype: TorchDtype
    numel: int
    data: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Tensor rebuilding (mirrors torch/_utils.py; the arguments are what torch pickles)
# ---------------------------------------------------------------------------------------------


def _tensor_view(
    storage: Any, storage_offset: Any, size: Any, stride: Any, dtype: TorchDtype | None = None
) -> np.ndarray | None:
    """The tensor `storage[storage_offset + sum(i_k * stride[k])]`, offset/stride in elements."""
    if not isinstance(storage, _Storage):
        raise _FileFormatError(f"a tensor refers to {storage!r}, not a storage")
    if storage.data is None:
        return None  # legacy first pass: storages are not read yet
    dtype = storage.dtype if dtype is None else dtype
    if not isinstance(dtype, TorchDtype):
        raise _FileFormatError(f"a tensor has dtype {dtype!r}, not a torch dtype")
    np_dtype = dtype.numpy
    flat = storage.data
    if flat.dtype != np_dtype:  # `_rebuild_tensor_v3` views an UntypedStorage's bytes
        if flat.nbytes % np_dtype.itemsize:
            raise _FileFormatError(
                f"storage {storage.key} has {flat.nbytes} bytes, not a multiple of "
                f"{np_dtype.itemsize} for a torch.{dtype.name} tensor"
            )
        flat = flat.view(np_dtype)
    size, stride = tuple(size), tuple(stride)
    fields = (storage_offset, *size, *stride)
    if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in fields):
        raise _FileFormatError(
            f"tensor on storage {storage.key} has offset {storage_offset!r}, size {size!r}, "
            f"stride {stride!r}; expected non-negative ints and as many strides as sizes"
        )
    if 0 in size:
        return np.empty(size, np_dtype)
    # Bounds check before numpy sees the strides: a bad file must not read outside the buffer.
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise _FileFormatError(
            f"tensor with offset {storage_offset}, size {size}, stride {stride} reaches element "
            f"{last} of storage {storage.key}, which has {flat.size}; the file is corrupt"
        )
    contiguous_strides = np.cumprod((1, *size[:0:-1]))[::-1]
    numel = int(np.prod(size))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous_strides)):
        return flat[storage_offset : storage_offset + numel].reshape(size)
    item = np_dtype.itemsize
    strided = np.lib.stride_tricks.as_strided(
        flat[storage_offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    return np.ascontiguousarray(strided)


def _apply_tensor_metadata(array: np.ndarray | None, metadata: Any) -> np.ndarray | None:
    # torch saves lazy conjugation / negation as bits beside the data (`get_tensor_metadata`).
    if array is None or not metadata:
        return array
    if metadata.get("conj"):
        array = np.conj(array)
    if metadata.get("neg"):
        array = np.negative(array)
    return array


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _tensor_view(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None
):
    return _apply_tensor_metadata(_tensor_view(storage, storage_offset, size, stride), metadata)


def _rebuild_tensor_v3(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None
):
    array = _tensor_view(storage, storage_offset, size, stride, dtype)
    return _apply_tensor_metadata(array, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data  # Python attributes set on the Parameter have nowhere to go on an ndarray


def _rebuild_from_type_v2(func, new_type, args, state):
    # A tensor subclass, or a tensor with Python attributes: rebuild the plain tensor.
    if func not in _TENSOR_REBUILDERS and not getattr(func, "unsupported_rebuild", False):
        raise _FileFormatError(f"tensor subclass rebuilt by {func!r}, which is not supported")
    return func(*args)


def _rebuild_from_type(func, type, args, dict):
    return _rebuild_from_type_v2(func, type, args, dict)


def _rebuild_device_tensor_from_numpy(data, dtype, device, requires_grad):
    if data is None:
        return None
    if not isinstance(data, np.ndarray) or not isinstance(dtype, TorchDtype):
        raise _FileFormatError(f"XLA-style tensor with data {type(data)} and dtype {dtype!r}")
    return data.astype(dtype.numpy)


def _rebuild_device_tensor_from_cpu_tensor(data, dtype, device, requires_grad):
    return _rebuild_device_tensor_from_numpy(data, dtype, device, requires_grad)


def _unsupported_rebuild(name: str):
    def rebuild(*args: Any) -> None:
        raise _FileFormatError(
            f"the file holds a tensor rebuilt by torch._utils.{name} (quantized, sparse, nested, "
            "meta or subclass tensors), which this reader does not support; convert it to a "
            "dense tensor in torch (e.g. .dequantize() or .to_dense()) and save again"
        )

    rebuild.unsupported_rebuild = True
    return rebuild


_TENSOR_REBUILDERS = {
    _rebuild_tensor,
    _rebuild_tensor_v2,
    _rebuild_tensor_v3,
    _rebuild_parameter,
    _rebuild_parameter_with_state,
    _rebuild_device_tensor_from_numpy,
    _rebuild_device_tensor_from_cpu_tensor,
}


# ---------------------------------------------------------------------------------------------
# The allowlist of globals
# ---------------------------------------------------------------------------------------------


class _NumpyNdarrayType:
    """What `numpy.ndarray` resolves to: only `_numpy_reconstruct` gives it meaning, so a
    file cannot allocate arrays of arbitrary shapes through `ndarray.__new__`."""


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    # numpy pickles an array as `_reconstruct(ndarray, (0,), b'b')` then BUILD with the real
    # shape/dtype/bytes, which `ndarray.__setstate__` checks.
    if isinstance(subtype, type) and issubclass(subtype, StandIn):
        return subtype(subtype, shape, dtype)  # an ndarray subclass we do not import
    if subtype is not _NumpyNdarrayType:
        raise _FileFormatError(f"numpy array of type {subtype!r}")
    return np.ndarray((0,), np.uint8)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype):
        raise _FileFormatError(f"numpy scalar of dtype {dtype!r}")
    if dtype.hasobject:
        return data
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise _FileFormatError(f"numpy {dtype} scalar with data {data!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles write `bytes` as `_codecs.encode(text, "latin1")`.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _FileFormatError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor (protocol 0/1 objects), with both classes from our allowlist.
    if isinstance(cls, type) and issubclass(cls, StandIn):
        return cls(base, state)
    if not isinstance(cls, type) or not isinstance(base, type):
        raise _FileFormatError(f"copyreg._reconstructor({cls!r}, {base!r})")
    return copyreg._reconstructor(cls, base, state)


def _no_size_argument(kind: type) -> Any:
    # `bytes(n)` / `bytearray(n)` would let a few pickle bytes allocate n bytes.
    def make(*args: Any) -> Any:
        if args and isinstance(args[0], int):
            raise _FileFormatError(f"{kind.__name__}({args[0]}) in the pickle")
        return kind(*args)

    return make


def _torch_device(kind: str, index: int | None = None) -> str:
    return kind if index is None else f"{kind}:{index}"


def _plain_dict(*args: Any) -> dict:
    return {}  # defaultdict: the factory is dropped, never called


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _DictWithAttrs,
    ("collections", "defaultdict"): _plain_dict,
    ("collections", "Counter"): collections.Counter,
    ("argparse", "Namespace"): argparse.Namespace,
    ("_codecs", "encode"): _latin1_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("numpy", "ndarray"): _NumpyNdarrayType,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("torch", "Size"): tuple,
    ("torch", "device"): _torch_device,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch._tensor", "_rebuild_from_type"): _rebuild_from_type,
    **{("torch._utils", f.__name__): f for f in _TENSOR_REBUILDERS},
    ("torch._utils", "_rebuild_xla_tensor"): _rebuild_device_tensor_from_numpy,
    **{("builtins", t.__name__): t for t in (set, frozenset, slice, complex, range)},
    **{("builtins", t.__name__): _no_size_argument(t) for t in (bytes, bytearray)},
    **{("builtins", t.__name__): t for t in (object, bool, int, float, str)},
    **{("builtins", t.__name__): t for t in (list, tuple, dict)},
    **{("datetime", t.__name__): t for t in (datetime.datetime, datetime.date, datetime.time)},
    **{("datetime", t.__name__): t for t in (datetime.timedelta, datetime.timezone)},
    # Concrete paths would touch the file system on some methods; pure paths never do.
    **{
        (module, prefix + flavour + "Path"): getattr(pathlib, "Pure" + flavour + "Path")
        for module in ("pathlib", "pathlib._local")
        for prefix in ("", "Pure")
        for flavour in ("Posix", "Windows")
    },
}
# Older pickles: Python 2 names, numpy 1 module names, torch's pre-1.8 module of Tensor.
_MODULE_RENAMES = {
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "numpy.core.multiarray": "numpy._core.multiarray",
    "torch.tensor": "torch._tensor",
}


def _resolve_global(module: str, name: str) -> Any:
    module = _MODULE_RENAMES.get(module, module)
    if (module, name) in _ALLOWED_GLOBALS:
        return _ALLOWED_GLOBALS[(module, name)]
    if module in ("torch", "torch.cuda", "torch.storage") and name.endswith("Storage"):
        if name in _STORAGE_DTYPES:
            return _StorageType(name)
        if name.startswith(("QInt", "QUInt")):
            raise _FileFormatError(
                f"storage type {module}.{name} holds a quantized tensor, which this reader does "
                "not support; dequantize it in torch (.dequantize()) and save again"
            )
        raise _FileFormatError(
            f"unknown storage type {module}.{name}; known: {', '.join(sorted(_STORAGE_DTYPES))}"
        )
    if module == "torch":
        canonical = _TORCH_DTYPE_ALIASES.get(name, name)
        if canonical in _NUMPY_DTYPES or canonical in _TORCH_DTYPES_WITHOUT_NUMPY:
            return TorchDtype(canonical)
    if module == "torch._utils" and name.startswith("_rebuild"):
        return _unsupported_rebuild(name)
    return _stand_in_class(module, name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, persistent_load: Any) -> None:
        super().__init__(file, encoding="utf-8")  # torch.load's default for Python 2 strings
        self._load_persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        return _resolve_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        return self._load_persistent(pid)


def _no_persistent_ids(pid: Any) -> Any:
    raise _FileFormatError(f"unexpected persistent id {pid!r} outside the object pickle")


def _split_persistent_id(pid: Any) -> tuple[str, tuple]:
    if not isinstance(pid, tuple) or not pid:
        raise _FileFormatError(f"persistent id {pid!r} is not a tuple")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    return kind, pid[1:]


def _check_storage_fields(storage_type: Any, key: Any, numel: Any) -> str:
    if not isinstance(storage_type, _StorageType):
        raise _FileFormatError(f"storage of type {storage_type!r}, not a torch storage type")
    if type(numel) is not int or numel < 0:
        raise _FileFormatError(f"storage {key!r} with {numel!r} elements")
    return key.decode("ascii") if isinstance(key, bytes) else str(key)


def _swap_to_native(data: np.ndarray, file_byteorder: str) -> None:
    # Reverse each scalar's bytes in place (a complex number is two scalars).
    unit = data.dtype.itemsize // (2 if data.dtype.kind == "c" else 1)
    if file_byteorder != sys.byteorder and unit > 1:
        data.view(np.dtype(f"u{unit}")).byteswap(inplace=True)


# ---------------------------------------------------------------------------------------------
# The two file formats
# ---------------------------------------------------------------------------------------------


def _read_zip_record(zip_file: zipfile.ZipFile, file: Any, name: str, nbytes: int) -> bytearray:
    """`nbytes` bytes of record `name` in a writable buffer, read in one go."""
    try:
        info = zip_file.getinfo(name)
    except KeyError:
        raise _FileFormatError(f"storage record {name} is missing from the zip archive") from None
    if info.file_size < nbytes:
        raise _FileFormatError(f"record {name} has {info.file_size} bytes; expected {nbytes}")
    if info.compress_type != zipfile.ZIP_STORED:  # torch never compresses; someone re-zipped
        return bytearray(zip_file.read(name)[:nbytes])
    file.seek(info.header_offset)
    header = file.read(_ZIP_LOCAL_HEADER.size)
    fields = _ZIP_LOCAL_HEADER.unpack(header) if len(header) == _ZIP_LOCAL_HEADER.size else None
    if fields is None or fields[0] != _ZIP_MAGIC:
        raise _FileFormatError(f"record {name} has no valid local zip header")
    file.seek(info.header_offset + _ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1])
    buffer = bytearray(nbytes)
    if file.readinto(buffer) != nbytes:
        raise _FileFormatError(f"record {name} is cut short; the file is truncated")
    return buffer


def _load_zip(file: Any) -> Any:
    try:
        zip_file = zipfile.ZipFile(file)
    except zipfile.BadZipFile as error:
        raise _FileFormatError(
            f"starts like a zip archive (torch >= 1.6 format) but cannot be read ({error}); "
            "the file is probably truncated or corrupt: copy or download it again"
        ) from None
    names = zip_file.namelist()
    pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if not pickles:
        raise _FileFormatError(
            f"zip archive without <name>/data.pkl (records: {names[:5]}); not written by torch.save"
        )
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "constants.pkl" in names:
        raise _FileFormatError(
            "a TorchScript archive (torch.jit.save); save `model.state_dict()` with torch.save"
        )
    byteorder = "little"
    if prefix + "byteorder" in names:
        byteorder = zip_file.read(prefix + "byteorder").decode("ascii", "replace")
        if byteorder not in ("little", "big"):
            raise _FileFormatError(f"byteorder record says {byteorder!r}, not little or big")
    storages: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> _Storage:
        kind, fields = _split_persistent_id(pid)
        if kind != "storage" or len(fields) != 4:
            raise _FileFormatError(f"persistent id {pid!r}; expected ('storage', type, key, …)")
        storage_type, key, _location, numel = fields
        key = _check_storage_fields(storage_type, key, numel)
        if key not in storages:
            np_dtype = storage_type.dtype.numpy
            nbytes = numel * np_dtype.itemsize
            buffer = _read_zip_record(zip_file, file, f"{prefix}data/{key}", nbytes)
            data = np.frombuffer(buffer, dtype=np_dtype)
            _swap_to_native(data, byteorder)
            storages[key] = _Storage(key, storage_type.dtype, numel, data)
        return storages[key]

    data_pkl = io.BytesIO(zip_file.read(prefix + "data.pkl"))
    return _RestrictedUnpickler(data_pkl, persistent_load).load()


def _load_legacy(file: Any) -> Any:
    def load_small_pickle(what: str, expected: Any = None) -> Any:
        value = _RestrictedUnpickler(file, _no_persistent_ids).load()
        if expected is not None and value != expected:
            raise _FileFormatError(
                f"the {what} is {str(value)[:60]!r}, expected {expected!r}: not a file written "
                "by torch.save"
            )
        return value

    try:
        load_small_pickle("first pickle (magic number)", _LEGACY_MAGIC_NUMBER)
    except _FileFormatError:
        raise
    except _UNPICKLING_ERRORS as error:
        raise _FileFormatError(
            f"starts like a pickle but is not one torch.save wrote ({type(error).__name__}: "
            f"{error})"
        ) from None
    load_small_pickle("protocol version", _LEGACY_PROTOCOL_VERSION)
    load_small_pickle("sys info")
    object_start = file.tell()
    roots: dict[str, _Storage] = {}
    views: dict[str, _Storage] = {}

    def persistent_load(pid: Any) -> Any:
        kind, fields = _split_persistent_id(pid)
        if kind == "module":  # torch.save(model): the class, and its source for a diff
            return fields[0]
        if kind != "storage" or len(fields) != 5:
            raise _FileFormatError(f"persistent id {pid!r}; expected ('storage', type, key, …)")
        storage_type, key, _location, numel, view = fields
        key = _check_storage_fields(storage_type, key, numel)
        root = roots.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if view is None:
            return root
        # torch < 0.4 saved storage slices: (view_key, offset, numel) in elements of the root.
        view_key, offset, view_numel = view
        if view_key not in views:
            data = None
            if root.data is not None:
                if not 0 <= offset <= offset + view_numel <= root.numel:
                    raise _FileFormatError(f"storage view {view!r} outside storage {key}")
                data = root.data[offset : offset + view_numel]
            views[view_key] = _Storage(str(view_key), root.dtype, view_numel, data)
        return views[view_key]

    # The storages follow the object, so read the object once only to learn which storages
    # (and dtypes, hence byte counts) to expect, then again with the data in place.
    _RestrictedUnpickler(file, persistent_load).load()
    views.clear()
    keys = load_small_pickle("storage key list")
    if not isinstance(keys, list):
        raise _FileFormatError(f"the storage key list is {str(keys)[:60]!r}, not a list")
    file_size = os.fstat(file.fileno()).st_size
    for key in keys:
        if key not in roots:
            raise _FileFormatError(f"storage {key!r} is listed but no tensor uses it")
        storage = roots[key]
        np_dtype = storage.dtype.numpy
        start = file.tell()
        header = file.read(8)
        nbytes = storage.numel * np_dtype.itemsize
        if len(header) < 8 or start + 8 + nbytes > file_size:
            raise _FileFormatError(
                f"storage {key} ({nbytes} bytes) starts at byte {start} but the file ends at "
                f"byte {file_size}: the file is truncated"
            )
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise _FileFormatError(
                f"storage {key} at byte {start} has {numel} elements; the object pickle said "
                f"{storage.numel}: the file is corrupt"
            )
        buffer = bytearray(nbytes)
        if file.readinto(buffer) != nbytes:
            raise _FileFormatError(f"storage {key} is cut short; the file is truncated")
        storage.data = np.frombuffer(buffer, dtype=np_dtype)
        _swap_to_native(storage.data, "little")  # legacy storages are always little-endian
    file.seek(object_start)
    return _RestrictedUnpickler(file, persistent_load).load()


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


# What a corrupt or hostile pickle makes the unpickler or our rebuild functions raise.
_UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile)
_UNPICKLING_ERRORS += (AttributeError, IndexError, KeyError, TypeError, ValueError)


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
        except _FileFormatError as error:
            raise ValueError(f"{path}: {error}") from None
        except _UNPICKLING_ERRORS as error:
            raise ValueError(
                f"{path}: cannot unpickle ({type(error).__name__}: {error}); the file is "
                "corrupt, truncated or not written by torch.save"
            ) from error
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
