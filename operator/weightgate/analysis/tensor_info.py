"""What every tensor reader provides: the tensor's description and bounded reads."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from weightgate.analysis.dtypes import Values

CHUNK_ELEMENTS = 1 << 20
"""Elements per chunk: 8 MiB of float64, a few MiB of stored bytes."""


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
    """One file's tensors (a format's reader)."""

    tensors: list[TensorInfo]

    def raw(self, tensor: TensorInfo, start: int, stop: int) -> memoryview:
        """Stored bytes ``start:stop`` of ``tensor`` (relative to its first byte)."""
        ...

    def values(self, tensor: TensorInfo, chunk_elements: int) -> Iterator[Values]:
        """The tensor's values in storage order, at most about ``chunk_elements`` at a time."""
        ...
