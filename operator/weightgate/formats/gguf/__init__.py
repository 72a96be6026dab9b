"""Reads GGUF (llama.cpp) headers: metadata key/values and tensor infos, within limits.

Modules:

- ``header``: :func:`read_gguf`: the header, its key/values and tensor infos;
  :func:`read_string_items`: chosen items of a long string array (tokens).
- ``layout``: tensor sizes and the data layout, checked as llama.cpp's loader checks them.
- ``types``: the type tables and the records the reader returns.
"""

from weightgate.formats.gguf.header import (
    ALIGNMENT_KEY,
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    MAX_DIMS,
    MAX_NAME_BYTES,
    SUPPORTED_VERSIONS,
    GGUFFile,
    read_gguf,
    read_string_items,
)
from weightgate.formats.gguf.types import (
    GGML_TYPES,
    Fault,
    GGUFArray,
    GGUFField,
    GGUFProblem,
    GGUFTensorInfo,
    GGUFValue,
    GGUFValueType,
)

__all__ = [
    "ALIGNMENT_KEY",
    "DEFAULT_ALIGNMENT",
    "GGML_TYPES",
    "GGUF_MAGIC",
    "MAX_DIMS",
    "MAX_NAME_BYTES",
    "SUPPORTED_VERSIONS",
    "Fault",
    "GGUFArray",
    "GGUFField",
    "GGUFFile",
    "GGUFProblem",
    "GGUFTensorInfo",
    "GGUFValue",
    "GGUFValueType",
    "read_gguf",
    "read_string_items",
]
