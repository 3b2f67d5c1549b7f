"""What the globals of a `torch.save` pickle may stand for, when zoo reads one without torch.

`resolve(module, name)` gives `zoo.io.safe_pickle` a fresh `Constructor` for each allowed
global (torch's tensor-rebuild functions re-implemented on NumPy, storage types and dtypes,
`collections.OrderedDict`, `argparse.Namespace`, datetime and pure-path classes, a few
builtins, numpy's array / scalar / dtype reconstruction), or None, and the global becomes a
`StandIn` class that only records its arguments: `os.system`, `eval`, `subprocess.Popen`
named by a file are never called. Every constructor checks its arguments: numeric arrays are
built from checked (shape, dtype, bytes), object dtypes are refused, container sizes are
counted against the load's budget, and tensor views are bounds-checked against their storage
before NumPy sees their strides.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import math
import pathlib
from typing import Any

import ml_dtypes
import numpy as np

from zoo.io.safe_pickle import Constructor, SafeUnpickler, StandIn, UnsafePickleError

# torch dtype name -> numpy dtype; torch and numpy share the names except for ml_dtypes' ones.
NUMPY_DTYPES: dict[str, np.dtype] = {
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
STORAGE_DTYPES = {
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
# Numpy arrays and scalars a pickle may hold: numbers, booleans and fixed-size text (never
# objects, never structured types).
_ARRAY_KINDS = "biufcSU"
# An expanded (stride-0) tensor may be materialised up to this many times its storage (and
# any view up to 2**20 elements): beyond that a small file would claim much more memory than
# it holds.
EXPAND_LIMIT = 16
_SMALL_VIEW = 2**20
MODULE_RENAMES = {  # older pickles: Python 2 names, numpy 1 names, torch < 1.8
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "numpy.core.multiarray": "numpy._core.multiarray",
    "torch.tensor": "torch._tensor",
}


class FileFormatError(ValueError):
    """A problem with the file's contents; `torch_pickle.load` prefixes the file name."""


@dataclasses.dataclass(frozen=True)
class TorchDtype:
    """A `torch.dtype` found in the file, e.g. `TorchDtype("bfloat16")`."""

    name: str

    @property
    def numpy(self) -> np.dtype:
        """The equivalent numpy dtype; ValueError for torch dtypes numpy cannot hold."""
        if self.name not in NUMPY_DTYPES:
            raise FileFormatError(
                f"tensor of dtype torch.{self.name}, which has no numpy equivalent; "
                "convert it in torch (e.g. .float()) before saving"
            )
        return NUMPY_DTYPES[self.name]

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class DictWithAttrs(dict):
    """What `collections.OrderedDict` loads as: a dict that can also keep the attributes a
    pickle sets on it (torch state dicts carry `_metadata`, module versions)."""


@dataclasses.dataclass(frozen=True)
class StorageType:
    name: str  # e.g. "FloatStorage"

    @property
    def dtype(self) -> TorchDtype:
        return TorchDtype(STORAGE_DTYPES[self.name])


@dataclasses.dataclass
class Storage:
    """One storage: `data` is its 1-D array, None in the legacy format's first pass."""

    key: str
    dtype: TorchDtype
    numel: int
    data: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Tensor rebuilding (mirrors torch/_utils.py; the arguments are what torch pickles)
# ---------------------------------------------------------------------------------------------


