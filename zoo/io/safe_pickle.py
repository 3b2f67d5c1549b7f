"""A pickle reader that runs no code from the file and cannot change the rest of the process.

Pickle is a small stack machine whose programs call any importable callable (GLOBAL +
REDUCE) and then set state on what it returned (BUILD). An allowlist of globals is not
enough: an allowed callable that returns a shared object (a class, a function, a cached
dtype) lets BUILD rewrite it for the whole process. `SafeUnpickler` (on the pure-Python
`pickle._Unpickler`, whose opcodes can be overridden one by one) therefore enforces:

- every global the file names resolves, per load, to a fresh `Constructor` (a factory the
  loader owns) or to a fresh `StandIn` class; nothing else can be called (REDUCE, NEWOBJ,
  OBJ, INST), and a constructor checks its arguments before building anything;
- BUILD applies only to objects a constructor of this load created and declared buildable,
  and through the constructor's own `build` (never `__setstate__` or `setattr` on anything
  else);
- the extension registry (EXT1/2/4) and out-of-band buffers are refused;
- reads never ask the file for more bytes than it holds (`BoundedReader`), BYTEARRAY8
  allocates only what is present, and the elements of all containers the load builds are
  counted against a budget, so a few bytes cannot ask for gigabytes (`list(range(10**10))`).

Every refusal raises `UnsafePickleError` (a ValueError) saying what the file tried.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable
from typing import Any, ClassVar

# Elements (list items, dict entries, ...) one load may create; a real checkpoint pickle holds
# thousands (state-dict entries, optimizer slots, hyper-parameters), never millions.
DEFAULT_ITEM_BUDGET = 10_000_000


class UnsafePickleError(ValueError):
    """The pickle asked for something this reader refuses (the message says what)."""


class StandIn:
    """Stands in for an object whose class (or function) the loader does not import.

    The stand-in class for `pkg.mod.Thing` has `module == "pkg.mod"` and `qualname == "Thing"`;
    an instance keeps what unpickling gave it: `args`/`kwargs` (the call or `__new__`
    arguments), `state` (what BUILD gave it, usually the object's `__dict__`), `mapping`
    (items set on it, for dict subclasses) and `sequence` (items appended, for list
    subclasses). Attribute reads fall through to `state` when it is a dict, so
    `stand_in.lr` works for a config object whose `__dict__` held `lr`. Stand-in classes are
    made afresh for every load, so nothing a file does to one reaches another load.
    """

    module: ClassVar[str] = ""
    qualname: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = super().__new__(cls)
        obj.args, obj.kwargs = args, kwargs
        obj.state, obj.mapping, obj.sequence = None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ kept the arguments

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


def stand_in_class(module: str, qualname: str) -> type[StandIn]:
    """A new stand-in class for `module.qualname` (one per global per load)."""
    attrs = {"module": module, "qualname": qualname, "__module__": __name__}
    return type(qualname.rpartition(".")[2] or "StandIn", (StandIn,), attrs)


class Constructor:
    """What an allowed global resolves to: `call(*args)` for REDUCE / OBJ / INST, `new(*args)`
    for NEWOBJ (default: refused), and `build(obj, state)` for BUILD on what it made (default:
    refused). The functions get the unpickler first, to count items (`spend`) or to declare
    a result buildable (`made`)."""

    def __init__(
        self,
        name: str,
        call: Callable[..., Any] | None = None,
        *,
        new: Callable[..., Any] | None = None,
        build: Callable[[Any, Any], Any] | None = None,
    ):
        self.name, self._call, self._new, self._build = name, call, new, build

    def call(self, unpickler: SafeUnpickler, *args: Any, **kwargs: Any) -> Any:
        if self._call is None:
            raise UnsafePickleError(f"the pickle calls {self.name}, which may only be created")
        return self._call(unpickler, *args, **kwargs)

    def new(self, unpickler: SafeUnpickler, *args: Any, **kwargs: Any) -> Any:
        if self._new is None:
            raise UnsafePickleError(f"the pickle creates {self.name} with __new__ (NEWOBJ)")
        return self._new(unpickler, *args, **kwargs)

    def build(self, obj: Any, state: Any) -> Any:
        """The object BUILD leaves on the stack (the same object, or a replacement)."""
        if self._build is None:
            raise UnsafePickleError(f"the pickle sets state on a {self.name} (BUILD)")
        return self._build(obj, state)

    def __repr__(self) -> str:
        return f"<{self.name}>"


class BoundedReader:
    """A binary file whose read(n) never asks for more than the bytes left before `end`
    (file.read(n) of a buffered file allocates n bytes first, whatever the file holds)."""

    def __init__(self, file: Any, end: int):
        self._file, self._end = file, end

    def _left(self) -> int:
        return max(0, self._end - self._file.tell())

    def read(self, n: int = -1) -> bytes:
        n = self._left() if n is None or n < 0 else min(n, self._left())
        return self._file.read(n)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)[: self._left()]
        return self._file.readinto(view)

    def readline(self, limit: int = -1) -> bytes:
        left = self._left()
        return self._file.readline(left if limit is None or limit < 0 else min(limit, left))

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)


def _op(name: str) -> int:
    return getattr(pickle, name)[0]


class SafeUnpickler(pickle._Unpickler):
    """Unpickles with the rules of the module docstring.

    resolve(module, name): the `Constructor` (or any non-callable constant, e.g. a storage
    type) a global stands for; return None for a global to become a `StandIn` class.
    module_renames: old module names -> current ones (Python 2, numpy 1), applied first.
    persistent_load(pid): what a persistent id stands for (torch's storages).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(
        self,
        file: Any,
        *,
        resolve: Callable[[str, str], Any],
        persistent_load: Callable[[Any], Any],
        item_budget: int = DEFAULT_ITEM_BUDGET,
        encoding: str = "utf-8",
        module_renames: dict[str, str] | None = None,
    ):
        super().__init__(file, encoding=encoding, fix_imports=False)
        self._resolve, self._persistent_load = resolve, persistent_load
        self._renames = module_renames or {}
        self._items_left = item_budget
        self._stand_ins: dict[tuple[str, str], type[StandIn]] = {}
        # id -> (object, its constructor): the objects BUILD may touch (kept alive here so
        # that an id is never reused during the load).
        self._buildable: dict[int, tuple[Any, Constructor | None]] = {}

    # --- what constructors call ------------------------------------------------------------
    def spend(self, n: int, what: str) -> None:
        """Counts n elements against the load's budget."""
        self._items_left -= n
        if self._items_left < 0:
            raise UnsafePickleError(
                f"the pickle builds more than {DEFAULT_ITEM_BUDGET:,} elements ({what}); no "
                "checkpoint holds that many Python objects"
            )

    def made(self, obj: Any, constructor: Constructor | None = None) -> Any:
        """Declares obj (made by constructor) open to BUILD."""
        self._buildable[id(obj)] = (obj, constructor)
        return obj

    # --- globals -----------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        if not isinstance(module, str) or not isinstance(name, str):
            raise UnsafePickleError("a global whose module or name is not a string")
        module = self._renames.get(module, module)
        found = self._resolve(module, name)
        if found is None:
            key = (module, name)
            if key not in self._stand_ins:
                self._stand_ins[key] = stand_in_class(module, name)
            return self._stand_ins[key]
        return found

    def persistent_load(self, pid: Any) -> Any:
        return self._persistent_load(pid)

    def _callable(self, func: Any, how: str) -> Any:
        if isinstance(func, Constructor) or (
            isinstance(func, type)
            and issubclass(func, StandIn)
            and self._stand_ins.get((func.module, func.qualname)) is func
        ):
            return func
        raise UnsafePickleError(f"the pickle {how} {type(func).__name__} {short_repr(func)}")

    def _make(self, func: Any, args: tuple, kwargs: dict | None, how: str) -> Any:
        func = self._callable(func, how)
        self.spend(len(args) + len(kwargs or {}), "call arguments")
        if isinstance(func, Constructor):
            if how == "creates":
                return func.new(self, *args, **(kwargs or {}))
            return func.call(self, *args, **(kwargs or {}))
        return self.made(func(*args, **(kwargs or {})))  # a StandIn instance

    # --- opcodes that call or build ------------------------------------------------------
    def load_reduce(self):
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise UnsafePickleError(f"REDUCE with arguments {short_repr(args)}, not a tuple")
        self.stack[-1] = self._make(self.stack[-1], args, None, "calls")

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(args, tuple):
            raise UnsafePickleError(f"NEWOBJ with arguments {short_repr(args)}, not a tuple")
        self.append(self._make(cls, args, None, "creates"))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise UnsafePickleError("NEWOBJ_EX with arguments that are not a tuple and a dict")
        self.append(self._make(cls, args, kwargs, "creates"))

    def _instantiate(self, klass, args):
        self.append(self._make(klass, tuple(args), None, "calls"))

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        entry = self._buildable.get(id(inst))
        if entry is None or entry[0] is not inst:
            raise UnsafePickleError(
                f"the pickle sets state on {type(inst).__name__} {short_repr(inst)}, an object "
                "this load did not create (BUILD)"
            )
        _, constructor = entry
        if constructor is None:  # a StandIn: it only records the state
            inst.__setstate__(state)
            return
        built = constructor.build(inst, state)
        if built is not inst:  # placeholders (numpy arrays, dtypes) become the real object
            self.stack[-1] = built
            for key, value in self.memo.items():
                if value is inst:
                    self.memo[key] = built

    # --- containers: counted ---------------------------------------------------------------
    def load_appends(self):
        items = self.pop_mark()
        self.spend(len(items), "list items")
        target = self.stack[-1]
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, StandIn):
            target.extend(items)
        else:
            raise UnsafePickleError(f"the pickle appends to a {type(target).__name__}")

    def load_append(self):
        item = self.stack.pop()
        self.spend(1, "list items")
        target = self.stack[-1]
        if not isinstance(target, (list, StandIn)):
            raise UnsafePickleError(f"the pickle appends to a {type(target).__name__}")
        target.append(item)

    def load_setitems(self):
        items = self.pop_mark()
        self.spend(len(items) // 2, "dict entries")
        target = self.stack[-1]
        if not isinstance(target, (dict, StandIn)):
            raise UnsafePickleError(f"the pickle sets items on a {type(target).__name__}")
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        self.spend(1, "dict entries")
        target = self.stack[-1]
        if not isinstance(target, (dict, StandIn)):
            raise UnsafePickleError(f"the pickle sets items on a {type(target).__name__}")
        target[key] = value

    def load_additems(self):
        items = self.pop_mark()
        self.spend(len(items), "set items")
        target = self.stack[-1]
        if not isinstance(target, set):
            raise UnsafePickleError(f"the pickle adds items to a {type(target).__name__}")
        target.update(items)

    def load_tuple(self):
        items = self.pop_mark()
        self.spend(len(items), "tuple items")
        self.append(tuple(items))

    def load_list(self):
        items = self.pop_mark()
        self.spend(len(items), "list items")
        self.append(items)

    def load_dict(self):
        items = self.pop_mark()
        self.spend(len(items) // 2, "dict entries")
        self.append({items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)})

    def load_frozenset(self):
        items = self.pop_mark()
        self.spend(len(items), "set items")
        self.append(frozenset(items))

    # --- refused or bounded opcodes --------------------------------------------------------
    def load_ext(self):
        raise UnsafePickleError("the pickle uses the copyreg extension registry (EXT)")

    def load_buffer(self):
        raise UnsafePickleError("the pickle refers to out-of-band buffers")

    def load_bytearray8(self):
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)  # at most what the file holds
        if len(data) != size:
            raise UnsafePickleError(f"BYTEARRAY8 of {size} bytes; the pickle holds {len(data)}")
        self.append(bytearray(data))

    dispatch[_op("REDUCE")] = load_reduce
    dispatch[_op("NEWOBJ")] = load_newobj
    dispatch[_op("NEWOBJ_EX")] = load_newobj_ex
    dispatch[_op("BUILD")] = load_build
    dispatch[_op("APPENDS")] = load_appends
    dispatch[_op("APPEND")] = load_append
    dispatch[_op("SETITEMS")] = load_setitems
    dispatch[_op("SETITEM")] = load_setitem
    dispatch[_op("ADDITEMS")] = load_additems
    dispatch[_op("TUPLE")] = load_tuple
    dispatch[_op("LIST")] = load_list
    dispatch[_op("DICT")] = load_dict
    dispatch[_op("FROZENSET")] = load_frozenset
    for _name in ("EXT1", "EXT2", "EXT4"):
        dispatch[_op(_name)] = load_ext
    for _name in ("NEXT_BUFFER", "READONLY_BUFFER"):
        dispatch[_op(_name)] = load_buffer
    dispatch[_op("BYTEARRAY8")] = load_bytearray8
    del _name


def short_repr(obj: Any) -> str:
    """repr(obj) cut to 80 characters, whatever a hostile object's repr does."""
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 - a hostile object's repr may fail in any way
        text = object.__repr__(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def loads(data: bytes, **kwargs: Any) -> Any:
    """`SafeUnpickler(io.BytesIO(data), **kwargs).load()`."""
    return SafeUnpickler(io.BytesIO(data), **kwargs).load()
