"""Where joblib puts array bytes inside a pickle stream, read from the emulated state.

``joblib.dump`` pickles a ``NumpyArrayWrapper`` (subclass, shape, order, dtype,
allow_mmap, and since joblib 1.2 numpy_array_alignment_bytes) and, right after the
wrapper's BUILD opcode, writes the array itself into the same file: a padding-length byte
and that many ``0xff`` bytes when alignment is on, then ``prod(shape) * itemsize`` raw
bytes. Object arrays are written as a complete nested pickle instead. ``joblib.load``
reads those bytes with ``file.read``, so a static walk must step over them; this module
works out how many from the wrapper's emulated state (see joblib's ``numpy_pickle.py``,
``NumpyArrayWrapper.write_array`` and ``read_array``).
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

from weightgate.formats.pickle.trace import DictValue, GlobalRef, Instance

WRAPPER_MODULE = "joblib.numpy_pickle"
WRAPPER_NAME = "NumpyArrayWrapper"

_DESCR = re.compile(r"[a-zA-Z](\d+)")
_ITEM_REFCOUNT = 0x01  # NPY_ITEM_REFCOUNT: the dtype holds Python objects


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


def is_array_wrapper(module: str, name: str) -> bool:
    """Whether a global is the class ``joblib.load`` reads inline array data for."""
    return name == WRAPPER_NAME and module == WRAPPER_MODULE


def array_layout(state: object) -> ArrayLayout:
    """The layout announced by a ``NumpyArrayWrapper`` BUILD state (a dict)."""
    if type(state) is not DictValue:
        return ArrayLayout(None, False, "wrapper state is not a dict")
    aligned = state.lookup("numpy_array_alignment_bytes") is not None
    shape = state.lookup("shape")
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        return ArrayLayout(None, aligned, "shape is not a tuple of non-negative integers")
    dtype = _dtype_info(state.lookup("dtype"))
    if isinstance(dtype, str):
        return ArrayLayout(None, aligned, dtype)
    itemsize, has_object = dtype
    if has_object:
        return ArrayLayout(None, False)
    return ArrayLayout(math.prod(shape) * itemsize, aligned)


def _dtype_info(dtype: object) -> tuple[int, bool] | str:
    # numpy pickles a dtype as numpy.dtype(descr, False, True) plus a BUILD state
    # (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]).
    if type(dtype) is not Instance:
        return "dtype is not a reconstructed numpy.dtype"
    func = dtype.func
    if not (type(func) is GlobalRef and func.name == "dtype" and func.module.startswith("numpy")):
        return "dtype is not built by numpy.dtype"
    args = dtype.args
    if type(args) is not tuple or not args or type(args[0]) is not str:
        return "numpy.dtype arguments are not a type string"
    descr = args[0]
    match = _DESCR.fullmatch(descr)
    if match is None:
        return f"unsupported dtype string {descr[:40]!r}"
    itemsize = int(match.group(1))
    state = dtype.state
    flags = 0
    if type(state) is tuple and len(state) >= 8:
        elsize, flags_value = state[5], state[7]
        # Flexible types (S, U, V) carry their size in bytes here: 'U3' is 12 bytes.
        if type(elsize) is int and elsize > 0:
            itemsize = elsize
        if type(flags_value) is int:
            flags = flags_value
    has_object = descr[0] == "O" or bool(flags & _ITEM_REFCOUNT)
    return itemsize, has_object
