"""GGUF tensors: the header from weightgate's strict reader, values from the ``gguf`` package.

Quantised tensors are dequantised by ``gguf.quants.dequantize`` (llama.cpp's own Python
package, the reference for its block formats), a whole number of rows at a time, so memory
stays at one chunk. Shapes are reported outermost first (GGUF stores the fastest dimension
first), matching the same model's safetensors shapes.
"""

from __future__ import annotations

import functools
import mmap
from collections.abc import Iterable, Iterator

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from weightgate.analysis.dtypes import ELEMENT_TYPES, Values
from weightgate.analysis.tensor_info import FileBytes, TensorInfo, plain_values
from weightgate.errors import FormatError
from weightgate.formats.gguf import GGUFArray, read_gguf, read_string_items
from weightgate.formats.limits import Limits

TOKENS_KEY = "tokenizer.ggml.tokens"


class GGUFTensorFile:
    """The tensors of one GGUF file."""

    def __init__(self, data: mmap.mmap, source: FileBytes, limits: Limits) -> None:
        self.source = source
        self.limits = limits
        relative = source.name
        parsed = read_gguf(data, limits)
        self.header = parsed
        if parsed.big_endian:
            raise FormatError(f"{relative}: big-endian GGUF is not supported by the analysis")
        if parsed.problems:
            problem = parsed.problems[0]
            raise FormatError(f"{relative}: {problem.message}", problem.offset)
        self.tensors = []
        for tensor in parsed.tensors:
            try:
                kind = GGMLQuantizationType(tensor.ggml_type)
            except ValueError:
                raise FormatError(
                    f"{relative}: tensor {tensor.name!r} has unknown GGML type {tensor.ggml_type}"
                ) from None
            if tensor.n_bytes is None:
                raise FormatError(f"{relative}: tensor {tensor.name!r} has no readable size")
            if kind.name not in ELEMENT_TYPES and not _dequantisable(kind):
                raise FormatError(
                    f"{relative}: tensor {tensor.name!r} has GGML type {kind.name}, which the "
                    "gguf package does not dequantise"
                )
            self.tensors.append(
                TensorInfo(
                    tensor.name,
                    relative,
                    kind.name,
                    tuple(reversed(tensor.shape)),
                    parsed.data_offset + tensor.offset,
                    tensor.n_bytes,
                )
            )

    def tokens(self, ids: Iterable[int]) -> dict[int, str] | None:
        """Tokens ``ids`` of the vocabulary in the metadata (``tokenizer.ggml.tokens``), or None.

        The header is read again (its size was bounded by the parse), walked only as far
        as the largest id.
        """
        field = self.header.field(TOKENS_KEY)
        if field is None or not isinstance(field.value, GGUFArray):
            return None
        header = self.source.read(0, self.header.data_offset)
        try:
            return read_string_items(header, field.value, self.header, self.limits, ids)
        except FormatError as exc:
            raise FormatError(f"{self.source.name}: {TOKENS_KEY}: {exc}", exc.offset) from exc

    def values(self, tensor: TensorInfo, chunk_elements: int) -> Iterator[Values]:
        """Dequantised values, whole rows at a time (at least one row per chunk)."""
        if tensor.dtype in ELEMENT_TYPES:  # F32, F16, BF16, I8...: stored as plain elements
            yield from plain_values(self.source, tensor, chunk_elements)
            return
        kind = GGMLQuantizationType[tensor.dtype]
        block_elements, block_bytes = GGML_QUANT_SIZES[kind]
        row_elements = tensor.shape[-1] if tensor.shape else 1
        row_bytes = row_elements // block_elements * block_bytes
        rows = tensor.nbytes // row_bytes if row_bytes else 0
        rows_per_chunk = max(1, chunk_elements // max(row_elements, 1))
        for first in range(0, rows, rows_per_chunk):
            last = min(rows, first + rows_per_chunk)
            raw = np.frombuffer(
                self.source.read(tensor.offset + first * row_bytes, (last - first) * row_bytes),
                dtype=np.uint8,
            ).reshape(last - first, row_bytes)
            yield dequantize(raw, kind).reshape(-1)  # float32


@functools.cache
def _dequantisable(kind: GGMLQuantizationType) -> bool:
    """Whether ``gguf`` dequantises this type (it has no numpy code for Q8_1, Q8_K...)."""
    _, block_bytes = GGML_QUANT_SIZES.get(kind, (0, 0))
    if not block_bytes:
        return False
    try:
        dequantize(np.zeros((1, block_bytes), dtype=np.uint8), kind)
    except NotImplementedError:
        return False
    return True
