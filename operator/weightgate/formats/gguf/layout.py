"""GGUF tensor sizes and data layout, checked the way llama.cpp's loader checks them.

A tensor has a known ggml type whose rows hold whole blocks, and a size that fits 64-bit
counts; tensors lie back to back in file order, each padded to the alignment, inside the
file (``ggml/src/gguf.cpp``). What breaks these rules is reported as a problem through
a callback, so the rest of the header can still be read.
"""

from __future__ import annotations

from collections.abc import Callable

from weightgate.formats.gguf.types import GGML_TYPES, Fault, GGUFTensorInfo

_I64_MAX = 2**63 - 1

ReportProblem = Callable[[Fault, str, int, str | None], None]
"""Records a problem: fault, message, absolute offset, evidence."""


def tensor_bytes(
    name: str,
    shape: tuple[int, ...],
    ggml_type: int,
    *,
    n_dims_at: int,
    type_at: int,
    report: ReportProblem,
) -> int | None:
    """The tensor's size in bytes, or None (with a problem) when it has none."""
    elements = 1
    for dim in shape:
        elements *= dim
    known = GGML_TYPES.get(ggml_type)
    if any(dim > _I64_MAX for dim in shape) or elements > _I64_MAX:
        message = f"tensor {name!r} shape {list(shape)} overflows 64-bit element counts"
        report(Fault.INVALID_TENSOR, message, n_dims_at, name)
    elif known is None:
        message = f"tensor {name!r} has unknown ggml type {ggml_type}"
        report(Fault.UNKNOWN_TENSOR_TYPE, message, type_at, name)
    elif (shape[0] if shape else 1) % known[1]:
        type_name, block, _ = known
        message = f"tensor {name!r} rows of {shape[0]} {type_name} are not whole blocks of {block}"
        report(Fault.INVALID_TENSOR, message, n_dims_at, name)
    else:
        return elements // known[1] * known[2]
    return None


def check_layout(
    tensors: list[GGUFTensorInfo],
    data_offset: int,
    alignment: int,
    file_size: int,
    *,
    report: ReportProblem,
) -> int:
    """Check offsets like llama.cpp: back to back in file order; return the data end."""
    expected: int | None = 0
    data_end = data_offset
    names: set[str] = set()
    for tensor in tensors:
        at, name, offset = tensor.info_offset, tensor.name, tensor.offset
        if name in names:
            report(Fault.DUPLICATE_TENSOR, f"duplicate tensor {name!r}", at, name)
        names.add(name)
        if offset % alignment:
            message = f"tensor {name!r} offset {offset} is not a multiple of {alignment}"
            report(Fault.MISALIGNED_OFFSET, message, at, name)
        if expected is not None and offset > expected:
            message = f"data bytes {expected}..{offset} before {name!r} belong to no tensor"
            gap_at = min(data_offset + expected, file_size)
            report(Fault.OFFSET_GAP, message, gap_at, name)
        elif expected is not None and offset < expected:
            message = f"tensor {name!r} at {offset} overlaps the one before (ends {expected})"
            report(Fault.OFFSET_OVERLAP, message, at, name)
        start = data_offset + offset
        end = start + (tensor.n_bytes or 0)
        if end > file_size:
            message = f"tensor {name!r} spans {start}..{end}, past the end ({file_size})"
            report(Fault.OFFSET_OUT_OF_BOUNDS, message, at, name)
        # With an unknown size, later offsets cannot be predicted.
        has_size = tensor.n_bytes is not None
        expected = offset + align(tensor.n_bytes or 0, alignment) if has_size else None
        data_end = max(data_end, end)
    return data_end


def align(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment``."""
    return value + (-value % alignment)
