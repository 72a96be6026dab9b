"""Static reader for pickle streams (protocols 0-5, joblib, dill, legacy PyTorch).

:func:`walk_stream` runs the bounded emulator of
:mod:`weightgate.formats.pickle.machine` over every pickle of a stream and returns a
:class:`~weightgate.formats.pickle.trace.PickleTrace`: what it imports, what it calls,
where it stopped and why. Nothing is imported or called, ever.

Several pickles may follow each other: legacy ``torch.save`` writes five (magic number,
protocol version, system info, the object, the storage keys) and then raw storage bytes;
other writers stack pickles so that a loader calling ``load()`` repeatedly gets them all.
After each STOP the walk goes on while the next bytes are a pickle, and stops after the
fifth pickle of a legacy PyTorch file, where raw storage bytes follow: those are data
unless a stretch of them walks as a pickle that imports something. Elsewhere, bytes after
the last pickle that are not one are reported as trailing data.

:func:`embedded_pickle` decodes a string or bytes constant that holds a pickle itself,
raw or hex- or base64-encoded (a loader may ``pickle.loads`` it later).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.detect import BytesLike
from weightgate.formats.pickle.machine import (
    HIGHEST_PROTOCOL,
    OPCODE_NAMES,
    PickleMachine,
    WalkBudget,
    WalkLimits,
    WalkStop,
)
from weightgate.formats.pickle.trace import PickleSpan, PickleTrace, StringValue

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The integer the first pickle of a legacy (non-zip) ``torch.save`` file holds."""

TORCH_LEGACY_PICKLES = 5
"""Pickles in a legacy PyTorch file before the raw storage bytes."""

