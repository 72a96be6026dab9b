"""What the static pickle walk produces: emulated values and the trace of one stream.

The emulator (:mod:`weightgate.formats.pickle.machine`) never builds the objects a pickle
describes. It pushes stand-ins: constants it can read from the stream (``int``, ``float``,
``bool``, ``None``, short ``str``), containers it can assemble without calling anything
(``tuple``, ``list``, :class:`DictValue`, :class:`SetValue`), and markers for everything
that only exists at load time (:class:`GlobalRef`, :class:`Instance`, :class:`Persistent`,
:class:`Opaque`). Large strings and every ``bytes`` value stay in the file as a
:class:`Blob` (offset and length), so the walk never copies tensor data.

Every offset in a trace is absolute: relative to the start of the file or member that was
handed to the walker, plus the ``base_offset`` it was given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

ErrorKind = Literal["malformed", "limit", "joblib"]
"""Why a walk stopped early: bad bytes, a configured bound, or an unreadable joblib array."""


@dataclass(slots=True)
class GlobalRef:
    """A global the pickle imports (and the value it pushes in its place).

    Attributes:
        module: Module name as the stream spells it ("" for an unresolved extension code).
        name: Attribute name, possibly dotted (protocol 4 resolves ``a.b`` attribute by
            attribute).
        offset: Offset of the opcode that imported it.
        how: The opcode: ``GLOBAL``, ``INST``, ``STACK_GLOBAL``, ``EXT1``, ``EXT2``,
            ``EXT4``.
        constant: False when a STACK_GLOBAL operand was computed at load time (a call
            result or other non-literal value); module and name are then unknown.
        origin: For non-constant globals, a description of the operands.
        ext_code: The extension code for EXT opcodes.
        resolved: False for an extension code the copyreg registry does not know.
        called: Set when the global is the target of REDUCE, NEWOBJ, NEWOBJ_EX, OBJ or INST.
    """

    module: str
    name: str
    offset: int
    how: str
    constant: bool = True
    origin: str = ""
    ext_code: int | None = None
    resolved: bool = True
    called: bool = False

    @property
    def dotted(self) -> str:
        """``module.name``, the form findings and allowlists use."""
        return f"{self.module}.{self.name}"


class Instance:
    """The result of a call (REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST): unknown until load.

    Attributes:
        func: The callable or class (usually a :class:`GlobalRef`).
        args: The emulated argument value(s).
        offset: Offset of the opcode that made the call.
        kind: The opcode name.
        state: The last BUILD state applied to it, if any.
        items: The (key, value) pairs SETITEM(S) stored into it, in order (an
            ``OrderedDict()`` is filled this way; the tensor readers need its entries).
    """

    __slots__ = ("args", "func", "items", "kind", "offset", "state")

    def __init__(self, func: object, args: object, offset: int, kind: str) -> None:
        self.func = func
        self.args = args
        self.offset = offset
        self.kind = kind
        self.state: object = None
        self.items: DictValue | None = None


class Blob:
    """A ``bytes``/``bytearray`` value, or a long string, left in place in the stream.

    Attributes:
        offset: Offset of the first payload byte.
        length: Payload length in bytes.
        kind: ``bytes``, ``bytearray`` or ``text`` (UTF-8 text not decoded yet).
    """

    __slots__ = ("kind", "length", "offset")

    def __init__(self, offset: int, length: int, kind: str) -> None:
        self.offset = offset
        self.length = length
        self.kind = kind


class Persistent:
    """What ``persistent_load`` returns for a persistent id (a torch storage, usually)."""

    __slots__ = ("offset", "pid")

    def __init__(self, pid: object, offset: int) -> None:
        self.pid = pid
        self.offset = offset


class Opaque:
    """A value the walk does not model (out-of-band buffers, very long integers)."""

    __slots__ = ("offset", "what")

    def __init__(self, what: str, offset: int) -> None:
        self.what = what
        self.offset = offset


class DictValue(list[tuple[object, object]]):
    """A dict, kept as its (key, value) pairs: emulated keys need not be hashable."""

    __slots__ = ()

    def lookup(self, key: str) -> object:
        """The value last stored under the string ``key``, or None."""
        for k, v in reversed(self):
            if type(k) is str and k == key:
                return v
        return None

    def has(self, key: str) -> bool:
        """Whether the string ``key`` was stored."""
        return any(type(k) is str and k == key for k, _ in self)


class SetValue(list[object]):
    """A set or frozenset, kept as its items."""

    __slots__ = ()


class CallSite(NamedTuple):
    """One place where loading calls something.

    Attributes:
        kind: REDUCE, NEWOBJ, NEWOBJ_EX, OBJ, INST or BUILD (``__setstate__`` or dict
            update on the target).
        target: The global called (for BUILD: the class of the built object), or None
            when the callable is itself computed at load time.
        offset: Offset of the opcode.
    """

    kind: str
    target: GlobalRef | None
    offset: int


class StringValue(NamedTuple):
    """A str/bytes constant whose first bytes suggest an embedded pickle.

    Attributes:
        op_offset: Offset of the opcode that pushed it.
        data_offset: Offset of its first payload byte.
        length: Payload length in bytes (UTF-8 for text).
        is_text: True for str opcodes, False for bytes opcodes.
        value: The payload itself when it is not stored verbatim in the stream (the
            escaped protocol 0 STRING and UNICODE forms); UTF-8 for text.
    """

    op_offset: int
    data_offset: int
    length: int
    is_text: bool
    value: bytes | None = None


@dataclass(frozen=True, slots=True)
class PickleSpan:
    """One complete pickle of a stream (stacked pickles follow each other).

    Attributes:
        start: Offset of its first opcode.
        end: Offset just after its STOP opcode.
        protocol: The PROTO argument, or 0 without a PROTO opcode.
    """

    start: int
    end: int
    protocol: int


@dataclass(frozen=True, slots=True)
class WalkError:
    """Where and why the walk stopped before the end of the stream.

    Attributes:
        offset: Offset of the opcode that could not be executed.
        message: What was wrong, in words.
        kind: ``malformed`` (bad or truncated bytes), ``limit`` (a configured bound was
            reached) or ``joblib`` (array data whose size cannot be determined).
    """

    offset: int
    message: str
    kind: ErrorKind = "malformed"


class ArrayFile(NamedTuple):
    """A joblib ``NDArrayWrapper``: ``joblib.load`` runs ``np.load(allow_pickle=True)``.

    Attributes:
        offset: Offset of the BUILD that makes joblib read the file.
        filename: The file name, joined to the pickle's directory by ``os.path.join``;
            None when it is not a constant string.
    """

    offset: int
    filename: str | None


@dataclass
class PickleTrace:
    """Everything the walk of one stream learned; plain data for the rules to judge.

    Attributes:
        globals: Every global imported, in stream order.
        calls: Every call loading would make, in stream order.
        mutations: BUILD, SETITEM(S), APPEND(S) and ADDITEMS applied to an imported
            global itself rather than to a freshly built object.
        persistent_ids: Offsets of PERSID/BINPERSID opcodes.
        strings: String/bytes constants that may hold an embedded pickle.
        pickles: The complete pickles, in order.
        error: Why the walk stopped early, or None.
        anomalies: Defects the walk stepped over because some loader accepts them (a
            FRAME longer than the data: the C unpickler fails, the Python one reads on).
        opcodes: Opcodes executed, all pickles (and alternative readings) together.
        started_with_proto: The stream begins with a PROTO opcode (binary pickle).
        legacy_torch: The stream is a legacy (pre-zip) PyTorch file.
        trailing: (offset, length) of bytes after the last pickle that are not a pickle.
        torch_data: (offset, length) of raw storage bytes after a legacy PyTorch file's
            pickles.
        strings_dropped: Candidate strings not recorded because there were too many.
        array_files: Files a joblib ``NDArrayWrapper`` makes ``joblib.load`` read.
    """

    globals: list[GlobalRef] = field(default_factory=list)
    calls: list[CallSite] = field(default_factory=list)
    mutations: list[CallSite] = field(default_factory=list)
    persistent_ids: list[int] = field(default_factory=list)
    strings: list[StringValue] = field(default_factory=list)
    pickles: list[PickleSpan] = field(default_factory=list)
    error: WalkError | None = None
    anomalies: list[WalkError] = field(default_factory=list)
    opcodes: int = 0
    started_with_proto: bool = False
    legacy_torch: bool = False
    trailing: tuple[int, int] | None = None
    torch_data: tuple[int, int] | None = None
    strings_dropped: int = 0
    array_files: list[ArrayFile] = field(default_factory=list)

    @property
    def is_pickle(self) -> bool:
        """Whether the bytes are a pickle at all.

        A stream that starts with PROTO is one. Otherwise (protocol 0/1 opcodes are
        printable text), it is one only if some pickle completed or the walk reached
        something only a pickle has: an import or a persistent id. A README or YAML file
        that happens to start with an opcode letter fails before any of that.
        """
        return bool(self.started_with_proto or self.pickles or self.globals or self.persistent_ids)
