"""A model's tensors, opened for streaming: stored bytes and float64 values, chunk by chunk.

``open_model(path)`` maps every safetensors and GGUF file of a directory (or one file) and
lists their tensors by name; nothing is read until asked, and every read is a bounded chunk
of the memory map, so memory follows the chunk size, not the model. Files are recognised
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
from weightgate.analysis.tensor_info import CHUNK_ELEMENTS, TensorFile, TensorInfo
from weightgate.errors import FormatError, InputError
from weightgate.formats.detect import FileFormat, detect_format
from weightgate.formats.limits import Limits


@dataclass
class ModelTensors:
    """Every tensor of a model, by name, plus the digests of its other files."""

    root: Path
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    other_files: dict[str, str] = field(default_factory=dict)
    readers: dict[str, TensorFile] = field(default_factory=dict)

    def values(self, name: str, chunk_elements: int = CHUNK_ELEMENTS) -> Iterator[Values]:
        """The values of tensor ``name``, chunk by chunk, as float64."""
        info = self.tensors[name]
        return self.readers[info.file].values(info, chunk_elements)

    def raw_chunks(self, name: str, chunk_bytes: int) -> Iterator[memoryview]:
        """The stored bytes of tensor ``name``, ``chunk_bytes`` at a time."""
        info = self.tensors[name]
        reader = self.readers[info.file]
        for start in range(0, info.nbytes, chunk_bytes):
            yield reader.raw(info, start, min(start + chunk_bytes, info.nbytes))


def open_model(path: Path, stack: ExitStack, limits: Limits | None = None) -> ModelTensors:
    """Map every tensor file of ``path`` (a directory or one file); ``stack`` closes them.

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
        data = _map(file, stack)
        kind = detect_format(data, file.name) if data is not None else None
        try:
            reader: TensorFile | None = None
            if kind is FileFormat.SAFETENSORS and data is not None:
                reader = SafetensorsFile(data, relative, limits)
            elif kind is FileFormat.GGUF and data is not None:
                reader = GGUFTensorFile(data, relative, limits)
        except FormatError as exc:
            raise InputError(f"{file}: not a readable tensor file: {exc}") from exc
        if reader is None:
            model.other_files[relative] = hashlib.sha256(data or b"").hexdigest()
            continue
        model.readers[relative] = reader
        for tensor in reader.tensors:
            if tensor.name in model.tensors:
                first = model.tensors[tensor.name].file
                raise InputError(
                    f"{path}: tensor {tensor.name!r} is in both {first} and {relative}"
                )
            model.tensors[tensor.name] = tensor
    if not model.tensors:
        raise InputError(f"{path}: no safetensors or GGUF tensors found")
    return model


def _map(file: Path, stack: ExitStack) -> mmap.mmap | None:
    try:
        with open(file, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                return None
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise InputError(f"{file}: {exc.strerror or exc}") from exc
    stack.callback(data.close)
    return data
