"""safetensors tensors over a memory map, with the header from weightgate's strict reader.

Own reader, not the ``safetensors`` package: its numpy backend cannot return bf16 or fp8,
and the diff compares stored bit patterns, which needs the raw bytes; the header is parsed
by the scanner's strict, bounded reader, so a file the scan refused is refused here too.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

from weightgate.analysis.dtypes import ELEMENT_TYPES, Values
from weightgate.analysis.tensor_info import FileBytes, TensorInfo, plain_values
from weightgate.errors import FormatError
from weightgate.formats.limits import Limits
from weightgate.formats.safetensors import read_safetensors_header


class SafetensorsFile:
    """The tensors of one safetensors file."""

    def __init__(self, data: mmap.mmap, source: FileBytes, limits: Limits) -> None:
        self.source = source
        relative = source.name
        header = read_safetensors_header(data, limits)
        if header.problems:
            problem = header.problems[0]
            raise FormatError(f"{relative}: {problem.message}", problem.offset)
        self.tensors = []
        for tensor in header.tensors:
            if tensor.dtype not in ELEMENT_TYPES:
                raise FormatError(
                    f"{relative}: tensor {tensor.name!r} has dtype {tensor.dtype}, "
                    "which the analysis does not read"
                )
            self.tensors.append(
                TensorInfo(
                    tensor.name,
                    relative,
                    tensor.dtype,
                    tensor.shape,
                    header.data_offset + tensor.begin,
                    tensor.end - tensor.begin,
                )
            )

    def values(self, tensor: TensorInfo, chunk_elements: int) -> Iterator[Values]:
        """Decoded values, ``chunk_elements`` at a time."""
        return plain_values(self.source, tensor, chunk_elements)
