"""Reader for GGUF (llama.cpp) headers: metadata key/values and tensor infos.

Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md; the checks follow
llama.cpp's loader (``ggml/src/gguf.cpp``): no duplicate keys or tensor names, tensor
names under 64 bytes, at most 4 dimensions, known ggml types whose rows hold whole blocks,
``general.alignment`` a u32 power of two, and tensors laid out back to back in file order,
each padded to the alignment, inside the file.

Why our own reader: ``gguf.GGUFReader`` memory-maps the file and builds a numpy view for
every field and array item (2.5 s for a 93 MB model with 49k-token arrays) and trusts the
counts it reads. Here every count and length is checked against the limits and the bytes
left before anything is allocated, arrays of fixed-size items are skipped arithmetically,
and string arrays are bounds-checked in one tight loop without decoding. Versions 1 (u32
counts and lengths) to 3 are read, in either byte order. Problems that leave the rest
readable are collected as :class:`GGUFProblem`; the others raise
:class:`~weightgate.errors.FormatError` or :class:`~weightgate.errors.LimitExceeded`.
The type tables and records are in :mod:`weightgate.formats.gguf.types` (re-exported
by the package), the tensor size and layout checks in :mod:`weightgate.formats.gguf.layout`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.detect import BytesLike
from weightgate.formats.gguf.layout import align, check_layout, tensor_bytes
from weightgate.formats.gguf.types import (
    SCALAR_CODES,
    Fault,
    GGUFArray,
    GGUFField,
    GGUFProblem,
    GGUFTensorInfo,
    GGUFValue,
    GGUFValueType,
)
from weightgate.formats.limits import Limits

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = frozenset({1, 2, 3})
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = "general.alignment"
MAX_DIMS = 4
MAX_NAME_BYTES = 63
"""llama.cpp's GGML_MAX_NAME is 64 including the terminating NUL."""

_MAX_ARRAY_NESTING = 8
_KEPT_ARRAY_ITEMS = 256


@dataclass(frozen=True)
class GGUFFile:
    """A parsed GGUF header.

    Attributes:
        version: GGUF version (1-3).
        big_endian: True for the byte-swapped variant.
        fields: Metadata in file order.
        tensors: Tensor infos in file order.
        alignment: Data alignment in effect.
        data_offset: Absolute offset of the data section.
        trailing_bytes: Bytes after the last tensor's aligned end (or the aligned header
            end when there are no tensors).
        problems: Non-fatal problems, in the order found.
    """

    version: int
    big_endian: bool
    fields: tuple[GGUFField, ...]
    tensors: tuple[GGUFTensorInfo, ...]
    alignment: int
    data_offset: int
    trailing_bytes: int
    problems: tuple[GGUFProblem, ...]

    def field(self, key: str) -> GGUFField | None:
        """The first field named ``key``, or None."""
        return next((f for f in self.fields if f.key == key), None)


def read_gguf(data: BytesLike, limits: Limits) -> GGUFFile:
    """Parse and validate a GGUF header without reading tensor data.

    Raises:
        FormatError: Bad magic or version, truncated header, unknown value type, more
            than 4 dimensions, arrays nested too deeply.
        LimitExceeded: A count, length or the header size exceeds ``limits``.
    """
    return _Reader(memoryview(data), limits).read()


def read_string_items(
    data: BytesLike, array: GGUFArray, header: GGUFFile, limits: Limits, indices: Iterable[int]
) -> dict[int, str]:
    """Items ``indices`` of a string array of ``header`` (the parse only skips long arrays).

    ``data`` holds the file's bytes from its start at least to the array's end (the header
    suffices). The walk stops after the last index wanted and decodes only those, so a
    tokenizer's 200k tokens cost no more than the few asked for; every length is checked
    again, as in :func:`read_gguf`. Indices outside the array are left out.

    Raises:
        FormatError: ``array`` does not hold strings, or ``data`` ends inside it.
        LimitExceeded: A string exceeds ``limits.max_string_bytes``.
    """
    if array.item_type is not GGUFValueType.STRING:
        raise FormatError(f"array of {array.item_type.name}, not of strings", array.offset)
    wanted = {index for index in indices if 0 <= index < array.count}
    if array.items is not None:
        return {index: str(array.items[index]) for index in wanted}
    reader = _Reader(memoryview(data), limits)
    reader.order = ">" if header.big_endian else "<"
    reader.wide = header.version >= 2
    reader.pos = array.offset
    items = {}
    for index in range(max(wanted, default=-1) + 1):
        value = reader.string()
        if index in wanted:
            items[index] = value.decode("utf-8", "replace")
    return items


