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

The JSON parsing is in :mod:`weightgate.formats.safetensors.header_json`, the checks and the
dtype table in :mod:`weightgate.formats.safetensors.checks`, the types in
:mod:`weightgate.formats.safetensors.types` (all public names re-exported by the
package).
"""

from __future__ import annotations

import struct

from weightgate.formats.detect import BytesLike
from weightgate.formats.limits import Limits
from weightgate.formats.safetensors.checks import (
    Problems,
    check_layout,
    check_metadata,
    check_tensor,
    has_surrogate,
)
from weightgate.formats.safetensors.header_json import JsonObject, key_position, parse_header_json
from weightgate.formats.safetensors.types import (
    HEADER_LENGTH_BYTES,
    METADATA_KEY,
    Fault,
    SafetensorsError,
    SafetensorsHeader,
    SafetensorsLimitExceeded,
    SafetensorsTensor,
)


def read_safetensors_header(data: BytesLike, limits: Limits) -> SafetensorsHeader:
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
    root = parse_header_json(raw, limits)
    data_offset = HEADER_LENGTH_BYTES + length
    return _validate(root, raw, data_offset, size - data_offset, limits)


def _validate(
    root: JsonObject, raw: bytes, data_offset: int, data_length: int, limits: Limits
) -> SafetensorsHeader:
    problems = Problems()

    def where(key: str, *, last: bool = False) -> int:
        return HEADER_LENGTH_BYTES + key_position(raw, key, last=last)

    for name in root.duplicates:
        message = f"key {name!r} appears more than once; readers disagree on which counts"
        problems.add(Fault.DUPLICATE_KEY, message, where(name, last=True), name)
    metadata: dict[str, str] | None = None
    metadata_offset: int | None = None
    tensors: list[SafetensorsTensor] = []
    entries_ok = True
    for name, value in root.items():
        if has_surrogate(name):
            problems.add(Fault.INVALID_HEADER, "a key holds a lone UTF-16 surrogate", 8)
            entries_ok = False
        elif name == METADATA_KEY:
            metadata_offset = where(name)
            metadata = check_metadata(value, metadata_offset, limits, problems)
        else:
            tensor = check_tensor(name, value, where(name), problems)
            entries_ok = entries_ok and tensor is not None
            if tensor is not None:
                tensors.append(tensor)
    # With an entry missing, gaps and overlaps would be artefacts of the missing entry.
    if entries_ok:
        check_layout(tensors, data_offset, data_length, problems)
    return SafetensorsHeader(
        header_length=data_offset - HEADER_LENGTH_BYTES,
        data_offset=data_offset,
        data_length=data_length,
        tensors=tuple(tensors),
        metadata=metadata,
        metadata_offset=metadata_offset,
        problems=tuple(problems),
    )
