"""A model's tensors, opened for streaming: stored bytes and decoded values, chunk by chunk.

``open_model(path)`` opens every safetensors, GGUF and PyTorch zip checkpoint of a directory
(or one file) and lists their tensors by name; nothing is read until asked, and every read is
a bounded chunk (see :class:`~weightgate.analysis.tensor_info.FileBytes`), so memory follows
the chunk size, not the model. Files are recognised by content
(:func:`weightgate.formats.detect.detect_format`); other files (configs, tokenizers, zips that
are no checkpoint) are kept by digest only. A directory that holds safetensors or GGUF
tensors keeps its PyTorch checkpoints by digest too, readable or not: Hugging Face
repositories ship ``pytorch_model.bin`` beside ``model.safetensors`` with the same tensors,
and the safetensors copy is the one compared. A checkpoint that would be compared and
cannot be read is an input error.

The readers: :mod:`.safetensors_tensors` (own, over the scanner's strict header reader),
:mod:`.gguf_tensors` (dequantised by the ``gguf`` package) and :mod:`.pytorch_tensors`
(own, over the scanner's zip reader and pickle machine; nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from weightgate.analysis.dtypes import Values
from weightgate.analysis.gguf_tensors import GGUFTensorFile
from weightgate.analysis.pytorch_tensors import TorchZipFile, is_legacy_torch, read_torch_zip
from weightgate.analysis.safetensors_tensors import SafetensorsFile
from weightgate.analysis.tensor_info import CHUNK_ELEMENTS, FileBytes, TensorFile, TensorInfo
from weightgate.errors import FormatError, InputError
from weightgate.formats.detect import FileFormat, detect_format
from weightgate.formats.limits import Limits
from weightgate.formats.mapping import close_mapping


@dataclass
class ModelTensors:
    """Every tensor of a model, by name, plus the digests of its other files."""

    root: Path
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    other_files: dict[str, str] = field(default_factory=dict)
    readers: dict[str, TensorFile] = field(default_factory=dict)

    def values(self, name: str, chunk_elements: int = CHUNK_ELEMENTS) -> Iterator[Values]:
        """The values of tensor ``name``, chunk by chunk (float32, or float64 where needed)."""
        info = self.tensors[name]
        return self.readers[info.file].values(info, chunk_elements)

    def add_file(self, file: Path, relative: str, stack: ExitStack, limits: Limits) -> None:
        """Open ``file`` (named ``relative`` in the model): its tensors, or else its digest.

        A PyTorch checkpoint the reader refuses is kept by digest too (the scanner reports
        on the file itself).

        Raises:
            InputError: The file is unreadable, a malformed or truncated tensor file, or
                holds a tensor name another file already holds; then nothing of it is added.
        """
        reader = _open_tensor_file(file, relative, str(file), stack, limits)
        if isinstance(reader, str | _UnreadTorch):
            self.other_files[relative] = reader if isinstance(reader, str) else reader.digest
            return
        self.add_reader(relative, reader, str(self.root))

    def add_reader(self, relative: str, reader: TensorFile, name: str) -> None:
        """Add an open file's tensors (``name``: the model, as errors call it).

        Raises:
            InputError: A tensor name another file already holds; nothing is added then.
        """
        for tensor in reader.tensors:  # a file's own duplicates are refused by its reader
            if tensor.name in self.tensors:
                first = self.tensors[tensor.name].file
                raise InputError(
                    f"{name}: tensor {tensor.name!r} is in both {first} and {relative}"
                )
        self.readers[relative] = reader
        self.tensors.update((tensor.name, tensor) for tensor in reader.tensors)

    def raw_chunks(self, name: str, chunk_bytes: int) -> Iterator[bytes]:
        """The stored bytes of tensor ``name``, ``chunk_bytes`` at a time."""
        info = self.tensors[name]
        reader = self.readers[info.file]
        for start in range(0, info.nbytes, chunk_bytes):
            yield reader.source.read(info.offset + start, min(chunk_bytes, info.nbytes - start))


def open_model(
    path: Path, stack: ExitStack, limits: Limits | None = None, name: str | None = None
) -> ModelTensors:
    """Open every tensor file of ``path`` (a directory or one file); ``stack`` closes them.

    ``name`` is what errors call the model when ``path`` means nothing to the user (a fetched
    model laid out in a temporary directory): ``NAME: FILE: ...`` instead of ``PATH/FILE: ...``.

    Raises:
        InputError: ``path`` is missing or unreadable, a tensor file is malformed or
            truncated, two files hold a tensor of the same name, or nothing holds tensors.
    """
    limits = limits or Limits()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"{name or path}: no such file or directory")
    model = ModelTensors(path)
    readers: dict[str, TensorFile] = {}
    unread: list[tuple[str, str]] = []
    for file in files:
        relative = file.name if file == path else file.relative_to(path).as_posix()
        where = f"{name}: {relative}" if name else str(file)
        reader = _open_tensor_file(file, relative, where, stack, limits)
        if isinstance(reader, str):
            model.other_files[relative] = reader
        elif isinstance(reader, _UnreadTorch):
            model.other_files[relative] = reader.digest
            unread.append((where, reader.reason))
        else:
            readers[relative] = reader
    if any(not isinstance(reader, TorchZipFile) for reader in readers.values()):
        for relative, reader in list(readers.items()):
            if isinstance(reader, TorchZipFile):
                model.other_files[relative] = _sha256(reader.source.descriptor)
                del readers[relative]
    elif unread:
        where, reason = unread[0]
        raise InputError(f"{where}: {reason}")
    for relative, reader in readers.items():
        model.add_reader(relative, reader, name or str(path))
    if not model.tensors:
        raise InputError(
            f"{name or path}: no safetensors, GGUF or PyTorch checkpoint tensors found"
        )
    return model


@dataclass(frozen=True)
class _UnreadTorch:
    """A PyTorch checkpoint the reader refuses: an error only where it would be compared.

    Attributes:
        digest: The file's sha256 (it is kept by digest beside safetensors or GGUF files).
        reason: Why it cannot be read.
    """

    digest: str
    reason: str


def _open_tensor_file(
    file: Path, relative: str, where: str, stack: ExitStack, limits: Limits
) -> TensorFile | _UnreadTorch | str:
    """A reader for a tensor file (kept open until ``stack`` closes), or another file's sha256.

    The file is mapped only while its format is detected and its header parsed; errors name
    it as ``where``.
    """
    try:
        descriptor = os.open(file, os.O_RDONLY)
    except OSError as exc:
        raise InputError(f"{where}: {exc.strerror or exc}") from exc
    keep = False
    try:
        if os.fstat(descriptor).st_size == 0:
            return hashlib.sha256(b"").hexdigest()
        mapped = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
        problem = None
        try:
            reader = _reader(mapped, file.name, FileBytes(descriptor, relative), limits)
        except FormatError as exc:
            problem = f"{where}: not a readable tensor file: {exc}"
        finally:  # the failed parse's traceback is gone here: nothing holds the map
            close_mapping(mapped)
        if problem is not None:
            raise InputError(problem)
        if reader is None or isinstance(reader, str):
            digest = _sha256(descriptor)
            return digest if reader is None else _UnreadTorch(digest, reader)
        keep = True
        stack.callback(os.close, descriptor)
        return reader
    except OSError as exc:
        raise InputError(f"{where}: {exc.strerror or exc}") from exc
    finally:
        if not keep:
            os.close(descriptor)


def _reader(
    data: mmap.mmap, name: str, source: FileBytes, limits: Limits
) -> TensorFile | str | None:
    """The file's reader, why a PyTorch checkpoint is not read, or None (no tensors).

    Raises:
        FormatError: The file is a safetensors or GGUF file its reader refuses.
    """
    kind = detect_format(data, name)
    if kind is FileFormat.SAFETENSORS:
        return SafetensorsFile(data, source, limits)
    if kind is FileFormat.GGUF:
        return GGUFTensorFile(data, source, limits)
    if kind is FileFormat.ZIP:
        try:
            return read_torch_zip(data, source, limits)
        except FormatError as exc:
            return f"not a readable tensor file: {exc}"
    if is_legacy_torch(data, kind, limits):
        return (
            "a legacy (torch < 1.6, not zip) PyTorch checkpoint, which the analysis does "
            "not read; re-save it with a current torch.save"
        )
    return None


def _sha256(descriptor: int) -> str:
    with os.fdopen(os.dup(descriptor), "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
