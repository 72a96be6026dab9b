"""What every tensor reader provides: the tensor's description and bounded reads.

Tensor bytes are read with ``pread`` into fresh buffers, not through a memory map: pages of
a map stay in the process's resident set once touched, so mapping a model would make peak
memory grow with the model; reads keep it at a few chunks whatever the model's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from weightgate.analysis.dtypes import ELEMENT_TYPES, Values
from weightgate.errors import InputError

CHUNK_ELEMENTS = 1 << 20
"""Elements per chunk: 4 MiB of float32, a few MiB of stored bytes."""


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor.

    Attributes:
        name: Its name in the file (unique across the model's files).
        file: The file holding it, relative to the model.
        dtype: The stored type as the format names it (``BF16``, ``F32``, ``Q4_1``...).
        shape: Dimensions, outermost first (GGUF's are reversed to this order).
        offset: Absolute offset of its bytes in the file.
        nbytes: Stored size in bytes.
    """

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def size(self) -> int:
        """Number of elements."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count


class TensorFile(Protocol):
    """One file's tensors (a format's reader): their descriptions and decoded values.

    Stored bytes are format-independent: ``source.read(tensor.offset + start, length)``.
    """

    tensors: list[TensorInfo]
    source: FileBytes

    def values(self, tensor: TensorInfo, chunk_elements: int) -> Iterator[Values]:
        """The tensor's values in storage order, at most about ``chunk_elements`` at a time."""
        ...


class FileBytes:
    """Byte ranges of one open file, read with ``pread`` (thread-safe, no shared offset)."""

    def __init__(self, descriptor: int, name: str) -> None:
        self.descriptor = descriptor
        self.name = name

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``.

        Raises:
            InputError: The file is shorter than that (it changed after it was opened).
        """
        data = os.pread(self.descriptor, length, offset)
        while len(data) < length:
            more = os.pread(self.descriptor, length - len(data), offset + len(data))
            if not more:
                raise InputError(f"{self.name}: ends before byte {offset + length} (truncated?)")
            data += more
        return data


def plain_values(source: FileBytes, tensor: TensorInfo, chunk_elements: int) -> Iterator[Values]:
    """Values of a tensor stored element by element, ``chunk_elements`` at a time."""
    element = ELEMENT_TYPES[tensor.dtype]
    step = max(1, chunk_elements) * element.itemsize
    for start in range(0, tensor.nbytes, step):
        length = min(step, tensor.nbytes - start)
        yield element.decode(source.read(tensor.offset + start, length))
