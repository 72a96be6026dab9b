"""PyTorch checkpoints built without torch: the same bytes torch.save writes.

``torch.save`` (zip format, torch >= 1.6) pickles the object with protocol 2 and a
``persistent_id`` that replaces every storage with
``('storage', torch.FloatStorage, '<key>', 'cpu', numel)``; a tensor reduces to
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
OrderedDict())``; a state dict is an ``OrderedDict`` carrying a ``_metadata`` attribute.
The zip holds ``<prefix>/data.pkl``, ``<prefix>/byteorder``, ``<prefix>/data/<key>`` (raw
little-endian storage bytes) and ``<prefix>/version`` (serialization.py, ``_save``).

Stand-in classes and functions carry torch's ``__module__``/``__qualname__``; a pickler
subclass writes GLOBAL for them instead of importing torch to check them. Pickling only
serialises: nothing here ever loads a pickle.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FunctionType
from typing import Any

import numpy as np
import numpy.typing as npt

from tests.builders import zips


def _stand_in(obj: Any, module: str, qualname: str) -> Any:
    obj.__module__ = module
    obj.__qualname__ = qualname
    obj.__name__ = qualname.rsplit(".", 1)[-1]
    return obj


class FloatStorage:
    """Stands in for ``torch.FloatStorage`` (only ever pickled by reference)."""


class LongStorage:
    """Stands in for ``torch.LongStorage`` (int64)."""


class HalfStorage:
    """Stands in for ``torch.HalfStorage`` (float16)."""


class DoubleStorage:
    """Stands in for ``torch.DoubleStorage`` (float64)."""


class BFloat16Storage:
    """Stands in for ``torch.BFloat16Storage``."""


class UntypedStorage:
    """Stands in for ``torch.storage.UntypedStorage`` (bytes; the tensor names its dtype)."""


class float8_e4m3fn:
    """Stands in for the dtype ``torch.float8_e4m3fn`` (pickled by reference)."""


class FloatTensor:
    """Stands in for ``torch.FloatTensor`` (legacy checkpoints name the tensor type)."""


def _rebuild_tensor_v2(*args: Any) -> None:
    """Stands in for ``torch._utils._rebuild_tensor_v2`` (never called)."""


def _rebuild_tensor_v3(*args: Any) -> None:
    """Stands in for ``torch._utils._rebuild_tensor_v3``: dtypes without a typed storage."""


class OrderedDict(dict):  # type: ignore[type-arg]
    """Stands in for ``collections.OrderedDict``: reduces the way the real one does."""

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(vars(self)) or None
        return (type(self), (), state, None, iter(self.items()))


_stand_in(FloatStorage, "torch", "FloatStorage")
_stand_in(LongStorage, "torch", "LongStorage")
_stand_in(HalfStorage, "torch", "HalfStorage")
_stand_in(DoubleStorage, "torch", "DoubleStorage")
_stand_in(BFloat16Storage, "torch", "BFloat16Storage")
_stand_in(UntypedStorage, "torch.storage", "UntypedStorage")
_stand_in(float8_e4m3fn, "torch", "float8_e4m3fn")
_stand_in(_rebuild_tensor_v3, "torch._utils", "_rebuild_tensor_v3")
_stand_in(FloatTensor, "torch", "FloatTensor")
_stand_in(_rebuild_tensor_v2, "torch._utils", "_rebuild_tensor_v2")
_stand_in(OrderedDict, "collections", "OrderedDict")
STAND_INS = (
    FloatStorage, LongStorage, HalfStorage, DoubleStorage, BFloat16Storage, UntypedStorage,
    float8_e4m3fn, FloatTensor, _rebuild_tensor_v2, _rebuild_tensor_v3, OrderedDict,
)  # fmt: skip
STORAGE_CLASSES: dict[str, type] = {
    "float32": FloatStorage, "int64": LongStorage, "float16": HalfStorage,
    "float64": DoubleStorage, "bfloat16": BFloat16Storage,
}  # fmt: skip
"""numpy dtype name -> the storage class torch pickles for it."""
V3_DTYPES: dict[str, type] = {"float8_e4m3fn": float8_e4m3fn}
"""numpy (ml_dtypes) dtype name -> the torch dtype ``_rebuild_tensor_v3`` names."""


@dataclass(eq=False)
class Storage:
    """A float32 storage: its key in the archive and its values."""

    key: str
    values: list[float]

    def raw(self) -> bytes:
        """The storage bytes as torch writes them (little-endian float32)."""
        return struct.pack(f"<{len(self.values)}f", *self.values)


@dataclass(eq=False)
class ArrayStorage:
    """A storage holding a numpy array's elements (a dtype of STORAGE_CLASSES or V3_DTYPES)."""

    key: str
    array: npt.NDArray[Any]

    @property
    def untyped(self) -> bool:
        """Pickled as an UntypedStorage of bytes (its tensors go through v3)."""
        return self.array.dtype.name in V3_DTYPES

    def raw(self) -> bytes:
        """The storage bytes as torch writes them (little-endian, C order)."""
        return self.array.astype(self.array.dtype.newbyteorder("<")).tobytes()


