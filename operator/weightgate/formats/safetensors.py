"""Reader for the safetensors header: an 8-byte little-endian length, then a JSON object.

Spec: https://github.com/huggingface/safetensors#format. The rules follow the Rust
implementation (``safetensors/src/tensor.rs``: ``read_metadata`` and ``Metadata::validate``),
which is what ``safe_open`` and ``transformers`` run:

* the header length is bounded (100 MB there, ``max_header_bytes`` here) and must fit in the
  file; the header is UTF-8 JSON, starting with ``{`` and possibly padded with whitespace;
* every key but ``__metadata__`` is a tensor ``{"dtype", "shape", "data_offsets"}``; shapes
  and offsets are unsigned 64-bit integers; ``__metadata__`` maps strings to strings;
* sorted by offsets, the tensors cover the data buffer exactly, from 0 to its end, without
  gaps or overlaps, and each spans ``prod(shape) * bits(dtype) / 8`` bytes.

Why our own parser: the ``safetensors`` package validates the same rules but stops at the
first one with a message and no offset, has no configurable limits, and silently keeps the
last of duplicated names (a parser differential we want to report). Here non-fatal problems
are collected as :class:`HeaderProblem` with the file offset where they apply; only problems
that make the rest unreadable raise :class:`SafetensorsError` or
:class:`SafetensorsLimitExceeded`. Nothing reads or allocates tensor data.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Protocol, TypeGuard

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.detect import BytesLike

HEADER_LENGTH_BYTES = 8
METADATA_KEY = "__metadata__"
TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
_U64_MAX = 2**64 - 1

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
    "U64": 64,
}  # fmt: skip
"""Bits per element of every dtype safetensors 0.8 accepts (sub-byte types included)."""


class HeaderLimits(Protocol):
    """The limits this reader needs (``weightgate.scan.settings.Limits`` satisfies it)."""

    @property
    def max_header_bytes(self) -> int:
        """Largest JSON header read."""

    @property
    def max_metadata_entries(self) -> int:
        """Most JSON object members (tensors, metadata entries, fields) in one header."""

    @property
    def max_string_bytes(self) -> int:
        """Largest single metadata value."""


class Fault(enum.Enum):
    """What is wrong, one member per scanner rule."""

    HEADER_TOO_LARGE = "header-too-large"
    HEADER_OUT_OF_BOUNDS = "header-out-of-bounds"
    INVALID_HEADER = "invalid-header"
    DUPLICATE_KEY = "duplicate-key"
    UNKNOWN_FIELD = "unknown-field"
    UNKNOWN_DTYPE = "unknown-dtype"
    SIZE_MISMATCH = "size-mismatch"
    OFFSET_OUT_OF_BOUNDS = "offset-out-of-bounds"
    OFFSET_OVERLAP = "offset-overlap"
    OFFSET_GAP = "offset-gap"
    TRAILING_BYTES = "trailing-bytes"
    INVALID_METADATA = "invalid-metadata"
    METADATA_TOO_LARGE = "metadata-too-large"


class SafetensorsError(FormatError):
    """A problem that stops the header from being read at all."""

    def __init__(self, fault: Fault, message: str, offset: int | None = None) -> None:
        super().__init__(message, offset)
        self.fault = fault


class SafetensorsLimitExceeded(LimitExceeded):
    """The header is larger (or has more entries) than the configured limits."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message, offset)
        self.fault = Fault.HEADER_TOO_LARGE


@dataclass(frozen=True)
class HeaderProblem:
    """A problem found in a header that could still be read.

    Attributes:
        fault: Which rule it breaks.
        message: What was found.
        offset: Absolute file offset where it applies (a header key or a data byte).
        evidence: The tensor name or metadata key concerned.
    """

    fault: Fault
    message: str
    offset: int
    evidence: str | None = None