def tensor_view(
    storage: Any, storage_offset: Any, size: Any, stride: Any, dtype: TorchDtype | None = None
) -> np.ndarray | None:
    """The tensor `storage[storage_offset + sum(i_k * stride[k])]`, offset/stride in elements."""
    if not isinstance(storage, Storage):
        raise FileFormatError(f"a tensor refers to {type(storage).__name__}, not a storage")
    if storage.data is None:
        return None  # legacy first pass: storages are not read yet
    dtype = storage.dtype if dtype is None else dtype
    if not isinstance(dtype, TorchDtype):
        raise FileFormatError(f"a tensor has dtype {type(dtype).__name__}, not a torch dtype")
    np_dtype = dtype.numpy
    flat = storage.data
    if flat.dtype != np_dtype:  # `_rebuild_tensor_v3` views an UntypedStorage's bytes
        if flat.nbytes % np_dtype.itemsize:
            raise FileFormatError(
                f"storage {storage.key} has {flat.nbytes} bytes, not a multiple of "
                f"{np_dtype.itemsize} for a torch.{dtype.name} tensor"
            )
        flat = flat.view(np_dtype)
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
        raise FileFormatError(f"tensor on storage {storage.key} with a non-sequence size/stride")
    size, stride = tuple(size), tuple(stride)
    fields = (storage_offset, *size, *stride)
    if len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in fields):
        raise FileFormatError(
            f"tensor on storage {storage.key} has offset {storage_offset!r}, size {size!r}, "
            f"stride {stride!r}; expected non-negative ints and as many strides as sizes"
        )
    numel = math.prod(size)
    if numel == 0:
        return np.empty(size, np_dtype)
    # Bounds check before numpy sees the strides: a bad file must not read outside the buffer.
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise FileFormatError(
            f"tensor with offset {storage_offset}, size {size}, stride {stride} reaches element "
            f"{last} of storage {storage.key}, which has {flat.size}; the file is corrupt"
        )
    if numel > max(EXPAND_LIMIT * flat.size, _SMALL_VIEW):
        raise FileFormatError(
            f"tensor of size {size} (stride {stride}) is an expanded view of {numel:,} elements "
            f"over storage {storage.key} of {flat.size:,}: the file claims far more memory than "
            "it holds; save a contiguous tensor (.contiguous()) instead"
        )
    contiguous_strides = np.cumprod((1, *size[:0:-1]))[::-1]
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
    if not isinstance(metadata, dict):
        raise FileFormatError(f"tensor metadata of type {type(metadata).__name__}, not a dict")
    if metadata.get("conj"):
        array = np.conj(array)
    if metadata.get("neg"):
        array = np.negative(array)
    return array


def _rebuild_tensor(u, storage, storage_offset, size, stride):
    return tensor_view(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(
    u, storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None
):
    return _apply_tensor_metadata(tensor_view(storage, storage_offset, size, stride), metadata)


def _rebuild_tensor_v3(
    u, storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None
):
    array = tensor_view(storage, storage_offset, size, stride, dtype)
    return _apply_tensor_metadata(array, metadata)


def _rebuild_parameter(u, data, requires_grad, backward_hooks):
    return _tensor_result(data)


def _rebuild_parameter_with_state(u, data, requires_grad, backward_hooks, state):
    return _tensor_result(data)  # Python attributes set on the Parameter have nowhere to go


def _rebuild_device_tensor_from_numpy(u, data, dtype, device, requires_grad):
    if data is None:
        return None
    if not isinstance(data, np.ndarray) or not isinstance(dtype, TorchDtype):
        raise FileFormatError(
            f"XLA-style tensor with data {type(data).__name__} and dtype {type(dtype).__name__}"
        )
    return data.astype(dtype.numpy)


def _tensor_result(data: Any) -> Any:
    if data is not None and not isinstance(data, np.ndarray):
        raise FileFormatError(f"a parameter wraps {type(data).__name__}, not a tensor")
    return data


_TENSOR_REBUILDERS = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_tensor_v3": _rebuild_tensor_v3,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter_with_state,
    "_rebuild_device_tensor_from_numpy": _rebuild_device_tensor_from_numpy,
    "_rebuild_device_tensor_from_cpu_tensor": _rebuild_device_tensor_from_numpy,
    "_rebuild_xla_tensor": _rebuild_device_tensor_from_numpy,
}


def _rebuild_from_type_v2(u, func, new_type, args, state=None):
    # A tensor subclass, or a tensor with Python attributes: rebuild the plain tensor.
    if not (isinstance(func, Constructor) and getattr(func, "rebuilds_tensors", False)):
        raise FileFormatError(f"tensor subclass rebuilt by {func!r}, which is not supported")
    if not isinstance(args, tuple):
        raise FileFormatError("tensor subclass with rebuild arguments that are not a tuple")
    return func.call(u, *args)


def _unsupported_rebuild(name: str):
    def rebuild(u, *args: Any) -> None:
        raise FileFormatError(
            f"the file holds a tensor rebuilt by torch._utils.{name} (quantized, sparse, nested, "
            "meta or subclass tensors), which this reader does not support; convert it to a "
            "dense tensor in torch (e.g. .dequantize() or .to_dense()) and save again"
        )

    return rebuild


# ---------------------------------------------------------------------------------------------
# numpy arrays, scalars and dtypes
# ---------------------------------------------------------------------------------------------


