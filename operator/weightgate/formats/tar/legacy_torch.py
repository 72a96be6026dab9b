"""Where the pickles of a legacy (torch < 0.4) tar checkpoint's members lie.

Such a checkpoint is a tar of ``sys_info``, ``pickle``, ``storages`` and ``tensors``
(``torch/serialization.py``, ``legacy_load``). The last two interleave pickles with raw
bytes and ``torch.load`` unpickles every one of them, so each must be found and scanned.
Pickles are delimited by the project's static pickle walker; nothing is unpickled.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.pickle import WalkLimits, read_single_pickle
from weightgate.formats.pickle.trace import GlobalRef

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
    and an int64 offset.
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
    limits = WalkLimits(max_opcodes=max_opcodes, max_line_bytes=_MAX_PICKLE_ARG)
    end, count = _pickle_at(view, 0, limits)
    found.pickles.append(slice(0, end))
    if type(count) is not int or not 0 <= count <= max_records:
        raise LimitExceeded(f"legacy torch {member}: record count {count!r}", 0)
    pos = found.end = end
    for _ in range(count):
        end, record = _pickle_at(view, pos, limits)
        found.pickles.append(slice(pos, end))
        pos = end
        if member == "storages":
            # (key, location, storage_type): the type names the element size
            names = [
                ref.name
                for ref in (record if isinstance(record, tuple) else ())
                if isinstance(ref, GlobalRef) and ref.name.endswith("Storage")
            ]
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
        end, _ = _pickle_at(view, pos, limits)
        found.pickles.append(slice(pos, end))
        found.end = end


def _pickle_at(view: memoryview, start: int, limits: WalkLimits) -> tuple[int, object]:
    single = read_single_pickle(view, limits, start=start)
    return single.end, single.value
