"""Where the pickles of a legacy (torch < 0.4) tar checkpoint's members lie.

Such a checkpoint is a tar of ``sys_info``, ``pickle``, ``storages`` and ``tensors``
(``torch/serialization.py``, ``legacy_load``). The last two interleave pickles with raw
bytes and ``torch.load`` unpickles every one of them, so each must be found and scanned.
Pickles are delimited statically with :func:`pickletools.genops`; nothing is unpickled.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import IO, cast

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.compressed import ViewReader

LEGACY_TORCH_MEMBERS = frozenset({"sys_info", "pickle", "storages", "tensors"})
"""Members of a torch < 0.4 tar checkpoint (serialization.py, ``legacy_load``)."""

_ELEMENT_SIZES = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
    "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16,
}  # fmt: skip
_MAX_PICKLE_ARG = 64 * 1024 * 1024


@dataclass
class LegacyRecords:
    """Where the pickles of a legacy checkpoint member lie.

    Attributes:
        pickles: Ranges of every pickle found, in order (all of them are unpickled by
            ``torch.load``).
        end: Where the structure ends.
        error: Why the walk stopped early; the pickles before it were still found.
    """

    pickles: list[slice] = field(default_factory=list)
    end: int = 0
    error: FormatError | None = None


def legacy_torch_pickles(
    view: memoryview, member: str, *, max_opcodes: int, max_records: int
) -> LegacyRecords:
    """Find the pickles of a legacy checkpoint's ``storages`` or ``tensors`` member.

    Both members interleave pickles with raw bytes, and ``torch.load`` unpickles every
    one of them, so each must be scanned, not just the first. ``storages``: a count, then
    per storage a pickled (key, location, storage type), an int64 element count and the
    elements; then a pickled list of views. ``tensors``: a count, then per tensor a pickled
    (key, storage key, type), int32 ndim, 4 padding bytes, ndim sizes and strides (int64)
    and an int64 offset. Pickles are delimited with :func:`pickletools.genops` (static).
    """
    found = LegacyRecords()
    try:
        _walk_legacy(view, member, found, max_opcodes, max_records)
    except FormatError as exc:
        # A fresh error: the raised one's traceback holds frames that hold the view.
        found.error = type(exc)(str(exc), exc.offset)
    return found


def _walk_legacy(
    view: memoryview, member: str, found: LegacyRecords, max_opcodes: int, max_records: int
) -> None:
    end, args = _pickle_at(view, 0, max_opcodes)
    found.pickles.append(slice(0, end))
    count = next((a for a in args if isinstance(a, int) and not isinstance(a, bool)), None)
    if count is None or not 0 <= count <= max_records:
        raise LimitExceeded(f"legacy torch {member}: record count {count!r}", 0)
    pos = found.end = end
    for _ in range(count):
        end, args = _pickle_at(view, pos, max_opcodes)
        found.pickles.append(slice(pos, end))
        pos = end
        if member == "storages":
            names = [a.split()[-1] for a in args if isinstance(a, str) and a.endswith("Storage")]
            size = _ELEMENT_SIZES.get(names[-1].removesuffix("Storage")) if names else None
            if size is None or pos + 8 > len(view):
                raise FormatError(f"legacy torch storage record of unknown type {names}", pos)
            (numel,) = struct.unpack_from("<q", view, pos)
            pos = -1 if numel < 0 else pos + 8 + numel * size
        else:
            if pos + 4 > len(view):
                raise FormatError("legacy torch tensor record ends early", pos)
            (ndim,) = struct.unpack_from("<i", view, pos)
            pos = -1 if ndim < 0 else pos + 8 + 16 * ndim + 8
        if not end <= pos <= len(view):
            raise FormatError(f"legacy torch {member} record runs past the end", end)
        found.end = pos
    if member == "storages":
        end, _ = _pickle_at(view, pos, max_opcodes)
        found.pickles.append(slice(pos, end))
        found.end = end


def _pickle_at(view: memoryview, start: int, max_opcodes: int) -> tuple[int, list[object]]:
    reader = ViewReader(view, _MAX_PICKLE_ARG)
    reader.seek(start)
    args: list[object] = []
    with reader:
        return _genops_until_stop(reader, start, max_opcodes, args), args


def _genops_until_stop(reader: ViewReader, start: int, max_opcodes: int, args: list[object]) -> int:
    import pickletools  # noqa: PLC0415 - only legacy checkpoints need it

    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(cast(IO[bytes], reader))):
            if count > max_opcodes:
                raise LimitExceeded(f"pickle at {start} has more than {max_opcodes} opcodes", start)
            if isinstance(arg, int | str) and opcode.name != "PROTO":
                args.append(arg)
            if opcode.name == "STOP":
                return reader.tell()
    except (ValueError, EOFError, struct.error, UnicodeError) as exc:
        raise FormatError(f"no pickle at {start}: {exc}", start) from exc
    raise FormatError(f"pickle at {start} has no STOP", start)