class _DtypePlaceholder:
    """What `numpy.dtype(spec, ...)` makes until its BUILD says the byte order."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _ArrayPlaceholder:
    """What `_reconstruct(ndarray, ...)` makes until its BUILD brings (shape, dtype, bytes)."""


def _checked_dtype(dtype: Any) -> np.dtype:
    if isinstance(dtype, _DtypePlaceholder):
        dtype = dtype.dtype
    if not isinstance(dtype, np.dtype):
        raise FileFormatError(f"numpy data of dtype {type(dtype).__name__}")
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields is not None:
        raise FileFormatError(
            f"numpy data of dtype {dtype}: only numbers, booleans and text are read (object and "
            "structured dtypes can carry code or read out of bounds)"
        )
    return dtype


def _numpy_dtype(u, spec: Any, align: Any = False, copy: Any = False) -> _DtypePlaceholder:
    if not isinstance(spec, str) or len(spec) > 16:
        raise FileFormatError(f"numpy dtype {spec!r}")
    try:
        dtype = np.dtype(spec)
    except TypeError as e:
        raise FileFormatError(f"numpy dtype {spec!r}: {e}") from None
    return _DtypePlaceholder(_checked_dtype(dtype))


def _build_dtype(placeholder: _DtypePlaceholder, state: Any) -> np.dtype:
    # numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, align, flags)
    if not isinstance(state, tuple) or len(state) < 2 or state[1] not in "<>|=":
        raise FileFormatError(f"numpy dtype state {str(state)[:60]!r}")
    if any(x is not None for x in state[2:5]):
        raise FileFormatError("structured or subarray numpy dtypes are not read")
    dtype = placeholder.dtype
    return dtype.newbyteorder(state[1]) if state[1] in "<>" and dtype.itemsize > 1 else dtype


def _numpy_reconstruct(u, subtype: Any, shape: Any, dtype: Any) -> Any:
    # numpy pickles an array as `_reconstruct(ndarray, (0,), b'b')` then BUILD with the real
    # (version, shape, dtype, is_fortran, rawdata).
    if isinstance(subtype, type) and issubclass(subtype, StandIn):
        return u.made(subtype(subtype, shape, dtype))  # an ndarray subclass we do not import
    if not (isinstance(subtype, Constructor) and subtype.name == "numpy.ndarray"):
        raise FileFormatError(f"numpy array of type {subtype!r}")
    return _ArrayPlaceholder()


def _build_array(placeholder: _ArrayPlaceholder, state: Any) -> np.ndarray:
    if not isinstance(state, tuple) or len(state) != 5:
        raise FileFormatError(f"numpy array state of {type(state).__name__}")
    _version, shape, dtype, fortran, raw = state
    dtype = _checked_dtype(dtype)
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise FileFormatError(f"numpy array of shape {str(shape)[:60]}")
    if isinstance(raw, str):
        raw = raw.encode("latin1")  # Python 2 pickles
    if not isinstance(raw, (bytes, bytearray)):
        raise FileFormatError(f"numpy array data of {type(raw).__name__}, not bytes")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise FileFormatError(
            f"numpy array of shape {shape} and dtype {dtype} needs "
            f"{math.prod(shape) * dtype.itemsize} bytes; the pickle holds {len(raw)}"
        )
    array = np.frombuffer(raw, dtype).copy()
    return array.reshape(shape, order="F" if fortran else "C")


def _numpy_scalar(u, dtype: Any, data: Any = None) -> Any:
    dtype = _checked_dtype(dtype)
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise FileFormatError(f"numpy {dtype} scalar with {type(data).__name__} data")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


# ---------------------------------------------------------------------------------------------
# Builtins, containers and small library types: fresh objects from checked arguments
# ---------------------------------------------------------------------------------------------

_PRIMITIVE = (bool, int, float, complex, str, bytes, type(None))
_SEQUENCES = (list, tuple, set, frozenset, range, dict, DictWithAttrs)


def _items(u: SafeUnpickler, value: Any, what: str) -> Any:
    """A materialised container argument, counted against the load's budget."""
    if not isinstance(value, _SEQUENCES):
        raise FileFormatError(f"{what} of {type(value).__name__}; expected a list, tuple or range")
    u.spend(len(value), what)
    return value


def _container(kind: type):
    def make(u, value: Any = ()) -> Any:
        return kind(_items(u, value, f"{kind.__name__}(...)"))

    return make


def _primitive(kind: type):
    def make(u, *args: Any) -> Any:
        if len(args) > 2 or not all(isinstance(a, _PRIMITIVE) for a in args):
            raise FileFormatError(f"{kind.__name__}() of {[type(a).__name__ for a in args]}")
        if kind in (bytes, bytearray) and args and isinstance(args[0], int):
            raise FileFormatError(f"{kind.__name__}({args[0]}) in the pickle")
        return kind(*args)

    return make


