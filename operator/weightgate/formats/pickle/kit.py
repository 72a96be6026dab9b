"""State and helpers shared by the opcode handlers of one pickle machine.

The handlers (:mod:`.ops_values`, :mod:`.ops_stack`, :mod:`.ops_calls`)
are closures over the machine's stack, marks and memo, so that the per-opcode path is a
table lookup and a call with no attribute access. :func:`make_kit` builds the helpers
they share (bounds checks, MARK handling, protocol 0 line reading, recording into the
trace) as closures over the same objects, and hands everything over in one :class:`Kit`.
"""

from __future__ import annotations

import pickletools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from weightgate.formats.limits import Limits
from weightgate.formats.pickle.trace import (
    Blob,
    CallSite,
    GlobalRef,
    Instance,
    Persistent,
    PickleTrace,
    StringValue,
    WalkError,
)

Handler = Callable[[int], int]
"""An opcode handler: takes the offset after the opcode byte, returns the next offset."""

I32 = struct.Struct("<i").unpack_from
U32 = struct.Struct("<I").unpack_from
U16 = struct.Struct("<H").unpack_from
U64 = struct.Struct("<Q").unpack_from
F64BE = struct.Struct(">d").unpack_from

OPCODE_NAMES: dict[int, str] = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}
"""Opcode byte -> name, from the standard library's own opcode table."""

HIGHEST_PROTOCOL = 5

# Candidate embedded pickles: first byte of a str/bytes payload -> what must follow.
# 1: a second byte from SECOND_BYTES; 2: the payload must end with STOP ('.').
FIRST_BYTE: list[int] = [0] * 256
for _b in (0x80, ord("8"), ord("g"), 0xC2):
    FIRST_BYTE[_b] = 1
for _b in (ord("c"), ord("("), ord("i")):
    FIRST_BYTE[_b] = 2
SECOND_BYTES: dict[int, frozenset[int]] = {
    0x80: frozenset(range(HIGHEST_PROTOCOL + 1)),  # raw binary pickle
    ord("8"): frozenset({ord("0")}),  # hex of 0x80
    ord("g"): frozenset({ord("A")}),  # base64 of 0x80 0x0N
    0xC2: frozenset({0x80}),  # U+0080 in UTF-8: a binary pickle kept as latin-1 text
}


@dataclass(frozen=True)
class WalkLimits:
    """Bounds on one walk (the scanner fills them from its settings)."""

    max_opcodes: int = 5_000_000
    """Opcodes executed across every pickle of the stream."""
    max_memo_entries: int = 1_000_000
    """Memo entries of one pickle."""
    max_stack_items: int = 1_000_000
    """Stack items (marks included) of one pickle."""
    max_line_bytes: int = 64 * 1024 * 1024
    """One protocol 0 line (GLOBAL names, UNICODE text, decimal integers)."""
    max_strings: int = 100_000
    """Candidate embedded-pickle strings recorded."""


def walk_limits(limits: Limits) -> WalkLimits:
    """The walk bounds that correspond to a reader's :class:`Limits`."""
    return WalkLimits(
        max_opcodes=limits.max_pickle_opcodes,
        max_memo_entries=limits.max_pickle_memo_entries,
        max_stack_items=limits.max_pickle_stack_items,
        max_line_bytes=limits.max_string_bytes,
    )


class WalkStop(Exception):
    """The current pickle cannot continue; carries where and why."""

    def __init__(self, error: WalkError) -> None:
        super().__init__(error.message)
        self.error = error


class Stopped(Exception):
    """STOP was executed; carries the value popped and the offset after the opcode."""

    def __init__(self, value: object, end: int) -> None:
        super().__init__()
        self.value = value
        self.end = end


def valid_dotted_name(text: str) -> bool:
    """Whether ``text`` is a dotted Python name (what ``import``/``getattr`` can resolve)."""
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def decode_py2_string(raw: bytes) -> str:
    """STRING/BINSTRING payloads: ASCII by default, but loaders choose the encoding.

    ``encoding='latin1'`` (NumPy) or ``'utf-8'`` (PyTorch) make any byte string a str, so
    the walk decodes rather than fails: failing here would hide what follows.
    """
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def describe(value: object) -> str:
    """A short description of an emulated value, for findings about computed operands."""
    if type(value) is str:
        return repr(value[:80])
    if isinstance(value, GlobalRef):
        return f"global {value.dotted}" if value.constant else "computed global"
    if isinstance(value, Instance):
        func = value.func
        target = func.dotted if isinstance(func, GlobalRef) else "a computed callable"
        return f"result of calling {target} (offset {value.offset:#x})"
    if isinstance(value, Persistent):
        return "persistent_load() result"
    if isinstance(value, Blob):
        return f"{value.kind} value"
    return type(value).__name__


