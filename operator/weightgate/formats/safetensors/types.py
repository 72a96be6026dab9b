"""The safetensors reader's types: faults, errors, limits and the parsed header.

Shared by the JSON parser (:mod:`weightgate.formats.safetensors.header_json`), the checks
(:mod:`weightgate.formats.safetensors.checks`) and the reader that ties them together
(:mod:`weightgate.formats.safetensors.header`); the package re-exports all of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.problems import Problem

HEADER_LENGTH_BYTES = 8
METADATA_KEY = "__metadata__"


class Fault(enum.Enum):
    """What is wrong, one member per scanner rule."""

    HEADER_TOO_LARGE = "header-too-large"
    HEADER_OUT_OF_BOUNDS = "header-out-of-bounds"
    INVALID_HEADER = "invalid-header"
    DUPLICATE_KEY = "duplicate-key"
    UNKNOWN_FIELD = "unknown-field"
    UNKNOWN_DTYPE = "unknown-dtype"
    SIZE_MISMATCH = "size-mismatch"
    OFFSET_OUT_OF_BOUNDS = "offset-out-of-bounds"
    OFFSET_OVERLAP = "offset-overlap"
    OFFSET_GAP = "offset-gap"
    TRAILING_BYTES = "trailing-bytes"
    INVALID_METADATA = "invalid-metadata"
    METADATA_TOO_LARGE = "metadata-too-large"


class SafetensorsError(FormatError):
    """A problem that stops the header from being read at all."""

    def __init__(self, fault: Fault, message: str, offset: int | None = None) -> None:
        super().__init__(message, offset)
        self.fault = fault


class SafetensorsLimitExceeded(LimitExceeded):
    """The header is larger (or has more entries) than the configured limits."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        super().__init__(message, offset)
        self.fault = Fault.HEADER_TOO_LARGE


HeaderProblem = Problem[Fault]
"""A problem found in a header that could still be read (a header key or a data byte)."""


@dataclass(frozen=True)
class SafetensorsTensor:
    """One tensor entry; offsets are relative to the data buffer, as in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """What the header says, and every problem found in it.

    Attributes:
        header_length: The declared JSON length (bytes 0-7).
        data_offset: Absolute offset of the data buffer (8 + header_length).
        data_length: Bytes from the data buffer to the end of the file.
        tensors: Well-formed tensor entries, in header order.
        metadata: The ``__metadata__`` entries that are strings, or None when absent.
        metadata_offset: Absolute offset of the ``"__metadata__"`` key, when present.
        problems: Non-fatal problems, in the order found.
    """

    header_length: int
    data_offset: int
    data_length: int
    tensors: tuple[SafetensorsTensor, ...]
    metadata: dict[str, str] | None
    metadata_offset: int | None
    problems: tuple[HeaderProblem, ...]
