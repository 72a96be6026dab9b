"""Reads and validates the safetensors header without touching tensor data.

Modules:

- ``header``: :func:`read_safetensors_header`: the length prefix, the JSON, the checks.
- ``header_json``: the header's JSON, parsed as strictly as serde_json and within limits.
- ``checks``: the checks the Rust loader makes on a parsed header, and the dtype table.
- ``types``: faults, errors and the parsed header.
"""

from weightgate.formats.safetensors.checks import DTYPE_BITS, TENSOR_FIELDS
from weightgate.formats.safetensors.header import read_safetensors_header
from weightgate.formats.safetensors.types import (
    HEADER_LENGTH_BYTES,
    METADATA_KEY,
    Fault,
    HeaderProblem,
    SafetensorsError,
    SafetensorsHeader,
    SafetensorsLimitExceeded,
    SafetensorsTensor,
)

__all__ = [
    "DTYPE_BITS",
    "HEADER_LENGTH_BYTES",
    "METADATA_KEY",
    "TENSOR_FIELDS",
    "Fault",
    "HeaderProblem",
    "SafetensorsError",
    "SafetensorsHeader",
    "SafetensorsLimitExceeded",
    "SafetensorsTensor",
    "read_safetensors_header",
]