class Kit(NamedTuple):
    """What every handler module needs: the machine's objects and the shared helpers."""

    view: memoryview
    end: int
    base: int
    trace: PickleTrace
    limits: WalkLimits
    stack: list[object]
    marks: list[int]
    memo: dict[int, object]
    inherited: dict[int, object]
    missing: object
    fail: Callable[[int, str], WalkStop]
    need: Callable[[int, int, int], None]
    underflow: Callable[[int], WalkStop]
    fence: Callable[[], int]
    pop_mark: Callable[[int], list[object]]
    readline: Callable[[int], tuple[bytes, int]]
    note_string: Callable[..., None]
    note_decoded: Callable[[int, str], None]
    call: Callable[[object, object, int, str], Instance]
    mutate: Callable[[object, int, str], None]
    memo_get: Callable[[int, int], None]
    new_global: Callable[[int, str, str, str], GlobalRef]
    text_of: Callable[[object], str | None]


def make_kit(
    view: memoryview,
    *,
    base: int,
    trace: PickleTrace,
    limits: WalkLimits,
    stack: list[object],
    marks: list[int],
    memo: dict[int, object],
    inherited: dict[int, object],
) -> Kit:
    """Build the shared helpers over one machine's stack, marks and memo."""
    end = len(view)
    push = stack.append
    calls = trace.calls.append
    max_line = limits.max_line_bytes
    first_kind, second_ok = FIRST_BYTE, SECOND_BYTES
    missing = object()

    def fail(op: int, message: str) -> WalkStop:
        return WalkStop(WalkError(base + op, f"{OPCODE_NAMES.get(view[op], 'opcode')}: {message}"))

    def need(p: int, n: int, op: int) -> None:
        if n > end - p:
            raise fail(op, f"declares {n} bytes but only {end - p} remain")

    def underflow(op: int) -> WalkStop:
        return fail(op, "stack underflow")

    def fence() -> int:
        return marks[-1] if marks else 0

    def pop_mark(op: int) -> list[object]:
        if not marks:
            raise fail(op, "no MARK on the stack")
        k = marks.pop()
        items = stack[k:]
        del stack[k:]
        return items

    def readline(p: int) -> tuple[bytes, int]:
        # Protocol 0 arguments end at a newline; copy growing windows instead of
        # reading byte by byte, and never more than max_line bytes.
        width = 256
        while True:
            window = bytes(view[p : p + width])
            i = window.find(b"\n")
            if i >= 0:
                return window[:i], p + i + 1
            if p + width >= end:
                raise fail(p - 1, "argument line is not terminated by a newline")
            if width > max_line:
                raise WalkStop(
                    WalkError(base + p - 1, f"line longer than {max_line} bytes", "limit")
                )
            width *= 4

    def note_string(op: int, a: int, n: int, is_text: bool, value: bytes | None = None) -> None:
        if value is None:
            first = view[a]
            kind = first_kind[first]
            if kind == 1 and view[a + 1] not in second_ok[first]:
                return
            if kind == 2 and view[a + n - 1] != 0x2E:
                return
        if len(trace.strings) >= limits.max_strings:
            trace.strings_dropped += 1
            return
        trace.strings.append(StringValue(base + op, base + a, n, is_text, value))

    def note_decoded(op: int, text: str) -> None:
        # The escaped protocol 0 forms: judge the decoded value.
        if len(text) >= 4 and text[0] in "8gc(i\x80":
            note_string(op, op, len(text), True, text.encode("utf-8", "surrogatepass"))

    def call(func: object, args: object, op: int, kind: str) -> Instance:
        if type(func) is GlobalRef:
            func.called = True
            calls(CallSite(kind, func, base + op))
        else:
            calls(CallSite(kind, None, base + op))
        return Instance(func, args, base + op, kind)

    def mutate(target: object, op: int, kind: str) -> None:
        if type(target) is GlobalRef:
            trace.mutations.append(CallSite(kind, target, base + op))

    def memo_get(op: int, i: int) -> None:
        value = memo.get(i, missing)
        if value is missing:
            value = inherited.get(i, missing)
            if value is missing:
                raise fail(op, f"memo key {i} was never stored")
        push(value)

    def new_global(op: int, module: str, name: str, how: str) -> GlobalRef:
        ref = GlobalRef(module, name, base + op, how)
        trace.globals.append(ref)
        return ref

    def text_of(value: object) -> str | None:
        if type(value) is str:
            return value
        if type(value) is Blob and value.kind in ("text", "bytestring"):
            raw = view[value.offset - base : value.offset - base + value.length]
            if value.kind == "text":
                return str(raw, "utf-8", "surrogatepass")
            return decode_py2_string(bytes(raw))
        return None

    return Kit(
        view, end, base, trace, limits, stack, marks, memo, inherited, missing,
        fail, need, underflow, fence, pop_mark, readline, note_string, note_decoded,
        call, mutate, memo_get, new_global, text_of,
    )  # fmt: skip
