"""Where joblib puts array bytes inside a pickle stream, read from the emulated state.

``joblib.dump`` pickles a ``NumpyArrayWrapper`` (subclass, shape, order, dtype,
allow_mmap, and since joblib 1.2 numpy_array_alignment_bytes) and, right after the
wrapper's BUILD opcode, writes the array itself into the same file: a padding-length byte
and that many padding bytes when alignment is on, then ``prod(shape) * itemsize`` raw
bytes. Object arrays are written as a complete nested pickle instead. ``joblib.load``
reads those bytes with ``file.read``, so a static walk must step over them; this module
works out how many from the wrapper's emulated state (see joblib's ``numpy_pickle.py``,
``NumpyArrayWrapper.write_array`` and ``read_array``).

Getting this wrong in either direction lets the two readings part ways: the scan resumes
at one offset, joblib at another, and whatever joblib executes there goes unexamined. So
every input joblib and NumPy would read differently from the way ``joblib.dump`` writes
it is refused rather than guessed: a wrapper built any other way than joblib builds it
(``joblib.load`` recognises the *instance*, however it was made), a dtype whose
``hasobject`` flag disagrees with its type (NumPy trusts the pickled flags, which decides
between raw bytes and a nested pickle), or an element size NumPy would not use. Sizes and
object-ness come from NumPy's own ``dtype`` parser on the type string, never from a call
to ``dtype.__setstate__`` on hostile state (that can crash the interpreter).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from weightgate.formats.pickle.trace import DictValue, GlobalRef, Instance

WRAPPER_MODULE = "joblib.numpy_pickle"
WRAPPER_NAME = "NumpyArrayWrapper"
ARRAY_WRAPPER = f"{WRAPPER_MODULE}.{WRAPPER_NAME}"
"""The wrapper followed by inline array bytes (joblib >= 0.10)."""
FILE_WRAPPER = f"{WRAPPER_MODULE}.NDArrayWrapper"
"""The joblib <= 0.9 wrapper: ``np.load(allow_pickle=True)`` of a file named in its state."""

_ITEM_HASOBJECT = 0x01  # NPY_ITEM_HASOBJECT: the dtype holds Python objects
_SIZED_KINDS = frozenset("biufcMm")  # itemsize fixed by the type string
_FLEXIBLE_KINDS = frozenset("SUV")  # itemsize taken from the pickled state's elsize
_OBJECT_KINDS = frozenset("O")
_MAX_DTYPE_NESTING = 8
_MAX_SEARCH_ITEMS = 4096

# Callables that make an instance of their first argument without running its __init__
# (what pickle writes for protocols 0-1 and for __reduce_ex__ with copyreg.__newobj__).
_NEW_WITHOUT_INIT = frozenset(
    {"copyreg.__newobj__", "copyreg.__newobj_ex__", "copy_reg.__newobj__"}
)
_RECONSTRUCTORS = frozenset({"copyreg._reconstructor", "copy_reg._reconstructor"})
_OBJECT_CLASSES = frozenset({"builtins.object", "__builtin__.object"})

SCALAR_FUNCTIONS = frozenset(
    {
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core._multiarray_umath.scalar",
        "numpy._core._multiarray_umath.scalar",
    }
)
"""``scalar(dtype, obj)`` returns ``obj`` itself when the dtype is the object dtype."""


class ArrayLayout(NamedTuple):
    """What follows a wrapper's BUILD.

    Attributes:
        nbytes: Raw array bytes, or None for an object array (a nested pickle follows).
        aligned: A padding-length byte (and padding) precedes the data.
        error: Why the layout could not be determined, or None.
    """

    nbytes: int | None
    aligned: bool
    error: str | None = None


class WrapperKind(NamedTuple):
    """How an instance that receives a BUILD relates to joblib's wrappers.

    Attributes:
        dotted: ``ARRAY_WRAPPER``, ``FILE_WRAPPER``, or None when it is not a wrapper.
        problem: Why joblib's reading cannot be predicted (the instance may be a wrapper
            but was not built the way ``joblib.dump`` builds one), or None.
        init_args: The arguments its ``__init__`` ran with, when it ran.
    """

    dotted: str | None
    problem: str | None = None
    init_args: tuple[object, ...] | None = None


def is_array_wrapper(module: str, name: str) -> bool:
    """Whether a global is the class ``joblib.load`` reads inline array data for.

    Compared as a dotted path: protocol 4 resolves ``joblib`` + ``numpy_pickle.X`` to the
    same class.
    """
    return f"{module}.{name}" == ARRAY_WRAPPER


def _wrapper_dotted(value: object) -> str | None:
    if type(value) is GlobalRef and value.constant:
        dotted = value.dotted
        if dotted in (ARRAY_WRAPPER, FILE_WRAPPER):
            return dotted
    return None


def wrapper_kind(inst: Instance) -> WrapperKind:
    """Classify the target of a BUILD the way ``joblib``'s ``load_build`` would see it."""
    func, args = inst.func, inst.args
    dotted = _wrapper_dotted(func)
    if dotted is not None:
        if inst.kind in ("NEWOBJ", "NEWOBJ_EX"):
            return WrapperKind(dotted)
        # REDUCE, INST and OBJ call the class: __init__ sets attributes (alignment
        # among them) that the BUILD state may not mention.
        init_args = args if type(args) is tuple else None
        if dotted == ARRAY_WRAPPER:
            return WrapperKind(dotted, f"{WRAPPER_NAME} built by calling its constructor")
        return WrapperKind(dotted, None, init_args)
    if type(func) is GlobalRef and func.constant and type(args) is tuple and args:
        made = _wrapper_dotted(args[0])
        if made is not None:
            if func.dotted in _NEW_WITHOUT_INIT:
                return WrapperKind(made)
            if func.dotted in _RECONSTRUCTORS and len(args) == 3:
                base = args[1]
                if type(base) is GlobalRef and base.dotted in _OBJECT_CLASSES:
                    return WrapperKind(made)
    if _mentions_wrapper(args):
        return WrapperKind(
            None, "a joblib array wrapper is built indirectly; joblib.load would treat it as one"
        )
    return WrapperKind(None)


