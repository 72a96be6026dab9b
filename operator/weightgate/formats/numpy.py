"""Reader for NumPy ``.npy`` headers (format versions 1.0, 2.0 and 3.0).

Layout (numpy/lib/format.py): the magic (byte 0x93, then ``NUMPY``), a major and minor
version byte, the header length (uint16 for 1.0, uint32 for 2.0 and 3.0, little-endian),
the header (latin-1 for 1.0/2.0, UTF-8 for 3.0: a Python dict literal with exactly the
keys ``descr``, ``fortran_order`` and ``shape``, padded with spaces and a newline), then
the data. Object dtypes store the data as a pickle of the whole array.

The header is parsed with ``ast.literal_eval`` (literals only, never evaluated code) once
its length has been checked against the limit, and the dtype description is turned into a
dtype by NumPy's own ``descr_to_dtype``, which only interprets type strings.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.lib import format as np_format

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.detect import NUMPY_MAGIC, BytesLike

_VERSIONS: dict[tuple[int, int], tuple[str, str]] = {
    (1, 0): ("<H", "latin-1"),
    (2, 0): ("<I", "latin-1"),
    (3, 0): ("<I", "utf-8"),
}
_EXPECTED_KEYS = frozenset({"descr", "fortran_order", "shape"})
_PY2_LONG = re.compile(r"(?<=\d)L\b")

NUMPY_HEADER_LIMIT = 10_000
"""NumPy's own cap on the header (``max_header_size``), lifted with allow_pickle=True."""

PARSE_LIMIT = 1024 * 1024
"""Headers longer than this are not handed to ``ast.literal_eval``."""


@dataclass(frozen=True)
class NpyHeader:
    """A parsed ``.npy`` header.

    Attributes:
        version: Format version (major, minor).
        descr: The dtype description as written.
        fortran_order: Column-major data.
        shape: Array shape.
        dtype: The dtype NumPy would build from ``descr``.
        data_offset: Where the data (or the pickle, for object dtypes) starts.
        header_length: Length of the header dict text.
    """

    version: tuple[int, int]
    descr: object
    fortran_order: bool
    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]
    data_offset: int

    header_length: int

    @property
    def has_object(self) -> bool:
        """Whether the data is a pickle (object dtype anywhere in the description)."""
        return bool(self.dtype.hasobject)

    @property
    def data_bytes(self) -> int:
        """Bytes of raw data a non-object array needs."""
        return math.prod(self.shape) * self.dtype.itemsize


def read_npy_header(data: BytesLike, max_header_bytes: int) -> NpyHeader:
    """Parse the header of a ``.npy`` file.

    Args:
        data: The whole file (or archive member).
        max_header_bytes: Largest header accepted (``limits.max_header_bytes``).

    Raises:
        FormatError: The header breaks the format (offset of the faulty field).
        LimitExceeded: The header is longer than the limit.
    """
    view = memoryview(data)
    if bytes(view[:6]) != NUMPY_MAGIC:
        raise FormatError("missing the \\x93NUMPY magic", 0)
    if len(view) < 8:
        raise FormatError("file ends inside the version bytes", len(view))
    version = (view[6], view[7])
    layout = _VERSIONS.get(version)
    if layout is None:
        raise FormatError(f"unsupported format version {version[0]}.{version[1]}", 6)
    length_format, encoding = layout
    length_size = struct.calcsize(length_format)
    if len(view) < 8 + length_size:
        raise FormatError("file ends inside the header length", len(view))
    (header_length,) = struct.unpack_from(length_format, view, 8)
    start = 8 + length_size
    if header_length > max_header_bytes or header_length > PARSE_LIMIT:
        raise LimitExceeded(
            f"header of {header_length} bytes exceeds "
            f"{min(max_header_bytes, PARSE_LIMIT)} (limits.max_header_bytes)",
            8,
        )
    if header_length > len(view) - start:
        raise FormatError(
            f"header declares {header_length} bytes but only {len(view) - start} remain", 8
        )
    try:
        text = bytes(view[start : start + header_length]).decode(encoding)
    except UnicodeDecodeError as exc:
        raise FormatError(f"header is not {encoding} text", start + exc.start) from exc
    fields = _parse_dict(text, version, start)
    shape = fields["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise FormatError(f"shape is not a tuple of non-negative integers: {shape!r}", start)
    fortran_order = fields["fortran_order"]
    if not isinstance(fortran_order, bool):
        raise FormatError(f"fortran_order is not a bool: {fortran_order!r}", start)
    try:
        dtype = np_format.descr_to_dtype(cast("Any", fields["descr"]))
    except Exception as exc:  # NumPy's own parser; whatever it rejects is malformed
        raise FormatError(f"descr is not a dtype description: {exc}", start) from exc
    return NpyHeader(
        version, fields["descr"], fortran_order, shape, dtype, start + header_length,
        header_length,
    )  # fmt: skip


def _parse_dict(text: str, version: tuple[int, int], offset: int) -> dict[str, object]:
    try:
        value = ast.literal_eval(text)
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        if version == (3, 0):
            raise FormatError(f"header is not a Python literal: {exc}", offset) from exc
        # Python 2 wrote long integers as 3L; NumPy strips the L for 1.0 and 2.0 headers.
        try:
            value = ast.literal_eval(_PY2_LONG.sub("", text))
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            raise FormatError(f"header is not a Python literal: {exc}", offset) from exc
    if not isinstance(value, dict):
        raise FormatError("header is not a dict", offset)
    if value.keys() != _EXPECTED_KEYS:
        keys = sorted(str(k) for k in value)
        raise FormatError(f"header keys are {keys}, expected descr, fortran_order, shape", offset)
    return {str(k): v for k, v in value.items()}
