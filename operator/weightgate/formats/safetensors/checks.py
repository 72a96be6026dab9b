"""The checks the Rust safetensors loader makes on a parsed header, and the dtype table.

``Metadata::validate`` in ``safetensors/src/tensor.rs``: every tensor entry has exactly
``dtype``, ``shape`` and ``data_offsets``, a known dtype and a size that matches its
offsets; ``__metadata__`` maps strings to strings; sorted by offsets, the tensors tile
the data buffer exactly. Each failed check is added to :class:`Problems` with the file
offset it applies to, so one bad entry does not hide the others.
"""

from __future__ import annotations

from typing import TypeGuard

from weightgate.formats.limits import Limits
from weightgate.formats.safetensors.header_json import JsonObject, json_type
from weightgate.formats.safetensors.types import (
    METADATA_KEY,
    Fault,
    HeaderProblem,
    SafetensorsTensor,
)

TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
_U64_MAX = 2**64 - 1

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
    "U64": 64,
}  # fmt: skip
"""Bits per element of every dtype safetensors 0.8 accepts (sub-byte types included)."""


class Problems(list[HeaderProblem]):
    """The problems found so far, in the order found."""

    def add(self, fault: Fault, message: str, offset: int, evidence: str | None = None) -> None:
        """Record one problem."""
        self.append(HeaderProblem(fault, message, offset, evidence))


def check_metadata(
    value: object, offset: int, limits: Limits, problems: Problems
) -> dict[str, str] | None:
    """The ``__metadata__`` entries that are strings within limits; problems for the rest."""
    if value is None:
        return None
    if not isinstance(value, JsonObject):
        message = f"__metadata__ is a {json_type(value)}, not an object of strings"
        problems.add(Fault.INVALID_METADATA, message, offset, METADATA_KEY)
        return None
    for key in value.duplicates:
        message = f"metadata key {key!r} appears more than once"
        problems.add(Fault.DUPLICATE_KEY, message, offset, key)
    metadata: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            message = f"metadata value of {key!r} is a {json_type(item)}, not a string"
            problems.add(Fault.INVALID_METADATA, message, offset, key)
        elif has_surrogate(key) or has_surrogate(item):
            message = "a metadata key or value holds a lone UTF-16 surrogate"
            problems.add(Fault.INVALID_METADATA, message, offset)
        elif _utf8_length(item) > limits.max_string_bytes:
            message = (
                f"metadata value of {key!r} is {_utf8_length(item)} bytes, over "
                f"limits.max_string_bytes ({limits.max_string_bytes})"
            )
            problems.add(Fault.METADATA_TOO_LARGE, message, offset, key)
        else:
            metadata[key] = item
    return metadata


def check_tensor(
    name: str, value: object, offset: int, problems: Problems
) -> SafetensorsTensor | None:
    """The tensor an entry describes, or None (with a problem) when it is malformed."""
    tensor = _parse_entry(name, value)
    if isinstance(tensor, str):
        problems.add(Fault.INVALID_HEADER, f"tensor {name!r} {tensor}", offset, name)
        return None
    extra = sorted(set(value) - TENSOR_FIELDS) if isinstance(value, dict) else []
    if extra:
        message = f"tensor {name!r} has fields the format does not define: {', '.join(extra)}"
        problems.add(Fault.UNKNOWN_FIELD, message, offset, name)
    _check_size(tensor, offset, problems)
    return tensor


def _parse_entry(name: str, value: object) -> SafetensorsTensor | str:
    """The tensor, or what is wrong with its entry."""
    if not isinstance(value, JsonObject):
        return f"is a {json_type(value)}, not an object"
    if value.duplicates:
        return f"repeats field {value.duplicates[0]!r}"
    missing = sorted(TENSOR_FIELDS - value.keys())
    if missing:
        return f"lacks {', '.join(missing)}"
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(dtype, str):
        return f"has a dtype that is a {json_type(dtype)}"
    if not _is_u64_list(shape):
        return "has a shape that is not a list of unsigned 64-bit integers"
    if not _is_u64_list(offsets) or len(offsets) != 2:
        return "has data_offsets that are not two unsigned 64-bit integers"
    return SafetensorsTensor(name, dtype, tuple(shape), offsets[0], offsets[1])


def _check_size(tensor: SafetensorsTensor, offset: int, problems: Problems) -> None:
    name = tensor.name
    bits = DTYPE_BITS.get(tensor.dtype)
    if bits is None:
        message = f"tensor {name!r} has unknown dtype {tensor.dtype!r}"
        problems.add(Fault.UNKNOWN_DTYPE, message, offset, name)
        return
    elements = 1
    for dim in tensor.shape:
        elements = min(elements * dim, _U64_MAX + 1)  # saturate: no huge products
    total_bits = elements * bits
    span = tensor.end - tensor.begin
    if total_bits > _U64_MAX:
        message = f"tensor {name!r} shape {list(tensor.shape)} overflows 64 bits"
    elif total_bits % 8:
        message = f"tensor {name!r} is {total_bits} bits, not a whole number of bytes"
    elif span >= 0 and total_bits // 8 != span:
        message = (
            f"tensor {name!r} is {tensor.dtype} {list(tensor.shape)} = "
            f"{total_bits // 8} bytes but its offsets span {span}"
        )
    else:
        return
    problems.add(Fault.SIZE_MISMATCH, message, offset, name)


def check_layout(
    tensors: list[SafetensorsTensor], data_offset: int, data_length: int, problems: Problems
) -> None:
    """Rust's rule: sorted by offsets, tensors tile the data buffer exactly."""
    cursor = 0
    previous: SafetensorsTensor | None = None
    for tensor in sorted(tensors, key=lambda t: (t.begin, t.end)):
        name, begin, end = tensor.name, tensor.begin, tensor.end
        if end < begin:
            message = f"tensor {name!r} ends ({end}) before it begins ({begin})"
            at = data_offset + min(begin, data_length)
            problems.add(Fault.OFFSET_OUT_OF_BOUNDS, message, at, name)
            continue
        if begin > cursor:
            message = f"data bytes {cursor}..{begin} belong to no tensor (before {name!r})"
            problems.add(Fault.OFFSET_GAP, message, data_offset + cursor, name)
        elif begin < cursor and previous is not None:
            message = (
                f"tensor {name!r} [{begin}, {end}) overlaps "
                f"{previous.name!r} [{previous.begin}, {previous.end})"
            )
            problems.add(Fault.OFFSET_OVERLAP, message, data_offset + begin, name)
        if end > data_length:
            message = (
                f"tensor {name!r} ends at data offset {end}, past the end of the data "
                f"buffer ({data_length} bytes)"
            )
            at = data_offset + min(begin, data_length)
            problems.add(Fault.OFFSET_OUT_OF_BOUNDS, message, at, name)
        if end >= cursor:
            cursor, previous = end, tensor
    if cursor < data_length:
        message = f"{data_length - cursor} bytes after the last tensor belong to no tensor"
        problems.add(Fault.TRAILING_BYTES, message, data_offset + cursor)


def _is_u64_list(value: object) -> TypeGuard[list[int]]:
    # bool is an int subclass in Python but not a JSON number; serde refuses it.
    return isinstance(value, list) and all(
        type(item) is int and 0 <= item <= _U64_MAX for item in value
    )


def has_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone UTF-16 surrogate (not encodable as UTF-8)."""
    # json accepts "\ud800"; serde_json (and therefore the real loader) does not.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _utf8_length(text: str) -> int:
    # Encoding is only needed when the character count alone cannot decide.
    return len(text) if text.isascii() else len(text.encode("utf-8"))
