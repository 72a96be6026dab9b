"""The safetensors header's JSON, parsed as strictly as serde_json and within limits.

:func:`parse_header_json` refuses what the Rust loader refuses (non-UTF-8, NaN and
Infinity, integers past 64 bits, anything but an object at the top), counts object
members against ``max_metadata_entries`` while parsing, and keeps the keys that appear
more than once (:attr:`JsonObject.duplicates`) instead of silently keeping the last.
"""

from __future__ import annotations

import json

from weightgate.formats.limits import Limits
from weightgate.formats.safetensors.types import (
    HEADER_LENGTH_BYTES,
    Fault,
    SafetensorsError,
    SafetensorsLimitExceeded,
)


class JsonObject(dict[str, object]):
    """A JSON object that remembers the keys it saw more than once."""

    duplicates: tuple[str, ...] = ()


def parse_header_json(raw: bytes, limits: Limits) -> JsonObject:
    """Parse the header bytes into a :class:`JsonObject`.

    Raises:
        SafetensorsError: Not UTF-8, not JSON, or not an object.
        SafetensorsLimitExceeded: More members than ``limits.max_metadata_entries``.
    """
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

    def make_object(pairs: list[tuple[str, object]]) -> JsonObject:
        nonlocal members
        members += len(pairs)
        if members > limits.max_metadata_entries:
            raise SafetensorsLimitExceeded(
                f"header has more than limits.max_metadata_entries "
                f"({limits.max_metadata_entries}) members",
                start,
            )
        obj = JsonObject(pairs)
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
    if not isinstance(root, JsonObject):
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


def key_position(raw: bytes, key: str, *, last: bool = False) -> int:
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


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for messages."""
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