_PROTO = 0x80
_HEX = re.compile(rb"(?:[0-9a-fA-F]{2})+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


def walk_stream(
    data: BytesLike,
    limits: WalkLimits,
    *,
    base_offset: int = 0,
    joblib: bool = True,
) -> PickleTrace:
    """Walk every pickle of ``data`` and report what loading it would do.

    Args:
        data: The stream; a memoryview over an mmap is read in place.
        limits: Bounds on opcodes, stack, memo and line lengths.
        base_offset: Added to every offset in the trace (where ``data`` starts in its
            file).
        joblib: Step over the array bytes ``joblib.dump`` writes inline (the reading of
            ``pickle.load`` is walked as well).

    Returns:
        The trace; ``trace.error`` says where the walk stopped if it did not finish.
    """
    with memoryview(data) as raw, raw.cast("B") as view:
        return _walk(view, limits, base_offset, joblib)


def _walk(view: memoryview, limits: WalkLimits, base: int, joblib: bool) -> PickleTrace:
    trace = PickleTrace()
    size = len(view)
    trace.started_with_proto = size >= 2 and view[0] == _PROTO
    budget = WalkBudget(limits)
    inherited: dict[int, object] = {}
    pos = 0
    while pos < size:
        machine = PickleMachine(
            view, base, trace, limits, budget, joblib=joblib, inherited=inherited
        )
        imports_before = len(trace.globals) + len(trace.persistent_ids)
        try:
            end, value = machine.run(pos)
        except WalkStop as stop:
            _stopped(trace, stop, view, pos=pos, base=base, imports=imports_before)
            break
        trace.pickles.append(PickleSpan(base + pos, base + end, machine.proto))
        pos = end
        inherited.update(machine.memo)
        if len(trace.pickles) == 1 and type(value) is int and value == TORCH_LEGACY_MAGIC:
            trace.legacy_torch = True
    trace.opcodes = budget.used(limits)
    return trace


@dataclass(frozen=True)
class SinglePickle:
    """One pickle read from a given offset (for formats that interleave pickles and data).

    Attributes:
        end: Offset just after its STOP opcode.
        value: What it builds, with stand-ins (:class:`GlobalRef`, ``Instance``...) for
            anything that would be imported or called.
        trace: What it imports and calls, for the scanner to judge.
    """

    end: int
    value: object
    trace: PickleTrace


def read_single_pickle(data: BytesLike, limits: WalkLimits, *, start: int = 0) -> SinglePickle:
    """Walk exactly one pickle beginning at ``start`` and say where it ends.

    Raises:
        LimitExceeded: A walk limit was reached.
        FormatError: The bytes at ``start`` are not one complete pickle.
    """
    with memoryview(data) as raw, raw.cast("B") as view:
        trace = PickleTrace()
        machine = PickleMachine(view, 0, trace, limits, WalkBudget(limits), joblib=False)
        try:
            end, value = machine.run(start)
        except WalkStop as stop:
            error = LimitExceeded if stop.error.kind == "limit" else FormatError
            raise error(f"no pickle at {start}: {stop.error.message}", stop.error.offset) from None
        return SinglePickle(end, value, trace)


def _stopped(
    trace: PickleTrace, stop: WalkStop, view: memoryview, *, pos: int, base: int, imports: int
) -> None:
    """Decide what a walk that stopped at ``pos`` means, after the pickles before it."""
    size = len(view)
    imported = len(trace.globals) + len(trace.persistent_ids) > imports
    if trace.legacy_torch and len(trace.pickles) >= TORCH_LEGACY_PICKLES:
        # Raw storage bytes: torch reads them with file.read. Any stretch that walks as
        # a pickle was still examined above; only one that imports something matters.
        if imported or stop.error.kind != "malformed":
            trace.error = stop.error
        else:
            trace.torch_data = (base + pos, size - pos)
        return
    started = pos + 1 < size and view[pos] == _PROTO and view[pos + 1] <= HIGHEST_PROTOCOL
    first = not trace.pickles
    if first or trace.legacy_torch or started or imported or stop.error.kind != "malformed":
        trace.error = stop.error
    else:
        trace.trailing = (base + pos, size - pos)


def embedded_pickle(
    view: memoryview, string: StringValue, base_offset: int, max_bytes: int
) -> tuple[str, bytes | memoryview] | None:
    """Decode a candidate string constant into the pickle bytes it may carry.

    Args:
        view: The stream the trace was made from.
        string: The candidate, from ``trace.strings``.
        base_offset: The ``base_offset`` the trace was made with.
        max_bytes: Larger payloads are not decoded (the caller reports them).

    Returns:
        ``(form, payload)`` with form ``raw``, ``hex`` or ``base64``, when the constant
        decodes to bytes that start like a pickle; else None. A raw bytes payload is a
        slice of ``view`` (release it when done).
    """
    if string.value is not None:
        payload: bytes | memoryview = string.value
    else:
        start = string.data_offset - base_offset
        payload = view[start : start + string.length]
    if string.length > max_bytes:
        return None
    if not string.is_text:
        if _starts_like_pickle(payload):
            return "raw", payload
        payload = bytes(payload)
    else:
        payload = bytes(payload)
        try:
            as_latin1 = payload.decode("utf-8", "surrogatepass").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError):
            as_latin1 = b""
        if as_latin1 and _starts_like_pickle(as_latin1):
            return "raw", as_latin1
    text = bytes(payload).strip()
    if text[:2] == b"80" and _HEX.fullmatch(text):
        decoded = binascii.unhexlify(text)
        if _starts_like_pickle(decoded):
            return "hex", decoded
    if text[:2] == b"gA" and _BASE64.fullmatch(text):
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None
        if _starts_like_pickle(decoded):
            return "base64", decoded
    return None


def _starts_like_pickle(payload: bytes | memoryview) -> bool:
    # Binary pickles start with PROTO; protocol 0/1 ones with an opcode and end in STOP.
    if len(payload) < 4:
        return False
    first = payload[0]
    if first == _PROTO:
        return payload[1] <= 5
    return first in OPCODE_NAMES and payload[-1] == ord(".")
