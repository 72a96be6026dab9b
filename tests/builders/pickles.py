"""Hand-assembled pickle attacks and look-alikes, byte for byte.

Every builder returns bytes and never loads anything. Opcodes are spelled out (rather
than produced by ``pickle.dumps`` of a ``__reduce__``) so that tests can assert exact
offsets; the comments give the offset of the interesting opcode.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import Any

from weightgate.formats.pickle import TORCH_LEGACY_MAGIC
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding
from weightgate.scan.settings import ScanSettings

PROTO = b"\x80"
FRAME = b"\x95"
MEMOIZE = b"\x94"
STACK_GLOBAL = b"\x93"
REDUCE = b"R"
STOP = b"."
MARK = b"("
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
BUILD = b"b"
OBJ = b"o"
POP = b"0"
NONE = b"N"
SETITEM = b"s"


def proto(version: int) -> bytes:
    """PROTO ``version``."""
    return PROTO + bytes([version])


def global_op(module: str, name: str) -> bytes:
    """GLOBAL (protocol 0 text form)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def inst(module: str, name: str) -> bytes:
    """INST: calls module.name with the items since the last MARK."""
    return b"i" + module.encode() + b"\n" + name.encode() + b"\n"


def short_str(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def binunicode(text: str) -> bytes:
    """BINUNICODE (4-byte length)."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def short_bytes(raw: bytes) -> bytes:
    """SHORT_BINBYTES."""
    return b"C" + bytes([len(raw)]) + raw


def binput(index: int) -> bytes:
    """BINPUT ``index``."""
    return b"q" + bytes([index])


def binget(index: int) -> bytes:
    """BINGET ``index``."""
    return b"h" + bytes([index])


def binint1(value: int) -> bytes:
    """BININT1."""
    return b"K" + bytes([value])


def framed(body: bytes, version: int = 4) -> bytes:
    """PROTO, one FRAME around ``body`` (which should end with STOP)."""
    return proto(version) + FRAME + struct.pack("<Q", len(body)) + body


def reduce_call(callable_ops: bytes, argument: str) -> bytes:
    """``callable(argument)``: callable opcodes, the argument, TUPLE1, REDUCE."""
    return callable_ops + short_str(argument) + TUPLE1 + REDUCE


def system_call_v4(module: str = "posix", name: str = "system") -> bytes:
    """The classic protocol 4 payload; STACK_GLOBAL at offset 8 + len(module) + len(name)."""
    return (
        proto(4)
        + reduce_call(
            short_str(module) + MEMOIZE + short_str(name) + MEMOIZE + STACK_GLOBAL,
            "echo pwned",
        )
        + STOP
    )


class SystemCall:
    """Pickles as ``posix.system('echo pwned')`` (the reduce a real exploit writes)."""

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, ("echo pwned",))


def system_call_all_protocols() -> dict[int, bytes]:
    """The same ``os.system`` payload written by pickle.dumps at protocols 0 to 5."""
    return {version: pickle.dumps(SystemCall(), protocol=version) for version in range(6)}


def memo_stack_global() -> bytes:
    """Module and name stored in the memo first, fetched with BINGET for STACK_GLOBAL.

    Layout: PROTO 4, 'subprocess' BINPUT 1 POP, 'benign' BINPUT 2 POP, 'check_output'
    BINPUT 3 POP, BINGET 1, BINGET 3, then STACK_GLOBAL at offset 49 and REDUCE at 55.
    """
    body = (
        short_str("subprocess") + binput(1) + POP
        + short_str("benign") + binput(2) + POP
        + short_str("check_output") + binput(3) + POP
        + binget(1) + binget(3) + STACK_GLOBAL
    )  # fmt: skip
    return proto(4) + body + short_str("id") + TUPLE1 + REDUCE + STOP


def dynamic_getattr_global() -> bytes:
    """STACK_GLOBAL whose name is the result of ``builtins.getattr(...)`` (a call).

    'os' at 2, GLOBAL builtins getattr at 6, getattr(str, 'lower') at 46, the call
    ``lower('SYSTEM')`` at 56 and STACK_GLOBAL at 57.
    """
    getattr_call = (
        global_op("builtins", "getattr")
        + global_op("builtins", "str")
        + short_str("lower")
        + TUPLE2
        + REDUCE
        + short_str("SYSTEM")
        + TUPLE1
        + REDUCE
    )
    return proto(4) + short_str("os") + getattr_call + STACK_GLOBAL + STOP


def ext_call(code: int) -> bytes:
    """EXT2 ``code`` (at offset 2) called with one argument."""
    return proto(2) + b"\x83" + struct.pack("<H", code) + short_str("id") + TUPLE1 + REDUCE + STOP


def legacy_torch(obj_pickle: bytes, storage: bytes = b"\x00" * 16) -> bytes:
    """A legacy (pre-zip) torch.save file: magic, version, sys_info, obj, keys, data."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}
    return (
        pickle.dumps(TORCH_LEGACY_MAGIC, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps(sys_info, protocol=2)
        + obj_pickle
        + pickle.dumps(["0"], protocol=2)
        + struct.pack("<q", len(storage) // 4)
        + storage
    )


def huge_binbytes8() -> bytes:
    """BINBYTES8 (at offset 2) declaring 2**63 bytes."""
    return proto(4) + b"\x8e" + struct.pack("<Q", 2**63) + b"xx" + STOP


def many_opcodes(count: int) -> bytes:
    """A valid pickle of about ``count`` opcodes (NONE, POP pairs)."""
    return proto(4) + b"N0" * (count // 2) + NONE + STOP


def joblib_dump(value: object, **kwargs: Any) -> bytes:
    """What ``joblib.dump`` writes for ``value`` (never loaded)."""
    import joblib

    out = io.BytesIO()
    joblib.dump(value, out, **kwargs)
    return out.getvalue()


def findings(data: bytes, name: str = "model.pkl", **settings: Any) -> list[Finding]:
    """Scan ``data`` as a file named ``name`` and return its findings."""
    found: list[Finding] = []
    ScanContext(ScanSettings(**settings), name, found).scan(data, name)
    return found


def summary(found: list[Finding]) -> list[tuple[str, str, int | None, str | None]]:
    """(rule, severity, offset, evidence) of each finding, for exact comparisons."""
    return [(f.rule, f.severity.label, f.offset, f.evidence) for f in found]
