"""GGUF's type tables and the records its reader returns.

The metadata value types (``gguf_type``) with their struct codes, the ggml tensor types
llama.cpp loads with their block sizes, and the parsed fields, tensor infos and
problems. Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from weightgate.formats.problems import Problem


class GGUFValueType(enum.IntEnum):
    """Metadata value types (``gguf_type``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


SCALAR_CODES = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "B",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
"""struct format code of each fixed-size value type (byte order added by the reader)."""

GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}  # fmt: skip
"""ggml tensor types llama.cpp loads: id -> (name, elements per block, bytes per block).
Ids 4, 5, 31-33 and 36-38 were removed from ggml; its loader refuses them."""


class Fault(enum.Enum):
    """A problem that leaves the rest of the file readable, one member per rule."""

    OBSOLETE_VERSION = "obsolete-version"
    DUPLICATE_KEY = "duplicate-key"
    INVALID_ALIGNMENT = "invalid-alignment"
    DUPLICATE_TENSOR = "duplicate-tensor"
    INVALID_TENSOR = "invalid-tensor"
    UNKNOWN_TENSOR_TYPE = "unknown-tensor-type"
    MISALIGNED_OFFSET = "misaligned-offset"
    OFFSET_GAP = "offset-gap"
    OFFSET_OVERLAP = "offset-overlap"
    OFFSET_OUT_OF_BOUNDS = "offset-out-of-bounds"


GGUFProblem = Problem[Fault]
"""A problem found in a file that could still be read (offsets are absolute)."""


@dataclass(frozen=True)
class GGUFArray:
    """An array value. ``items`` is kept only for short arrays (None otherwise)."""

    item_type: GGUFValueType
    count: int
    offset: int
    items: tuple[GGUFValue, ...] | None


GGUFValue = int | float | bool | str | GGUFArray


@dataclass(frozen=True)
class GGUFField:
    """One metadata key/value pair; ``offset`` is the key's, ``value_offset`` the value's."""

    key: str
    value_type: GGUFValueType
    value: GGUFValue
    offset: int
    value_offset: int


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor info; ``offset`` is relative to the data section, as in the file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    n_bytes: int | None
    info_offset: int
