"""A model's tensors, opened for streaming: stored bytes and decoded values, chunk by chunk.

``open_model(path)`` opens every safetensors and GGUF file of a directory (or one file) and
lists their tensors by name; nothing is read until asked, and every read is a bounded chunk
(see :class:`~weightgate.analysis.tensor_info.FileBytes`), so memory follows the chunk size,
not the model. Files are recognised
by content (:func:`weightgate.formats.detect.detect_format`); other files (configs,
tokenizers) are kept by digest only.

The readers: :mod:`.safetensors_tensors` (own, over the scanner's strict header reader) and
:mod:`.gguf_tensors` (dequantised by the ``gguf`` package).
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

        Raises:
            InputError: The file is unreadable, a malformed or truncated tensor file, or
                holds a tensor name another file already holds; then nothing of it is added.
        """
        reader = _open_tensor_file(file, relative, stack, limits)
        if isinstance(reader, str):
            self.other_files[relative] = reader
            return
        for tensor in reader.tensors:  # a file's own duplicates are refused by its reader
            if tensor.name in self.tensors:
                first = self.tensors[tensor.name].file
                raise InputError(
                    f"{self.root}: tensor {tensor.name!r} is in both {first} and {relative}"
                )
        self.readers[relative] = reader
        self.tensors.update((tensor.name, tensor) for tensor in reader.tensors)

    def raw_chunks(self, name: str, chunk_bytes: int) -> Iterator[bytes]:
        """The stored bytes of tensor ``name``, ``chunk_bytes`` at a time."""
        info = self.tensors[name]
        reader = self.readers[info.file]
        for start in range(0, info.nbytes, chunk_bytes):
            yield reader.source.read(info.offset + start, min(chunk_bytes, info.nbytes - start))


def open_model(path: Path, stack: ExitStack, limits: Limits | None = None) -> ModelTensors:
    """Open every tensor file of ``path`` (a directory or one file); ``stack`` closes them.

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
        raise InputError(f"{path}: no such file or directory")
    model = ModelTensors(path)
    for file in files:
        relative = file.name if file == path else file.relative_to(path).as_posix()
        model.add_file(file, relative, stack, limits)
    if not model.tensors:
        raise InputError(f"{path}: no safetensors or GGUF tensors found")
    return model


def _open_tensor_file(
    file: Path, relative: str, stack: ExitStack, limits: Limits
) -> TensorFile | str:
    """A reader for a tensor file (kept open until ``stack`` closes), or another file's sha256.

    The file is mapped only while its format is detected and its header parsed.
    """
    try:
        descriptor = os.open(file, os.O_RDONLY)
    except OSError as exc:
        raise InputError(f"{file}: {exc.strerror or exc}") from exc
    keep = False
    try:
        if os.fstat(descriptor).st_size == 0:
            return hashlib.sha256(b"").hexdigest()
        mapped = mmap.mmap(descriptor, 0, access=mmap.ACCESS_READ)
        problem = None
        try:
            reader = _header_reader(mapped, file.name, FileBytes(descriptor, relative), limits)
        except FormatError as exc:
            problem = f"{file}: not a readable tensor file: {exc}"
        finally:  # the failed parse's traceback is gone here: nothing holds the map
            close_mapping(mapped)
        if problem is not None:
            raise InputError(problem)
        if reader is None:
            return _sha256(descriptor)
        keep = True
        stack.callback(os.close, descriptor)
        return reader
    except OSError as exc:
        raise InputError(f"{file}: {exc.strerror or exc}") from exc
    finally:
        if not keep:
            os.close(descriptor)


def _header_reader(
    data: mmap.mmap, name: str, source: FileBytes, limits: Limits
) -> TensorFile | None:
    """The reader of a safetensors or GGUF file (its header parsed), None for other content.

    Raises:
        FormatError: The tensor file's header is malformed.
    """
    kind = detect_format(data, name)
    if kind is FileFormat.SAFETENSORS:
        return SafetensorsFile(data, source, limits)
    if kind is FileFormat.GGUF:
        return GGUFTensorFile(data, source, limits)
    return None


def _sha256(descriptor: int) -> str:
    with os.fdopen(os.dup(descriptor), "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