def _mentions_wrapper(value: object) -> bool:
    # Breadth-first over the emulated arguments, bounded: a joblib wrapper class passed
    # to some other callable may come back as a wrapper instance.
    queue: list[object] = [value]
    seen = 0
    while queue and seen < _MAX_SEARCH_ITEMS:
        item = queue.pop()
        seen += 1
        if _wrapper_dotted(item) is not None:
            return True
        if type(item) in (tuple, list):
            queue.extend(item)  # type: ignore[arg-type]
        elif type(item) is DictValue:
            for k, v in item:
                queue.append(k)
                queue.append(v)
        elif type(item) is Instance:
            queue.append(item.func)
            queue.append(item.args)
    return bool(queue)  # out of budget: assume the worst


def merged_state(previous: object, state: object) -> object:
    """The attributes after a second BUILD: a dict state updates, it does not replace."""
    if type(previous) is DictValue and type(state) is DictValue:
        return DictValue([*previous, *state])
    return state


def array_layout(state: object) -> ArrayLayout:
    """The layout announced by a ``NumpyArrayWrapper`` BUILD state (a dict)."""
    if type(state) is not DictValue:
        return ArrayLayout(None, False, "wrapper state is not a dict")
    aligned = state.lookup("numpy_array_alignment_bytes") is not None
    shape = state.lookup("shape")
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        return ArrayLayout(None, aligned, "shape is not a tuple of non-negative integers")
    dtype = dtype_info(state.lookup("dtype"))
    if isinstance(dtype, str):
        return ArrayLayout(None, aligned, dtype)
    itemsize, has_object = dtype
    if has_object:
        return ArrayLayout(None, False)
    return ArrayLayout(math.prod(shape) * itemsize, aligned)


