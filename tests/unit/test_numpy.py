"""NumPy .npy: headers, sizes, and object arrays scanned as pickles."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from tests.builders import pickles as P
from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.numpy import read_npy_header


def npy(array: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, array, version=version, allow_pickle=True)
    return out.getvalue()


def with_header(header: str, data: bytes = b"", version: tuple[int, int] = (1, 0)) -> bytes:
    raw = header.encode("latin-1")
    size = struct.pack("<H" if version == (1, 0) else "<I", len(raw))
    return b"\x93NUMPY" + bytes(version) + size + raw + data


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_plain_arrays_pass(version: tuple[int, int]) -> None:
    for array in (
        np.arange(12, dtype="<i4").reshape(3, 4),
        np.zeros((2, 3), dtype=">f8", order="F"),
        np.array(["ab", "c"]),
        np.zeros(4, dtype=[("x", "<f4"), ("y", "<u2", (3,))]),
        np.zeros((0, 5), dtype="<f4"),
    ):
        assert P.findings(npy(array, version), "a.npy") == []


def test_header_fields() -> None:
    data = npy(np.zeros((2, 3), dtype="<f4"))
    header = read_npy_header(data, 1 << 20)
    assert header.version == (1, 0)
    assert (header.shape, header.fortran_order, header.descr) == ((2, 3), False, "<f4")
    assert header.data_offset == len(data) - 24 and header.data_bytes == 24


def test_truncated_and_trailing_data() -> None:
    data = npy(np.arange(10, dtype="<i8"))
    start = len(data) - 80
    assert P.summary(P.findings(data[:-8], "a.npy")) == [("numpy.truncated", "medium", start, None)]
    assert P.summary(P.findings(data + b"xyz", "a.npy")) == [
        ("numpy.trailing-data", "low", len(data), None)
    ]


def test_benign_object_array_passes_with_a_note() -> None:
    data = npy(np.array([1, "two", None, 3.5], dtype=object))
    start = read_npy_header(data, 1 << 20).data_offset
    assert P.summary(P.findings(data, "a.npy")) == [("numpy.object-array", "info", start, "|O")]


def test_malicious_object_array_is_caught_at_its_file_offset() -> None:
    data = npy(np.array([P.SystemCall()], dtype=object))
    found = [f for f in P.findings(data, "a.npy") if f.rule != "numpy.object-array"]
    assert P.summary(found) == [
        # STACK_GLOBAL right after 'posix' MEMOIZE 'system' MEMOIZE, in file offsets
        ("pickle.dangerous-global", "critical", data.index(b"\x06system") + 8, "posix.system")
    ]


def test_object_field_in_a_structured_dtype_is_a_pickle() -> None:
    array = np.zeros(1, dtype=[("w", "<f4"), ("o", "O")])
    array["o"][0] = P.SystemCall()
    found = P.findings(npy(array), "a.npy")
    assert [f.rule for f in found] == ["numpy.object-array", "pickle.dangerous-global"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_header("{'descr': '<f4', 'shape': (1,)}\n"), "header keys"),
        (with_header("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}\n"), "fortran_order"),
        (with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}\n"), "shape"),
        (with_header("{'descr': 'zz', 'fortran_order': False, 'shape': (1,)}\n"), "descr"),
        (with_header("[1, 2]\n"), "not a dict"),
        (with_header("__import__('os').system('x')\n"), "not a Python literal"),
        (with_header("{}", version=(9, 9)), "unsupported format version 9.9"),
        (b"\x93NUMPY\x01\x00\xff\xff{'descr'", "declares 65535 bytes"),
    ],
)
def test_malformed_headers(data: bytes, message: str) -> None:
    found = P.findings(data, "a.npy")
    assert [(f.rule, f.severity.label) for f in found] == [("numpy.malformed-header", "medium")]
    assert message in found[0].message


def test_python2_long_suffix_in_shape() -> None:
    header = "{'descr': '<i2', 'fortran_order': False, 'shape': (2L,), }\n"
    assert P.findings(with_header(header, b"\x00" * 4), "a.npy") == []


def test_header_length_is_bounded_before_parsing() -> None:
    data = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{"
    with pytest.raises(LimitExceeded):
        read_npy_header(data, 100 * 1024 * 1024)
    found = P.findings(data, "a.npy")
    assert [(f.rule, f.offset) for f in found] == [("format.limit-exceeded", 8)]


def test_too_short_for_a_header() -> None:
    with pytest.raises(FormatError):
        read_npy_header(b"\x93NUMPY\x01", 1000)