class _Reader:
    def __init__(self, view: memoryview, limits: Limits) -> None:
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        self.view = view
        self.size = len(view)
        self.limits = limits
        self.stop = min(self.size, limits.max_header_bytes)
        self.pos = 0
        self.order = "<"
        self.wide = True  # u64 counts and lengths (v2+); v1 uses u32
        self.problems: list[GGUFProblem] = []

    def read(self) -> GGUFFile:
        self.need(4 + 4)
        if bytes(self.view[:4]) != GGUF_MAGIC:
            raise FormatError(f"bad magic {bytes(self.view[:4])!r}, expected b'GGUF'", 0)
        self.pos = 4
        version = struct.unpack_from("<I", self.view, 4)[0]
        if version not in SUPPORTED_VERSIONS:
            swapped = struct.unpack_from(">I", self.view, 4)[0]
            if swapped not in SUPPORTED_VERSIONS:
                raise FormatError(f"unsupported GGUF version {version}", 4)
            self.order, version = ">", swapped
        self.pos = 8
        self.wide = version >= 2
        if version == 1:
            self.problem(Fault.OBSOLETE_VERSION, "GGUF v1: current llama.cpp refuses it", 4)
        # The least bytes one entry can take: a length-prefixed string, then for a tensor
        # n_dims, type and offset; for a key/value the type and a one-byte value.
        length_bytes = 8 if self.wide else 4
        tensor_count = self.count("tensor count", self.limits.max_metadata_entries, 0)
        kv_count = self.count(
            "key/value count", self.limits.max_metadata_entries, length_bytes + 4 + 1
        )
        if tensor_count * (length_bytes + 4 + 4 + 8) > self.size - self.pos:
            raise FormatError(f"tensor count {tensor_count} cannot fit in the file", 8)
        fields = self.read_fields(kv_count)
        alignment = self.alignment(fields)
        tensors = [self.read_tensor_info() for _ in range(tensor_count)]
        header_end = self.pos
        data_offset = align(header_end, alignment)
        if tensors and data_offset > self.size:
            raise FormatError("data section starts past the end of the file", header_end)
        data_end = check_layout(tensors, data_offset, alignment, self.size, report=self.problem)
        return GGUFFile(
            version=version,
            big_endian=self.order == ">",
            fields=tuple(fields),
            tensors=tuple(tensors),
            alignment=alignment,
            data_offset=data_offset,
            trailing_bytes=max(0, self.size - align(max(data_end, header_end), alignment)),
            problems=tuple(self.problems),
        )

    # -- primitives -------------------------------------------------------------------

    def need(self, n: int, at: int | None = None) -> None:
        start = self.pos if at is None else at
        if start + n > self.size:
            raise FormatError(
                f"truncated: {n} bytes needed at offset {start}, file is {self.size} bytes",
                start,
            )
        if start + n > self.stop:
            raise LimitExceeded(
                f"header runs past limits.max_header_bytes ({self.limits.max_header_bytes})",
                start,
            )

    def unpack(self, code: str) -> int:
        size = struct.calcsize(code)
        self.need(size)
        value: int = struct.unpack_from(self.order + code, self.view, self.pos)[0]
        self.pos += size
        return value

    def count(self, what: str, limit: int, min_item_bytes: int) -> int:
        at = self.pos
        value = self.unpack("Q" if self.wide else "I")
        if value > limit:
            raise LimitExceeded(f"{what} {value} exceeds the limit of {limit}", at)
        if value * min_item_bytes > self.size - self.pos:
            raise FormatError(f"{what} {value} cannot fit in the rest of the file", at)
        return value

    def string(self) -> bytes:
        at = self.pos
        length = self.unpack("Q" if self.wide else "I")
        if length > self.limits.max_string_bytes:
            raise LimitExceeded(
                f"string of {length} bytes exceeds limits.max_string_bytes "
                f"({self.limits.max_string_bytes})",
                at,
            )
        self.need(length)
        value = bytes(self.view[self.pos : self.pos + length])
        self.pos += length
        return value

    def problem(self, fault: Fault, message: str, offset: int, evidence: str | None = None) -> None:
        self.problems.append(GGUFProblem(fault, message, offset, evidence))

    # -- metadata ---------------------------------------------------------------------

    def read_fields(self, kv_count: int) -> list[GGUFField]:
        fields: list[GGUFField] = []
        seen: set[str] = set()
        for _ in range(kv_count):
            offset = self.pos
            key = self.string().decode("utf-8", "replace")
            if key in seen or not key:
                what = "duplicate key" if key else "empty key"
                self.problem(Fault.DUPLICATE_KEY, f"{what} {key!r}", offset, key)
            seen.add(key)
            value_type = self.value_type()
            value_offset = self.pos
            value = self.value(value_type, 0)
            fields.append(GGUFField(key, value_type, value, offset, value_offset))
        return fields

    def value_type(self) -> GGUFValueType:
        at = self.pos
        raw = self.unpack("I")
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise FormatError(f"unknown value type {raw}", at) from None

    def value(self, value_type: GGUFValueType, depth: int) -> GGUFValue:
        if value_type is GGUFValueType.STRING:
            return self.string().decode("utf-8", "replace")
        if value_type is GGUFValueType.ARRAY:
            return self.array(depth + 1)
        value: int | float = self.unpack(SCALAR_CODES[value_type])
        return bool(value) if value_type is GGUFValueType.BOOL else value

    def array(self, depth: int) -> GGUFArray:
        at = self.pos
        if depth > _MAX_ARRAY_NESTING:
            raise FormatError(f"arrays nested deeper than {_MAX_ARRAY_NESTING}", at)
        item_type = self.value_type()
        length_bytes = 8 if self.wide else 4
        item_bytes = {GGUFValueType.STRING: length_bytes, GGUFValueType.ARRAY: 4 + length_bytes}
        minimum = item_bytes.get(item_type) or struct.calcsize(SCALAR_CODES[item_type])
        count = self.count("array length", self.limits.max_array_items, minimum)
        start = self.pos
        if count <= _KEPT_ARRAY_ITEMS:
            items = tuple(self.value(item_type, depth) for _ in range(count))
            return GGUFArray(item_type, count, start, items)
        if item_type is GGUFValueType.STRING:
            self.skip_strings(count)
        elif item_type is GGUFValueType.ARRAY:
            for _ in range(count):
                self.value(GGUFValueType.ARRAY, depth)
        else:
            # count * minimum was checked against the bytes left by count().
            self.need(count * minimum)
            self.pos += count * minimum
        return GGUFArray(item_type, count, start, None)

    def skip_strings(self, count: int) -> None:
        # The hot loop of a tokenizer's 100k+ strings: locals only, no decoding.
        code = struct.Struct(self.order + ("Q" if self.wide else "I"))
        unpack, width, view = code.unpack_from, code.size, self.view
        stop, max_length, pos = self.stop, self.limits.max_string_bytes, self.pos
        for _ in range(count):
            if pos + width > stop:
                self.need(width, pos)
            length = unpack(view, pos)[0]
            pos += width
            if length > max_length or pos + length > stop:
                self.pos = pos - width
                self.string()  # raises the precise error
            pos += length
        self.pos = pos

    def alignment(self, fields: list[GGUFField]) -> int:
        field = next((f for f in fields if f.key == ALIGNMENT_KEY), None)
        if field is None:
            return DEFAULT_ALIGNMENT
        value = field.value
        valid = field.value_type is GGUFValueType.UINT32 and isinstance(value, int)
        if valid and isinstance(value, int) and value > 0 and value & (value - 1) == 0:
            return value
        message = (
            f"{ALIGNMENT_KEY} must be a u32 power of two, got {field.value_type.name} "
            f"{value!r}; using {DEFAULT_ALIGNMENT}"
        )
        self.problem(Fault.INVALID_ALIGNMENT, message, field.value_offset, ALIGNMENT_KEY)
        return DEFAULT_ALIGNMENT

    def read_tensor_info(self) -> GGUFTensorInfo:
        info_offset = self.pos
        raw_name = self.string()
        name = raw_name.decode("utf-8", "replace")
        n_dims_at = self.pos
        n_dims = self.unpack("I")
        if n_dims > MAX_DIMS:
            raise FormatError(f"tensor {name!r} has {n_dims} dimensions (at most 4)", n_dims_at)
        shape = tuple(self.unpack("Q" if self.wide else "I") for _ in range(n_dims))
        type_at = self.pos
        ggml_type = self.unpack("I")
        offset = self.unpack("Q")
        if len(raw_name) > MAX_NAME_BYTES:
            message = f"tensor name is {len(raw_name)} bytes (llama.cpp allows {MAX_NAME_BYTES})"
            self.problem(Fault.INVALID_TENSOR, message, info_offset, name)
        n_bytes = tensor_bytes(
            name, shape, ggml_type, n_dims_at=n_dims_at, type_at=type_at, report=self.problem
        )
        return GGUFTensorInfo(name, shape, ggml_type, offset, n_bytes, info_offset)