def dtype_info(dtype: object, depth: int = 0) -> tuple[int, bool] | str:
    """(itemsize, hasobject) of an emulated ``numpy.dtype(...)`` call, or why not known.

    NumPy pickles a dtype as ``numpy.dtype(descr, False, True)`` plus a BUILD state
    ``(version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])``.
    ``dtype.__setstate__`` keeps ``elsize`` only for flexible types (S, U, V) and, from
    state version 3, takes ``hasobject`` from ``flags`` as written.
    """
    if type(dtype) is not Instance:
        return "dtype is not a reconstructed numpy.dtype"
    func = dtype.func
    if not (type(func) is GlobalRef and func.constant and func.name == "dtype"):
        return "dtype is not built by numpy.dtype"
    if func.module != "numpy" and not func.module.startswith("numpy."):
        return "dtype is not built by numpy.dtype"
    if depth > _MAX_DTYPE_NESTING:
        return "dtype nested too deeply"
    args = dtype.args
    if type(args) is not tuple or not args or type(args[0]) is not str:
        return "numpy.dtype arguments are not a type string"
    try:
        base = np.dtype(args[0])
    except (TypeError, ValueError, OverflowError, MemoryError) as exc:
        return f"unsupported dtype string {args[0][:40]!r} ({exc})"
    kind = base.kind
    if kind not in _SIZED_KINDS | _FLEXIBLE_KINDS | _OBJECT_KINDS:
        return f"unsupported dtype string {args[0][:40]!r}"
    typed_object = kind in _OBJECT_KINDS
    state = dtype.state
    if state is None:
        return base.itemsize, typed_object
    if type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4):
        return "numpy.dtype state is not a version 3/4 state tuple"
    subarray, names, fields, elsize, flags = state[2], state[3], state[4], state[5], state[7]
    if type(elsize) is not int or type(flags) is not int:
        return "numpy.dtype state has a non-integer size or flags"
    nested = _nested_object(subarray, names, fields, depth)
    if isinstance(nested, str):
        return nested
    if (subarray is not None or fields is not None) and kind != "V":
        return "numpy.dtype state gives fields to a non-void type"
    flag_object = bool(flags & _ITEM_HASOBJECT)
    if flag_object != (typed_object or nested):
        # NumPy trusts the flags: an object type flagged plain is read as raw pointers,
        # a plain type flagged object as a nested pickle.
        return "numpy.dtype hasobject flag disagrees with its type"
    if kind in _FLEXIBLE_KINDS:
        if elsize <= 0:
            return f"numpy.dtype state gives flexible type {args[0][:40]!r} size {elsize}"
        return elsize, flag_object
    return base.itemsize, flag_object


def _nested_object(subarray: object, names: object, fields: object, depth: int) -> bool | str:
    found = False
    if subarray is not None:
        if type(subarray) is not tuple or len(subarray) != 2:
            return "numpy.dtype subarray is not (dtype, shape)"
        info = dtype_info(subarray[0], depth + 1)
        if isinstance(info, str):
            return info
        found = info[1]
    if (names is None) != (fields is None):
        return "numpy.dtype names and fields disagree"
    if fields is not None:
        if type(fields) is not DictValue:
            return "numpy.dtype fields are not a dict"
        for _, spec in fields:
            if type(spec) is not tuple or not spec:
                return "numpy.dtype field is not (dtype, offset[, title])"
            info = dtype_info(spec[0], depth + 1)
            if isinstance(info, str):
                return info
            found = found or info[1]
    return found


def scalar_passes_through(args: object) -> bool:
    """Whether ``numpy...scalar(*args)`` may return its second argument unchanged.

    With the object dtype it does (a deprecated identity), which turns any value, an
    imported class or function included, into an apparently fresh call result.
    """
    if type(args) is not tuple or len(args) < 2:
        return False
    info = dtype_info(args[0])
    return isinstance(info, str) or info[1]
