"""Opcode handlers that push constants: numbers, strings, bytes, None and booleans.

Every length is checked against the bytes that remain before anything is sliced. Strings
up to 64 KiB are decoded (STACK_GLOBAL needs their text); longer ones and every bytes
value stay in the file as a :class:`~weightgate.formats.pickle.trace.Blob`. Payloads
whose first bytes could start a pickle are noted for the embedded-pickle check.
"""

from __future__ import annotations

import codecs

from weightgate.formats.pickle.kit import (
    F64BE,
    FIRST_BYTE,
    I32,
    U16,
    U32,
    U64,
    Handler,
    Kit,
    decode_py2_string,
)
from weightgate.formats.pickle.trace import Blob, Opaque

_DECODE_TEXT_MAX = 64 * 1024  # longer strings stay in the file as a Blob
_LONG_INT_MAX = 64  # LONG4 payloads longer than this become Opaque


def value_handlers(kit: Kit) -> dict[str, Handler]:
    """The handlers of the constant-pushing opcodes, by pickletools name."""
    view, end, base = kit.view, kit.end, kit.base
    stack, push = kit.stack, kit.stack.append
    need, fail, underflow, fence = kit.need, kit.fail, kit.underflow, kit.fence
    readline, note_string, note_decoded = kit.readline, kit.note_string, kit.note_decoded
    first_kind = FIRST_BYTE

    def h_int(p: int) -> int:
        line, q = readline(p)
        if line == b"00":
            push(False)
        elif line == b"01":
            push(True)
        else:
            try:
                push(int(line, 0))
            except ValueError:
                push(int(line))
        return q

    def h_binint(p: int) -> int:
        if p + 4 > end:
            need(p, 4, p - 1)
        push(I32(view, p)[0])
        return p + 4

    def h_binint1(p: int) -> int:
        push(view[p])
        return p + 1

    def h_binint2(p: int) -> int:
        if p + 2 > end:
            need(p, 2, p - 1)
        push(U16(view, p)[0])
        return p + 2

    def h_long(p: int) -> int:
        line, q = readline(p)
        if line.endswith(b"L"):
            line = line[:-1]
        try:
            push(int(line, 0))
        except ValueError:
            if not line.lstrip(b"-+").isdigit():
                raise
            push(Opaque("long integer", base + p - 1))
        return q

    def h_long1(p: int) -> int:
        n = view[p]
        need(p + 1, n, p - 1)
        push(int.from_bytes(view[p + 1 : p + 1 + n], "little", signed=True))
        return p + 1 + n

    def h_long4(p: int) -> int:
        need(p, 4, p - 1)
        n: int = I32(view, p)[0]
        if n < 0:
            raise fail(p - 1, "negative byte count")
        a = p + 4
        need(a, n, p - 1)
        if n <= _LONG_INT_MAX:
            push(int.from_bytes(view[a : a + n], "little", signed=True))
        else:
            push(Opaque("long integer", base + p - 1))
        return a + n

    def h_string(p: int) -> int:
        line, q = readline(p)
        if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
            raise fail(p - 1, "the STRING opcode argument must be quoted")
        text = decode_py2_string(codecs.escape_decode(line[1:-1])[0])
        note_decoded(p - 1, text)
        push(text)
        return q

    def push_text(op: int, a: int, n: int, kind: str) -> int:
        need(a, n, op)
        if n >= 4 and first_kind[view[a]]:
            note_string(op, a, n, True)
        if n > _DECODE_TEXT_MAX:
            push(Blob(base + a, n, kind))
        elif kind == "text":
            push(str(view[a : a + n], "utf-8", "surrogatepass"))
        else:
            push(decode_py2_string(bytes(view[a : a + n])))
        return a + n

    def push_bytes(op: int, a: int, n: int, kind: str) -> int:
        need(a, n, op)
        if n >= 4 and first_kind[view[a]]:
            note_string(op, a, n, False)
        push(Blob(base + a, n, kind))
        return a + n

    def h_binstring(p: int) -> int:
        need(p, 4, p - 1)
        n = I32(view, p)[0]
        if n < 0:
            raise fail(p - 1, "negative byte count")
        return push_text(p - 1, p + 4, n, "bytestring")

    def h_short_binstring(p: int) -> int:
        return push_text(p - 1, p + 1, view[p], "bytestring")

    def h_binbytes(p: int) -> int:
        need(p, 4, p - 1)
        return push_bytes(p - 1, p + 4, U32(view, p)[0], "bytes")

    def h_short_binbytes(p: int) -> int:
        return push_bytes(p - 1, p + 1, view[p], "bytes")

    def h_binbytes8(p: int) -> int:
        need(p, 8, p - 1)
        return push_bytes(p - 1, p + 8, U64(view, p)[0], "bytes")

    def h_bytearray8(p: int) -> int:
        need(p, 8, p - 1)
        return push_bytes(p - 1, p + 8, U64(view, p)[0], "bytearray")

    def h_unicode(p: int) -> int:
        line, q = readline(p)
        text = str(line, "raw-unicode-escape")
        note_decoded(p - 1, text)
        push(text)
        return q

    def h_short_binunicode(p: int) -> int:
        # The commonest opcode of all: push_text inlined.
        n = view[p]
        a = p + 1
        b = a + n
        if b > end:
            need(a, n, p - 1)
        if n >= 4 and first_kind[view[a]]:
            note_string(p - 1, a, n, True)
        push(str(view[a:b], "utf-8", "surrogatepass"))
        return b

    def h_binunicode(p: int) -> int:
        need(p, 4, p - 1)
        return push_text(p - 1, p + 4, U32(view, p)[0], "text")

    def h_binunicode8(p: int) -> int:
        need(p, 8, p - 1)
        return push_text(p - 1, p + 8, U64(view, p)[0], "text")

    def h_float(p: int) -> int:
        line, q = readline(p)
        push(float(line))
        return q

    def h_binfloat(p: int) -> int:
        if p + 8 > end:
            need(p, 8, p - 1)
        push(F64BE(view, p)[0])
        return p + 8

    def h_none(p: int) -> int:
        push(None)
        return p

    def h_newtrue(p: int) -> int:
        push(True)
        return p

    def h_newfalse(p: int) -> int:
        push(False)
        return p

    def h_next_buffer(p: int) -> int:
        push(Opaque("out-of-band buffer", base + p - 1))
        return p

    def h_readonly_buffer(p: int) -> int:
        if len(stack) - fence() < 1:
            raise underflow(p - 1)
        return p

    return {
        "INT": h_int, "BININT": h_binint, "BININT1": h_binint1, "BININT2": h_binint2,
        "LONG": h_long, "LONG1": h_long1, "LONG4": h_long4, "STRING": h_string,
        "BINSTRING": h_binstring, "SHORT_BINSTRING": h_short_binstring,
        "BINBYTES": h_binbytes, "SHORT_BINBYTES": h_short_binbytes,
        "BINBYTES8": h_binbytes8, "BYTEARRAY8": h_bytearray8,
        "UNICODE": h_unicode, "SHORT_BINUNICODE": h_short_binunicode,
        "BINUNICODE": h_binunicode, "BINUNICODE8": h_binunicode8,
        "FLOAT": h_float, "BINFLOAT": h_binfloat, "NONE": h_none,
        "NEWTRUE": h_newtrue, "NEWFALSE": h_newfalse,
        "NEXT_BUFFER": h_next_buffer, "READONLY_BUFFER": h_readonly_buffer,
    }  # fmt: skip