@dataclass(frozen=True)
class SafetensorsTensor:
    """One tensor entry; offsets are relative to the data buffer, as in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """What the header says, and every problem found in it.

    Attributes:
        header_length: The declared JSON length (bytes 0-7).
        data_offset: Absolute offset of the data buffer (8 + header_length).
        data_length: Bytes from the data buffer to the end of the file.
        tensors: Well-formed tensor entries, in header order.
        metadata: The ``__metadata__`` entries that are strings, or None when absent.
        metadata_offset: Absolute offset of the ``"__metadata__"`` key, when present.
        problems: Non-fatal problems, in the order found.
    """

    header_length: int
    data_offset: int
    data_length: int
    tensors: tuple[SafetensorsTensor, ...]
    metadata: dict[str, str] | None
    metadata_offset: int | None
    problems: tuple[HeaderProblem, ...]


class _JsonObject(dict[str, object]):
    """A JSON object that remembers the keys it saw more than once."""

    duplicates: tuple[str, ...] = ()


def read_safetensors_header(data: BytesLike, limits: HeaderLimits) -> SafetensorsHeader:
    """Parse and validate the header of a safetensors file without touching tensor data.

    Args:
        data: The whole file (only the header is copied).
        limits: Bounds on header size and entry counts.

    Raises:
        SafetensorsError: The header cannot be read (too short, past the end of the file,
            not UTF-8, not a JSON object).
        SafetensorsLimitExceeded: The header is larger than ``limits.max_header_bytes`` or
            has more members than ``limits.max_metadata_entries``.
    """
    view = memoryview(data)
    size = len(view)
    if size < HEADER_LENGTH_BYTES:
        raise SafetensorsError(
            Fault.HEADER_OUT_OF_BOUNDS, f"file is {size} bytes, too short for the header length"
        )
    (length,) = struct.unpack_from("<Q", view, 0)
    if length > size - HEADER_LENGTH_BYTES:
        raise SafetensorsError(
            Fault.HEADER_OUT_OF_BOUNDS,
            f"header length {length} runs past the end of the file "
            f"({size - HEADER_LENGTH_BYTES} bytes follow the length)",
            0,
        )
    if length > limits.max_header_bytes:
        raise SafetensorsLimitExceeded(
            f"header length {length} exceeds limits.max_header_bytes ({limits.max_header_bytes})",
            0,
        )
    raw = bytes(view[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length])
    root = _parse_json(raw, limits)
    data_offset = HEADER_LENGTH_BYTES + length
    return _validate(root, raw, data_offset, size - data_offset, limits)


def _parse_json(raw: bytes, limits: HeaderLimits) -> _JsonObject:
    start = HEADER_LENGTH_BYTES
    # Errors are raised after the except blocks, unchained: a chained cause (or a local
    # naming the exception) forms a reference cycle through the stack frames up to the
    # caller's memoryview over the mmap, which then cannot be closed until a GC pass.
    failure: tuple[str, int] | None = None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        failure = (f"header is not UTF-8: {exc.reason}", start + exc.start)
    if failure is not None:
        raise SafetensorsError(Fault.INVALID_HEADER, *failure)
    if not text.startswith("{"):
        raise SafetensorsError(Fault.INVALID_HEADER, "header does not start with '{'", start)
    members = 0

    def make_object(pairs: list[tuple[str, object]]) -> _JsonObject:
        nonlocal members
        members += len(pairs)
        if members > limits.max_metadata_entries:
            raise SafetensorsLimitExceeded(
                f"header has more than limits.max_metadata_entries "
                f"({limits.max_metadata_entries}) members",
                start,
            )
        obj = _JsonObject(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            repeated: dict[str, None] = {}
            for key, _ in pairs:
                if key in seen:
                    repeated[key] = None
                seen.add(key)
            obj.duplicates = tuple(repeated)
        return obj

    try:
        root = json.loads(
            text,
            object_pairs_hook=make_object,
            parse_constant=_reject_constant,
            parse_int=_u64_digits,
        )
    except json.JSONDecodeError as exc:
        offset = start + len(text[: exc.pos].encode("utf-8", "surrogatepass"))
        failure = (f"header is not valid JSON: {exc.msg}", offset)
    except (ValueError, RecursionError) as exc:
        failure = (f"header is not valid JSON: {exc or type(exc).__name__}", start)
    if failure is not None:
        raise SafetensorsError(Fault.INVALID_HEADER, *failure)
    if not isinstance(root, _JsonObject):
        raise SafetensorsError(Fault.INVALID_HEADER, "header is not a JSON object", start)
    return root


def _reject_constant(name: str) -> object:
    # NaN and Infinity are Python extensions; serde_json refuses them.
    raise ValueError(f"{name} is not JSON")


def _u64_digits(digits: str) -> int:
    # Anything past 20 digits overflows u64 anyway; refusing early also avoids Python's
    # slow (and limited) conversion of huge decimal strings.
    if len(digits.lstrip("-")) > 20:
        raise ValueError("an integer does not fit in 64 bits")
    return int(digits)


class _Problems(list[HeaderProblem]):
    def add(self, fault: Fault, message: str, offset: int, evidence: str | None = None) -> None:
        self.append(HeaderProblem(fault, message, offset, evidence))


def _validate(
    root: _JsonObject, raw: bytes, data_offset: int, data_length: int, limits: HeaderLimits
) -> SafetensorsHeader:
    problems = _Problems()

    def where(key: str, *, last: bool = False) -> int:
        return HEADER_LENGTH_BYTES + _key_position(raw, key, last=last)

    for name in root.duplicates:
        message = f"key {name!r} appears more than once; readers disagree on which counts"
        problems.add(Fault.DUPLICATE_KEY, message, where(name, last=True), name)
    metadata: dict[str, str] | None = None
    metadata_offset: int | None = None
    tensors: list[SafetensorsTensor] = []
    entries_ok = True
    for name, value in root.items():
        if _has_surrogate(name):
            problems.add(Fault.INVALID_HEADER, "a key holds a lone UTF-16 surrogate", 8)
            entries_ok = False
        elif name == METADATA_KEY:
            metadata_offset = where(name)
            metadata = _check_metadata(value, metadata_offset, limits, problems)
        else:
            tensor = _check_tensor(name, value, where(name), problems)
            entries_ok = entries_ok and tensor is not None
            if tensor is not None:
                tensors.append(tensor)
    # With an entry missing, gaps and overlaps would be artefacts of the missing entry.
    if entries_ok:
        _check_layout(tensors, data_offset, data_length, problems)
    return SafetensorsHeader(
        header_length=data_offset - HEADER_LENGTH_BYTES,
        data_offset=data_offset,
        data_length=data_length,
        tensors=tuple(tensors),
        metadata=metadata,
        metadata_offset=metadata_offset,
        problems=tuple(problems),
    )


def _check_metadata(
    value: object, offset: int, limits: HeaderLimits, problems: _Problems
) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, _JsonObject):
        message = f"__metadata__ is a {_json_type(value)}, not an object of strings"
        problems.add(Fault.INVALID_METADATA, message, offset, METADATA_KEY)
        return None
    for key in value.duplicates:
        message = f"metadata key {key!r} appears more than once"
        problems.add(Fault.DUPLICATE_KEY, message, offset, key)
    metadata: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            message = f"metadata value of {key!r} is a {_json_type(item)}, not a string"
            problems.add(Fault.INVALID_METADATA, message, offset, key)
        elif _has_surrogate(key) or _has_surrogate(item):
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


def _check_tensor(
    name: str, value: object, offset: int, problems: _Problems
) -> SafetensorsTensor | None:
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
    if not isinstance(value, _JsonObject):
        return f"is a {_json_type(value)}, not an object"
    if value.duplicates:
        return f"repeats field {value.duplicates[0]!r}"
    missing = sorted(TENSOR_FIELDS - value.keys())
    if missing:
        return f"lacks {', '.join(missing)}"
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(dtype, str):
        return f"has a dtype that is a {_json_type(dtype)}"
    if not _is_u64_list(shape):
        return "has a shape that is not a list of unsigned 64-bit integers"
    if not _is_u64_list(offsets) or len(offsets) != 2:
        return "has data_offsets that are not two unsigned 64-bit integers"
    return SafetensorsTensor(name, dtype, tuple(shape), offsets[0], offsets[1])


def _check_size(tensor: SafetensorsTensor, offset: int, problems: _Problems) -> None:
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


def _check_layout(
    tensors: list[SafetensorsTensor], data_offset: int, data_length: int, problems: _Problems
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


def _has_surrogate(text: str) -> bool:
    # json accepts "\ud800"; serde_json (and therefore the real loader) does not.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _utf8_length(text: str) -> int:
    # Encoding is only needed when the character count alone cannot decide.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _key_position(raw: bytes, key: str, *, last: bool = False) -> int:
    """Byte position of ``"key"`` in the header (its first or last occurrence).

    Returns 0 when the key is not written verbatim (escaped differently); the finding's
    evidence still names it.
    """
    for encoded in (json.dumps(key, ensure_ascii=False), json.dumps(key)):
        needle = encoded.encode("utf-8", "surrogatepass")
        position = raw.rfind(needle) if last else raw.find(needle)
        if position >= 0:
            return position
    return 0


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