@dataclass(eq=False)
class Tensor:
    """A tensor over a storage: contiguous from its start unless told otherwise."""

    storage: Storage | ArrayStorage
    shape: tuple[int, ...]
    offset: int = 0
    stride: tuple[int, ...] | None = None

    def __reduce_ex__(self, protocol: object) -> tuple[Any, ...]:
        stride, step = [], 1
        for dim in reversed(self.shape):
            stride.insert(0, step)
            step *= dim
        args = (
            self.storage, self.offset, self.shape, self.stride or tuple(stride), False,
            OrderedDict(),
        )  # fmt: skip
        if isinstance(self.storage, ArrayStorage) and self.storage.untyped:
            # torch >= 2.1 for dtypes without a typed storage (fp8, uint16...).
            return (_rebuild_tensor_v3, (*args, V3_DTYPES[self.storage.array.dtype.name]))
        return (_rebuild_tensor_v2, args)


class CheckpointPickler(pickle._Pickler):
    """Protocol-2 pickler with torch's persistent ids and GLOBALs for stand-ins."""

    dispatch = pickle._Pickler.dispatch.copy()

    def persistent_id(self, obj: Any) -> Any:
        """Storages become ``('storage', FloatStorage, key, 'cpu', numel)``."""
        if isinstance(obj, Storage):
            return ("storage", FloatStorage, obj.key, "cpu", len(obj.values))
        if isinstance(obj, ArrayStorage) and obj.untyped:
            return ("storage", UntypedStorage, obj.key, "cpu", obj.array.nbytes)
        if isinstance(obj, ArrayStorage):
            kind = STORAGE_CLASSES[obj.array.dtype.name]
            return ("storage", kind, obj.key, "cpu", obj.array.size)
        return None

    def save_global(self, obj: Any, name: str | None = None) -> None:
        """Write GLOBAL for stand-ins without importing their (absent) modules."""
        if obj in STAND_INS:
            self.write(pickle.GLOBAL + f"{obj.__module__}\n{obj.__qualname__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[FunctionType] = save_global  # functions are dispatched without the method


def state_dict(shapes: dict[str, tuple[int, ...]]) -> tuple[OrderedDict, list[Storage]]:
    """A state dict of float tensors with the given shapes, values 0.5, 1.0, 1.5, ..."""
    sd, storages = OrderedDict(), []
    for index, (name, shape) in enumerate(shapes.items()):
        count = 1
        for dim in shape:
            count *= dim
        storage = Storage(str(index), [0.5 * (i + 1) for i in range(count)])
        storages.append(storage)
        sd[name] = Tensor(storage, shape)
    sd._metadata = OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    return sd, storages


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` exactly as torch.save's zip writer does (protocol 2)."""
    out = io.BytesIO()
    CheckpointPickler(out, protocol=2).dump(obj)
    return out.getvalue()


DEFAULT_SHAPES = {"linear.weight": (2, 3), "linear.bias": (2,)}


def records(
    obj: Any, storages: Sequence[Storage | ArrayStorage], prefix: str = "archive"
) -> Iterator[tuple[str, bytes]]:
    """The zip records of a checkpoint, in torch.save's order."""
    yield f"{prefix}/data.pkl", dumps(obj)
    yield f"{prefix}/.format_version", b"1"
    yield f"{prefix}/.storage_alignment", b"64"
    yield f"{prefix}/byteorder", b"little"
    for storage in storages:
        yield f"{prefix}/data/{storage.key}", storage.raw()
    yield f"{prefix}/version", b"3\n"
    yield f"{prefix}/.data/serialization_id", b"1056874452311218446813709620385346226519"


def build_checkpoint(
    shapes: dict[str, tuple[int, ...]] | None = None, prefix: str = "archive"
) -> bytes:
    """A state-dict checkpoint written with zipfile (stored), as the task describes."""
    obj, storages = state_dict(shapes or DEFAULT_SHAPES)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records(obj, storages, prefix):
            archive.writestr(name, data)
    return out.getvalue()


def array_state_dict(
    arrays: dict[str, npt.NDArray[Any]],
) -> tuple[OrderedDict, list[ArrayStorage]]:
    """A state dict of the given arrays, one storage each, as ``model.state_dict()``."""
    sd, storages = OrderedDict(), []
    for index, (name, array) in enumerate(arrays.items()):
        storage = ArrayStorage(str(index), np.ascontiguousarray(array))
        storages.append(storage)
        sd[name] = Tensor(storage, tuple(array.shape))
    sd._metadata = OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    return sd, storages


def write_checkpoint(
    path: Path, obj: Any, storages: Sequence[Storage | ArrayStorage], prefix: str = "archive"
) -> Path:
    """Write a checkpoint of ``obj`` to ``path`` with zipfile (stored), member by member."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records(obj, storages, prefix):
            archive.writestr(name, data)
    return path


def build_checkpoint_torch_layout(shapes: dict[str, tuple[int, ...]] | None = None) -> bytes:
    """The same checkpoint laid out like torch's own writer (miniz).

    miniz writes data descriptors (zero sizes in local headers, flag 0x08) and pads each
    record's data to 64 bytes with an ``FB`` extra field full of ``Z``.
    """
    obj, storages = state_dict(shapes or DEFAULT_SHAPES)
    members, offset = [], 0
    for name, data in records(obj, storages):
        header_end = offset + 30 + len(name) + 4
        pad = -header_end % 64
        members.append(
            zips.Member(
                name,
                data,
                flags=0x800,
                descriptor=True,
                extra=b"FB" + struct.pack("<H", pad) + b"Z" * pad,
            )
        )
        offset = header_end + pad + len(data) + 16
    return zips.build_zip(members)


def build_legacy_tar(obj_pickle: bytes | None = None, extra_storage_key: Any = None) -> bytes:
    """A torch < 0.4 checkpoint: a tar of sys_info, pickle, storages and tensors.

    ``pickle`` maps names to persistent ids of tensors; ``storages`` is a count, then per
    storage a pickled (key, location, type) and its raw bytes (8-byte count first), then a
    pickled list of views; ``tensors`` likewise (serialization.py, ``legacy_load``).
    ``extra_storage_key`` adds a second storage whose key is that object, pickled.
    """
    values = [0.5, 1.0, 1.5, 2.0]
    raw = struct.pack("<q", len(values)) + struct.pack(f"<{len(values)}f", *values)
    sys_info = pickle.dumps(
        {
            "protocol_version": 1001,
            "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 8},
        },
        protocol=2,
    )
    records = [dumps(("0", "cpu", FloatStorage)) + raw]
    if extra_storage_key is not None:
        records.append(dumps((extra_storage_key, "cpu", FloatStorage)) + raw)
    storages = dumps(len(records)) + b"".join(records) + dumps([])  # [] = storage views
    tensors = (
        dumps(1)
        + dumps(("1", "0", FloatTensor))
        + struct.pack("<ii", 1, 0)
        + struct.pack("<qqq", len(values), 1, 0)
    )
    if obj_pickle is None:
        out = io.BytesIO()
        pickler = CheckpointPickler(out, protocol=2)
        pickler.persistent_id = lambda obj: obj.key if isinstance(obj, Storage) else None  # type: ignore[method-assign]
        pickler.dump(OrderedDict({"weight": Storage("1", values)}))
        obj_pickle = out.getvalue()
    files = [
        ("sys_info", sys_info),
        ("pickle", obj_pickle),
        ("storages", storages),
        ("tensors", tensors),
    ]
    return zips.build_tar(
        [(zips.tar_info(name), data) for name, data in files], fmt=tarfile.PAX_FORMAT
    )
