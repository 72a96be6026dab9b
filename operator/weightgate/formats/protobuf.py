"""A minimal, bounded reader of the protobuf wire format.

Spec: https://protobuf.dev/programming-guides/encoding/

ONNX models and TensorFlow SavedModels are protobuf messages. We walk the wire format
ourselves instead of decoding with the generated classes because:

* the scanners only need a handful of fields (op names, domains, external-data paths),
  and walking them over a memoryview never copies the tensor payloads, which make up
  almost all of a model (``onnx.load_model_from_string`` would copy a 1 GiB model twice:
  once into ``bytes`` and once into the message);
* every length, count and nesting level is checked here against explicit bounds, so a
  hostile file ends in :class:`~weightgate.errors.FormatError` or
  :class:`~weightgate.errors.LimitExceeded` with the offset, never in a crash.

Fields are yielded in file order with absolute offsets, so findings can point at the
byte where a node or tensor starts. Deprecated group wire types (3, 4) are rejected:
neither ONNX nor TensorFlow writes them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import NamedTuple

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.limits import Limits

MAX_VARINT_BYTES = 10
"""A 64-bit varint takes at most ten bytes."""

DEFAULT_MAX_NESTING = 100
"""Message nesting depth; protobuf's own parsers stop at 100 by default."""


class WireType(enum.IntEnum):
    """How a field's value is encoded on the wire."""

    VARINT = 0
    I64 = 1
    LEN = 2
    SGROUP = 3
    EGROUP = 4
    I32 = 5


class ProtoField(NamedTuple):
    """One field of a message, as found on the wire.

    Attributes:
        number: Field number from the tag.
        wire_type: Encoding of the value.
        offset: Absolute offset of the field's tag.
        value: The integer value for VARINT, I64 and I32 fields; the payload length for LEN.
        start: Absolute offset of a LEN payload (equal to ``end`` for other types).
        end: Absolute offset just past the field.
    """

    number: int
    wire_type: int
    offset: int
    value: int
    start: int
    end: int


def read_varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; return (value, offset after it).

    Raises:
        FormatError: The varint runs past ``end`` or is longer than ten bytes.
    """
    result = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise FormatError("varint runs past the end of its message", start)
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if pos - start >= MAX_VARINT_BYTES:
            raise FormatError("varint longer than ten bytes", start)


class ProtoReader:
    """Walks the messages of one protobuf buffer within fixed bounds.

    Attributes:
        data: The whole buffer; every offset is relative to its start.
        max_fields: Fields that may be read in total, all messages together (bounds the
            time a hostile file of tiny fields can take).
        max_nesting: Deepest message nesting a caller may descend into.
        max_string_bytes: Longest string field decoded with :meth:`text`.
        fields_read: Fields read so far.
    """

    def __init__(
        self,
        data: memoryview,
        *,
        max_fields: int,
        max_string_bytes: int,
        max_nesting: int = DEFAULT_MAX_NESTING,
    ) -> None:
        self.data = data
        self.max_fields = max_fields
        self.max_nesting = max_nesting
        self.max_string_bytes = max_string_bytes
        self.fields_read = 0

    @classmethod
    def within(cls, data: memoryview, limits: Limits) -> ProtoReader:
        """A reader bounded by the scan limits (protobuf fields, string size)."""
        return cls(
            data, max_fields=limits.max_protobuf_fields, max_string_bytes=limits.max_string_bytes
        )

    def fields(self, start: int, end: int, depth: int = 0) -> Iterator[ProtoField]:
        """Yield the fields of the message stored in ``data[start:end]``.

        Args:
            start: Offset of the first byte of the message.
            end: Offset just past the message.
            depth: Nesting level of this message (0 for the outermost one).

        Raises:
            FormatError: A tag, varint or length is invalid or runs past ``end``.
            LimitExceeded: ``depth`` exceeds ``max_nesting`` or the field budget is spent.
        """
        if depth > self.max_nesting:
            raise LimitExceeded(f"messages nested more than {self.max_nesting} deep", start)
        data = self.data
        pos = start
        new = tuple.__new__  # ProtoField(...) goes through a Python-level __new__: slower
        while pos < end:
            self.fields_read += 1
            if self.fields_read > self.max_fields:
                raise LimitExceeded(
                    f"more than {self.max_fields} protobuf fields (limits.max_protobuf_fields)", pos
                )
            offset = pos
            # One-byte tags and lengths (fields 1-15, values under 128) are the common
            # case: skip the varint loop for them.
            tag = data[pos]
            if tag < 0x80:
                pos += 1
            else:
                tag, pos = read_varint(data, pos, end)
            number = tag >> 3
            wire_type = tag & 7
            if number == 0:
                raise FormatError("field number 0 is invalid", offset)
            if wire_type == WireType.LEN:
                if pos < end and data[pos] < 0x80:
                    length = data[pos]
                    pos += 1
                else:
                    length, pos = read_varint(data, pos, end)
                if length > end - pos:
                    raise FormatError(
                        f"field {number} claims {length} bytes but its message has "
                        f"{end - pos} left",
                        offset,
                    )
                yield new(ProtoField, (number, wire_type, offset, length, pos, pos + length))
                pos += length
            elif wire_type == WireType.VARINT:
                if pos < end and data[pos] < 0x80:
                    value = data[pos]
                    pos += 1
                else:
                    value, pos = read_varint(data, pos, end)
                yield new(ProtoField, (number, wire_type, offset, value, pos, pos))
            elif wire_type in (WireType.I64, WireType.I32):
                width = 8 if wire_type == WireType.I64 else 4
                if width > end - pos:
                    raise FormatError(f"fixed-width field {number} is truncated", offset)
                value = int.from_bytes(data[pos : pos + width], "little")
                pos += width
                yield new(ProtoField, (number, wire_type, offset, value, pos, pos))
            elif wire_type in (WireType.SGROUP, WireType.EGROUP):
                raise FormatError(f"field {number} uses the deprecated group encoding", offset)
            else:
                raise FormatError(f"field {number} has invalid wire type {wire_type}", offset)

    def submessage(self, field: ProtoField, depth: int, what: str) -> Iterator[ProtoField]:
        """Yield the fields of a message-typed ``field`` found at nesting ``depth``.

        Raises:
            FormatError: ``field`` is not length-delimited, or its content is invalid.
        """
        self.expect_len(field, what)
        return self.fields(field.start, field.end, depth + 1)

    def text(self, field: ProtoField, what: str) -> str:
        """Decode a string field (invalid UTF-8 is shown escaped, never dropped).

        Raises:
            FormatError: The field is not length-delimited.
            LimitExceeded: The string is longer than ``max_string_bytes``.
        """
        self.expect_len(field, what)
        if field.value > self.max_string_bytes:
            raise LimitExceeded(
                f"{what} is {field.value} bytes (limits.max_string_bytes is "
                f"{self.max_string_bytes})",
                field.offset,
            )
        return str(self.data[field.start : field.end], "utf-8", "backslashreplace")

    @staticmethod
    def expect_len(field: ProtoField, what: str) -> None:
        """Check that ``field`` is length-delimited (a message, string or bytes).

        Raises:
            FormatError: It is not.
        """
        if field.wire_type != WireType.LEN:
            raise FormatError(
                f"{what} (field {field.number}) has wire type {field.wire_type}, "
                "expected a length-delimited value",
                field.offset,
            )
