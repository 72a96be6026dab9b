"""PyTorch zip checkpoints (``torch.save``, torch >= 1.6): tensors found without unpickling.

A checkpoint is a zip of ``<prefix>/data.pkl`` (the pickled object), ``<prefix>/data/<key>``
(one member of raw little-endian bytes per storage, always stored uncompressed) and a few
small records (torch/serialization.py, ``_save``). The zip is read by the scanner's own
bounded reader, and ``data.pkl`` by the scanner's pickle machine, which imports and calls
nothing: a tensor is a call of ``torch._utils._rebuild_tensor_v2`` (or ``_rebuild_tensor``,
``_rebuild_tensor_v3`` for fp8 and unsigned types) on a persistent id
``('storage', torch.FloatStorage, key, location, numel)``, its offset, size and stride.
Containers are read where they are plain (dicts, ``OrderedDict``, lists, tuples): nested
state dicts give dotted names (``model.encoder.weight``); a lone tensor is named
:data:`ROOT_NAME`. Every storage the pickle refers to must belong to such a tensor, so a
checkpoint holding tensors in an object the reader does not model (a pickled
``nn.Module``) is refused rather than half read.

The reader is strict where the scanner is lenient: a zip whose structure lets loaders
disagree, a compressed or encrypted member, big-endian data, a non-contiguous tensor or any
size that does not fit is refused with the reason. The legacy formats (a bare pickle stream,
torch < 1.6; a tar, torch < 0.4) are not read.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeGuard

from weightgate.analysis.dtypes import ELEMENT_TYPES, Values
from weightgate.analysis.tensor_info import FileBytes, TensorInfo, plain_values
from weightgate.errors import FormatError
from weightgate.formats.detect import FileFormat
from weightgate.formats.limits import Limits
from weightgate.formats.pickle import (
    TORCH_LEGACY_MAGIC,
    WalkLimits,
    read_single_pickle,
    walk_limits,
)
from weightgate.formats.pickle.trace import DictValue, GlobalRef, Instance, Persistent
from weightgate.formats.tar import LEGACY_TORCH_MEMBERS, read_tar
from weightgate.formats.zip import ODD_FLAGS, Method, ZipEntry, read_zip

ROOT_NAME = "<root>"
"""The name of a tensor saved on its own (``torch.save(tensor)``): it has no key."""

STORAGE_TYPES = {
    "DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16",
    "BFloat16Storage": "BF16", "LongStorage": "I64", "IntStorage": "I32",
    "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
}  # fmt: skip
"""``torch.<name>`` storage classes -> the element type they hold."""

UNTYPED_STORAGES = frozenset({"torch.storage.UntypedStorage", "torch.UntypedStorage"})
"""Storage of ``_rebuild_tensor_v3`` (dtypes without a typed storage): its numel is bytes.
torch pickles the class where it is defined, ``torch.storage``."""

V3_DTYPES = {
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e8m0fnu": "F8_E8M0", "uint16": "U16",
    "uint32": "U32", "uint64": "U64",
}  # fmt: skip
"""``torch.<dtype>`` globals ``_rebuild_tensor_v3`` names -> element type."""

_REBUILD_ARGS = {
    "torch._utils._rebuild_tensor": (4,),
    "torch._utils._rebuild_tensor_v2": (6, 7),
    "torch._utils._rebuild_tensor_v3": (7, 8),
}
"""Tensor rebuild functions -> their argument counts (the last one is optional metadata)."""
_PARAMETERS = frozenset(
    {"torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"}
)
"""``nn.Parameter`` rebuilds: the first argument is the tensor."""
_ORDERED_DICT = "collections.OrderedDict"
_MAX_DEPTH = 32
"""Containers nested deeper are not read (their storages then make the file refused)."""


@dataclass(frozen=True)
class _Storage:
    """One storage member: where its bytes are and what they hold."""

    key: str
    offset: int
    nbytes: int
    dtype: str | None


@dataclass
class _Checkpoint:
    """The members of one checkpoint, and the storages read from them so far."""

    relative: str
    prefix: str
    members: dict[str, ZipEntry]
    storages: dict[str, _Storage] = field(default_factory=dict)


class TorchZipFile:
    """The tensors of one PyTorch zip checkpoint."""

    def __init__(self, tensors: list[TensorInfo], source: FileBytes) -> None:
        self.tensors = tensors
        self.source = source

    def values(self, tensor: TensorInfo, chunk_elements: int) -> Iterator[Values]:
        """Decoded values, ``chunk_elements`` at a time."""
        return plain_values(self.source, tensor, chunk_elements)


def read_torch_zip(data: mmap.mmap, source: FileBytes, limits: Limits) -> TorchZipFile | None:
    """The tensors of a zip file that is a PyTorch checkpoint holding storages, else None.

    A zip without ``<prefix>/data.pkl`` is some other archive, and one whose pickle refers
    to no storage holds no tensors (``training_args.bin``): both are left to the caller.

    Raises:
        FormatError: The file is a checkpoint, but one this reader refuses.
    """
    relative = source.name
    with memoryview(data) as view:
        listing = read_zip(view, max_members=limits.max_archive_members)
        members = {entry.record.name: entry for entry in listing.entries}
        prefix = _archive_prefix(listing.entries)
        pickled = members.get(f"{prefix}/data.pkl") if prefix else None
        if prefix is None or pickled is None:
            return None
        if listing.issues:
            issue = listing.issues[0]
            raise FormatError(
                f"{relative}: the checkpoint's zip structure is ambiguous ({issue.message}); "
                "loaders may read different bytes, so the analysis does not read it",
                issue.offset,
            )
        _check_byteorder(view, members.get(f"{prefix}/byteorder"), relative)
        start, length = _stored_member(pickled, "data.pkl", relative)
        with view[start : start + length] as member:
            try:
                walked = read_single_pickle(member, walk_limits(limits))
            except FormatError as exc:
                raise FormatError(f"{relative}: data.pkl: {exc}", start) from None
    if not walked.trace.persistent_ids:
        return None
    checkpoint = _Checkpoint(relative, prefix, members)
    tensors: dict[str, TensorInfo] = {}
    used: set[int] = set()
    for name, call in _tensor_calls(walked.value, limits, relative):
        if name in tensors:
            raise FormatError(f"{relative}: two tensors are named {name!r}")
        storage_id, tensor = _tensor(checkpoint, call, name)
        used.add(storage_id)
        tensors[name] = tensor
    stray = sorted(set(walked.trace.persistent_ids) - used)
    if stray:
        raise FormatError(
            f"{relative}: data.pkl refers to a storage (persistent id at byte {stray[0]} of "
            "data.pkl) outside the dicts, lists and tensors the analysis reads (a pickled "
            "module or other object?); save a state_dict to compare it",
            start + stray[0],
        )
    return TorchZipFile(list(tensors.values()), source)


def is_legacy_torch(data: mmap.mmap, kind: FileFormat, limits: Limits) -> bool:
    """Whether a pickle stream or tar is a legacy checkpoint, which this reader refuses.

    A torch < 1.6 checkpoint is a pickle stream whose first pickle is torch's magic number,
    a handful of opcodes (a pickle that does not stop within a few is something else and is
    not walked further); a torch < 0.4 one is a tar of ``sys_info``, ``pickle``,
    ``storages`` and ``tensors``.
    """
    if kind is FileFormat.TAR:
        with memoryview(data) as view:
            try:
                listing = read_tar(
                    view,
                    max_members=limits.max_archive_members,
                    max_header_bytes=limits.max_header_bytes,
                )
            except FormatError:
                return False
        return LEGACY_TORCH_MEMBERS.issubset(member.name for member in listing.members)
    if kind is not FileFormat.PICKLE:
        return False
    try:
        first = read_single_pickle(data, WalkLimits(max_opcodes=8))
    except FormatError:
        return False
    return type(first.value) is int and first.value == TORCH_LEGACY_MAGIC


def _tensor_calls(root: object, limits: Limits, relative: str) -> list[tuple[str, Instance]]:
    """Every tensor rebuild call reachable through plain containers, with its dotted name.

    Dict keys must be str or int (others are skipped, and so are values the reader does
    not model); a dict key set twice keeps its last value, as ``dict`` does. A container
    reached twice (through the memo) is read twice, under both names, and the walk is
    bounded by ``limits.max_metadata_entries`` visits.
    """
    found: list[tuple[str, Instance]] = []
    pending: list[tuple[object, tuple[str, ...]]] = [(root, ())]
    visits = 0
    while pending:
        value, path = pending.pop()
        visits += 1
        if visits > limits.max_metadata_entries:
            raise FormatError(
                f"{relative}: data.pkl: more than {limits.max_metadata_entries} values to "
                "visit (limits.max_metadata_entries)"
            )
        pairs: list[tuple[object, object]]
        if type(value) is Instance:
            target = _dotted(value.func)
            if target in _REBUILD_ARGS:
                found.append((".".join(path) or ROOT_NAME, value))
                continue
            if target in _PARAMETERS and type(value.args) is tuple and value.args:
                pending.append((value.args[0], path))
                continue
            if target != _ORDERED_DICT or value.args != ():
                continue
            pairs = value.items or []
        elif type(value) is DictValue:
            pairs = value
        elif type(value) is list or type(value) is tuple:
            pairs = list(enumerate(value))
        else:
            continue
        if len(path) >= _MAX_DEPTH:
            continue
        children: dict[str | int, object] = {}
        for key, child in pairs:
            if type(key) is str or type(key) is int:
                children[key] = child
        for key, child in reversed(children.items()):
            pending.append((child, (*path, str(key))))
    return found


def _tensor(checkpoint: _Checkpoint, call: Instance, name: str) -> tuple[int, TensorInfo]:
    """The tensor a rebuild call makes, and the offset of its storage's persistent id."""
    where = f"{checkpoint.relative}: tensor {name!r}"
    target = _dotted(call.func)
    args = call.args
    if type(args) is not tuple or len(args) not in _REBUILD_ARGS[target]:
        raise FormatError(f"{where}: {target} with arguments the analysis does not read")
    persistent, storage_offset, shape, stride = args[:4]
    dtype_ref = args[6] if target.endswith("_v3") else None
    if type(persistent) is not Persistent:
        raise FormatError(f"{where}: its storage is not a persistent id")
    storage = _storage(checkpoint, persistent, where)
    if dtype_ref is None:
        dtype = storage.dtype
    else:
        dtype = V3_DTYPES.get(_dotted(dtype_ref).removeprefix("torch."))
        if dtype is None:
            raise FormatError(f"{where}: dtype {_dotted(dtype_ref)} is not read by the analysis")
    if dtype is None:
        raise FormatError(f"{where}: an untyped storage without a dtype")
    itemsize = ELEMENT_TYPES[dtype].itemsize
    if not _ints(shape) or any(dim < 0 for dim in shape):
        raise FormatError(f"{where}: size {_short(shape)} is not a tuple of sizes")
    if not _ints(stride) or len(stride) != len(shape):
        raise FormatError(f"{where}: stride {_short(stride)} does not match size {_short(shape)}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise FormatError(f"{where}: storage offset {_short(storage_offset)} is not an offset")
    count = _element_count(shape, storage.nbytes // itemsize + 1)
    start = storage_offset * itemsize
    if start + count * itemsize > storage.nbytes:
        raise FormatError(
            f"{where}: size {_short(shape)} from element {storage_offset} runs past the end of its "
            f"storage {storage.key!r} ({storage.nbytes} bytes)"
        )
    if count and not _contiguous(shape, stride):
        raise FormatError(
            f"{where}: stride {_short(stride)} is not contiguous for size {_short(shape)}; "
            "the analysis reads contiguous tensors only"
        )
    info = TensorInfo(
        name, checkpoint.relative, dtype, shape, storage.offset + start, count * itemsize
    )
    return persistent.offset, info


def _storage(checkpoint: _Checkpoint, persistent: Persistent, where: str) -> _Storage:
    """The storage member a persistent id names, checked against its declared size."""
    pid = persistent.pid
    if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
        raise FormatError(f"{where}: persistent id {_short(pid)} is not a storage")
    _, kind, key, _location, numel = pid
    if type(key) is not str or type(numel) is not int or numel < 0:
        raise FormatError(f"{where}: persistent id {_short(pid)} is not a storage")
    known = checkpoint.storages.get(key)
    if known is not None:
        return known
    module, _, kind_name = _dotted(kind).rpartition(".")
    typed = module == "torch" and kind_name in STORAGE_TYPES
    if not typed and _dotted(kind) not in UNTYPED_STORAGES:
        raise FormatError(f"{where}: storage type {_dotted(kind)} is not read by the analysis")
    dtype = STORAGE_TYPES[kind_name] if typed else None
    itemsize = ELEMENT_TYPES[dtype].itemsize if dtype else 1
    member = f"{checkpoint.prefix}/data/{key}"
    entry = checkpoint.members.get(member)
    if entry is None:
        raise FormatError(f"{where}: its storage {key!r} has no member {member}")
    offset, length = _stored_member(entry, member, checkpoint.relative)
    if length != numel * itemsize:
        raise FormatError(
            f"{where}: storage {key!r} declares {numel} elements of {itemsize} bytes, but "
            f"its member holds {length} bytes"
        )
    storage = _Storage(key, offset, length, dtype)
    checkpoint.storages[key] = storage
    return storage


def _dotted(value: object) -> str:
    return value.dotted if type(value) is GlobalRef and value.constant else "<computed>"


def _short(value: object) -> str:
    """A value for a message: hostile sizes and ids can be a million items long."""
    text = repr(value)
    return text if len(text) <= 120 else f"{text[:117]}..."


def _ints(value: object) -> TypeGuard[tuple[int, ...]]:
    return type(value) is tuple and all(type(item) is int for item in value)


def _element_count(shape: tuple[int, ...], cap: int) -> int:
    """The product of ``shape``, or a number above ``cap`` when it is larger (no huge ints)."""
    if 0 in shape:
        return 0
    count = 1
    for dim in shape:
        count *= dim
        if count > cap:
            return cap + 1
    return count


def _contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    # torch's is_contiguous: strides of size-1 dimensions do not matter.
    expected = 1
    for dim, step in zip(reversed(shape), reversed(stride), strict=True):
        if dim != 1:
            if step != expected:
                return False
            expected *= dim
    return True


def _archive_prefix(entries: list[ZipEntry]) -> str | None:
    # torch's reader (caffe2 inline_container.cc) takes the directory of the first record
    # of the central directory as the archive's name, and reads every record under it.
    recorded = [entry for entry in entries if entry.central]
    if not recorded:
        return None
    first = min(recorded, key=lambda entry: entry.central[0].offset).record.name
    prefix, slash, _ = first.partition("/")
    return prefix if slash and prefix else None


def _stored_member(entry: ZipEntry, what: str, relative: str) -> tuple[int, int]:
    """Where a member's bytes lie in the file, if they are stored as they are."""
    record = entry.record
    if record.method != Method.STORED:
        raise FormatError(
            f"{relative}: member {what} is compressed (method {record.method}); torch "
            "stores checkpoint members uncompressed, so the analysis reads only those",
            entry.local.offset,
        )
    odd = [name for bit, name in ODD_FLAGS.items() if entry.flags & bit]
    if odd:
        raise FormatError(
            f"{relative}: member {what} is flagged {', '.join(odd)}", entry.local.offset
        )
    if entry.truncated or not entry.size_known:
        raise FormatError(f"{relative}: member {what} runs past the end of the file")
    if record.compressed_size != record.uncompressed_size:
        raise FormatError(
            f"{relative}: member {what} is stored but declares {record.compressed_size} "
            f"stored and {record.uncompressed_size} uncompressed bytes",
            entry.local.offset,
        )
    return entry.local.data_offset, entry.data_end - entry.local.data_offset


def _check_byteorder(view: memoryview, entry: ZipEntry | None, relative: str) -> None:
    if entry is None:
        return  # written before torch 1.12: little-endian
    start, length = _stored_member(entry, "byteorder", relative)
    order = bytes(view[start : start + min(length, 16)])
    if order != b"little":
        raise FormatError(
            f"{relative}: byteorder is {order[:16]!r}; the analysis reads little-endian "
            "checkpoints only"
        )
