"""Stored element types as numbers: decode a chunk of raw bytes to float32 (or float64).

numpy has no bfloat16 or float8; ``ml_dtypes`` (the JAX project's numpy dtypes) supplies
them with the exact OCP/IEEE semantics (E4M3FN has no infinities, the FNUZ variants have
one NaN and no negative zero). Sub-byte (F4, F6) and complex types are refused: no weight
format the analysis reads stores them element by element.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

Values = npt.NDArray[np.floating[Any]]
"""Decoded values: float32, or float64 for types float32 cannot hold exactly (F64, 32/64-bit
integers), so that a change is never rounded away."""


@dataclass(frozen=True)
class ElementType:
    """How one stored dtype is laid out.

    Attributes:
        name: The format's name for it (safetensors' ``BF16``, ``F32``...).
        value: The numpy dtype of one element (little-endian).
        exponent_mask: Bits of the exponent in the element's bit pattern, 0 for integers.
    """

    name: str
    value: np.dtype[np.generic]
    exponent_mask: int

    @property
    def compute(self) -> np.dtype[np.floating[Any]]:
        """float32 when it holds every value exactly, else float64."""
        exact = (self.value.kind == "f" and self.itemsize <= 4) or self.itemsize <= 2
        return np.dtype(np.float32 if exact else np.float64)

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self.value.itemsize

    @property
    def bits(self) -> np.dtype[np.unsignedinteger]:
        """The unsigned integer type of one element's bit pattern (bitwise comparison)."""
        return np.dtype(f"<u{self.itemsize}")

    def decode(self, raw: memoryview | bytes) -> Values:
        """The values of whole elements in ``raw``, in the :attr:`compute` type."""
        return np.frombuffer(raw, dtype=self.value).astype(self.compute)


_LAYOUT: dict[str, tuple[npt.DTypeLike, int]] = {
    "F64": ("<f8", 0x7FF0_0000_0000_0000),
    "F32": ("<f4", 0x7F80_0000),
    "F16": ("<f2", 0x7C00),
    "BF16": (ml_dtypes.bfloat16, 0x7F80),
    "F8_E4M3": (ml_dtypes.float8_e4m3fn, 0x78),
    "F8_E5M2": (ml_dtypes.float8_e5m2, 0x7C),
    "F8_E4M3FNUZ": (ml_dtypes.float8_e4m3fnuz, 0x78),
    "F8_E5M2FNUZ": (ml_dtypes.float8_e5m2fnuz, 0x7C),
    "F8_E8M0": (ml_dtypes.float8_e8m0fnu, 0xFF),
    "BOOL": ("<u1", 0), "U8": ("<u1", 0), "I8": ("<i1", 0), "I16": ("<i2", 0),
    "U16": ("<u2", 0), "I32": ("<i4", 0), "U32": ("<u4", 0), "I64": ("<i8", 0),
    "U64": ("<u8", 0),
}  # fmt: skip

ELEMENT_TYPES = {
    name: ElementType(name, np.dtype(value), mask) for name, (value, mask) in _LAYOUT.items()
}
"""Every stored dtype the analysis reads, by safetensors name (GGUF's F32/F16/BF16 too)."""