def _range(u, *args: Any) -> range:
    if not 1 <= len(args) <= 3 or not all(type(a) is int for a in args):
        raise FileFormatError(f"range() of {[type(a).__name__ for a in args]}")
    return range(*args)  # lazy; materialising it (list(range(...))) is counted


def _slice(u, *args: Any) -> slice:
    if len(args) > 3 or not all(a is None or type(a) is int for a in args):
        raise FileFormatError("slice() of non-integers")
    return slice(*args)


def _latin1_encode(u, text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles write `bytes` as `_codecs.encode(text, "latin1")`.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise FileFormatError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _attribute_state(obj: Any, state: Any) -> Any:
    """BUILD for the loader's own dicts and namespaces: plain attributes from a str-keyed dict."""
    if isinstance(state, tuple) and len(state) == 2 and not state[1]:
        state = state[0]  # (state, slotstate) with no slot state
    if state is None:
        return obj
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise FileFormatError(f"attributes for {type(obj).__name__} of {type(state).__name__}")
    if any(k.startswith("__") for k in state):
        raise FileFormatError(f"the pickle sets dunder attributes on {type(obj).__name__}")
    vars(obj).update(state)
    return obj


def _ordered_dict(u, pairs: Any = ()) -> DictWithAttrs:
    d = DictWithAttrs(_items(u, pairs, "OrderedDict(...)"))
    return d


def _namespace_call(u, **kwargs: Any) -> argparse.Namespace:
    u.spend(len(kwargs), "Namespace(...)")
    return argparse.Namespace(**kwargs)


def _counter(u, value: Any = ()) -> collections.Counter:
    return collections.Counter(_items(u, value, "Counter(...)"))


def _defaultdict(u, *args: Any) -> dict:
    return {}  # the factory is dropped, never called


def _reconstructor(u, cls: Any, base: Any, state: Any = None) -> Any:
    # copyreg._reconstructor (protocol 0/1 objects): only for classes this load made.
    if isinstance(cls, type) and issubclass(cls, StandIn):
        u._callable(cls, "reconstructs")
        return u.made(cls(base, state))
    if isinstance(cls, Constructor) and state is None:
        return cls.new(u)
    raise FileFormatError(f"copyreg._reconstructor({cls!r}, {base!r})")


def _torch_device(u, kind: Any, index: Any = None) -> str:
    if not isinstance(kind, str) or len(kind) > 64 or not (index is None or type(index) is int):
        raise FileFormatError(f"torch.device of {type(kind).__name__}, {type(index).__name__}")
    return kind if index is None else f"{kind}:{index}"


def _torch_size(u, value: Any = ()) -> tuple:
    value = _items(u, value, "torch.Size(...)")
    if not all(type(n) is int for n in value):
        raise FileFormatError("torch.Size of non-integers")
    return tuple(value)


def _datetime(kind: type):
    allowed = _PRIMITIVE + (datetime.timezone, datetime.timedelta)

    def make(u, *args: Any) -> Any:
        if len(args) > 8 or not all(isinstance(a, allowed) for a in args):
            raise FileFormatError(f"{kind.__name__}() of {[type(a).__name__ for a in args]}")
        return kind(*args)

    return make


def _pure_path(kind: type):
    def make(u, *parts: Any) -> Any:
        if not all(isinstance(p, str) for p in parts):
            raise FileFormatError(f"{kind.__name__} of non-strings")
        return kind(*parts)

    return make


def _made(make, constructor_name: str, build=None):
    """A Constructor whose results BUILD may update through `build`."""

    def call(u, *args, **kwargs):
        obj = make(u, *args, **kwargs)
        return obj if isinstance(obj, StandIn) else u.made(obj, constructor)

    constructor = Constructor(constructor_name, call, build=build)
    return constructor


def _factories() -> dict[tuple[str, str], Any]:
    """(module, name) -> a function making the Constructor (fresh for every global)."""
    out: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): lambda: _made(
            _ordered_dict, "collections.OrderedDict", _attribute_state
        ),
        ("collections", "defaultdict"): lambda: Constructor("defaultdict", _defaultdict),
        ("collections", "Counter"): lambda: Constructor("Counter", _counter),
        ("argparse", "Namespace"): _namespace_constructor,
        ("_codecs", "encode"): lambda: Constructor("_codecs.encode", _latin1_encode),
        ("copyreg", "_reconstructor"): lambda: Constructor("_reconstructor", _reconstructor),
        ("numpy", "ndarray"): lambda: Constructor("numpy.ndarray"),
        ("numpy", "dtype"): lambda: _made(_numpy_dtype, "numpy.dtype", _build_dtype),
        ("numpy._core.multiarray", "_reconstruct"): lambda: _made(
            _numpy_reconstruct, "numpy.ndarray", _build_array
        ),
        ("numpy._core.multiarray", "scalar"): lambda: Constructor("numpy scalar", _numpy_scalar),
        ("torch", "Size"): lambda: Constructor("torch.Size", _torch_size),
        ("torch", "device"): lambda: Constructor("torch.device", _torch_device),
        ("torch._tensor", "_rebuild_from_type_v2"): lambda: Constructor(
            "_rebuild_from_type_v2", _rebuild_from_type_v2
        ),
        ("torch._tensor", "_rebuild_from_type"): lambda: Constructor(
            "_rebuild_from_type", _rebuild_from_type_v2
        ),
        ("builtins", "range"): lambda: Constructor("range", _range),
        ("builtins", "slice"): lambda: Constructor("slice", _slice),
        ("builtins", "object"): lambda: Constructor("object", lambda u: object()),
    }
    for name, fn in _TENSOR_REBUILDERS.items():
        out[("torch._utils", name)] = _tensor_rebuilder(name, fn)
    for kind in (set, frozenset, list, tuple, dict):
        out[("builtins", kind.__name__)] = _constant_factory(kind.__name__, _container(kind))
    for kind in (bool, int, float, str, complex, bytes, bytearray):
        out[("builtins", kind.__name__)] = _constant_factory(kind.__name__, _primitive(kind))
    for kind in (datetime.datetime, datetime.date, datetime.time, datetime.timedelta):
        out[("datetime", kind.__name__)] = _constant_factory(kind.__name__, _datetime(kind))
    out[("datetime", "timezone")] = _constant_factory("timezone", _datetime(datetime.timezone))
    # Concrete paths would touch the file system on some methods; pure paths never do.
    for module in ("pathlib", "pathlib._local"):
        for prefix in ("", "Pure"):
            for flavour in ("Posix", "Windows"):
                kind = getattr(pathlib, f"Pure{flavour}Path")
                out[(module, f"{prefix}{flavour}Path")] = _constant_factory(
                    kind.__name__, _pure_path(kind)
                )
    return out


def _constant_factory(name: str, call):
    return lambda: Constructor(name, call)


def _tensor_rebuilder(name: str, fn):
    def factory() -> Constructor:
        constructor = Constructor(f"torch._utils.{name}", fn)
        constructor.rebuilds_tensors = True
        return constructor

    return factory


def _namespace_constructor() -> Constructor:
    constructor = Constructor(
        "argparse.Namespace",
        lambda u, **kw: u.made(_namespace_call(u, **kw), constructor),
        new=lambda u, *args: u.made(argparse.Namespace(), constructor),
        build=_attribute_state,
    )
    return constructor


_FACTORIES = _factories()


def resolve(module: str, name: str) -> Any:
    """What global `module.name` of a torch pickle stands for (see the module docstring)."""
    module = MODULE_RENAMES.get(module, module)
    if (module, name) in _FACTORIES:
        return _FACTORIES[(module, name)]()
    if module in ("torch", "torch.cuda", "torch.storage") and name.endswith("Storage"):
        if name in STORAGE_DTYPES:
            return StorageType(name)
        if name.startswith(("QInt", "QUInt")):
            raise FileFormatError(
                f"storage type {module}.{name} holds a quantized tensor, which this reader does "
                "not support; dequantize it in torch (.dequantize()) and save again"
            )
        raise FileFormatError(
            f"unknown storage type {module}.{name}; known: {', '.join(sorted(STORAGE_DTYPES))}"
        )
    if module == "torch":
        canonical = _TORCH_DTYPE_ALIASES.get(name, name)
        if canonical in NUMPY_DTYPES or canonical in _TORCH_DTYPES_WITHOUT_NUMPY:
            return TorchDtype(canonical)
    if module == "torch._utils" and name.startswith("_rebuild"):
        return Constructor(f"torch._utils.{name}", _unsupported_rebuild(name))
    return None  # any other global: a StandIn class that records its arguments


__all__ = [
    "DictWithAttrs",
    "FileFormatError",
    "MODULE_RENAMES",
    "Storage",
    "StorageType",
    "TorchDtype",
    "UnsafePickleError",
    "resolve",
    "tensor_view",
]
