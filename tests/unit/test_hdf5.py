"""The bounded HDF5 root-attribute reader, against h5py-written and hand-built files."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weightgate
from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.detect import FileFormat
from weightgate.formats.hdf5 import Hdf5Bounds, RootAttributes, read_root_attributes
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding, Severity
from weightgate.scan.settings import Limits, ScanSettings

WANTED = frozenset({"model_config", "training_config", "keras_version", "backend"})
BOUNDS = Hdf5Bounds(max_header_bytes=1 << 20, max_string_bytes=1 << 20, max_messages=10_000)
CONFIG = json.dumps({"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense"}]}})


def read(data: bytes, bounds: Hdf5Bounds = BOUNDS) -> RootAttributes:
    return read_root_attributes(memoryview(data), bounds, WANTED)


def scan(data: bytes, limits: Limits | None = None) -> list[Finding]:
    findings: list[Finding] = []
    ctx = ScanContext(ScanSettings(limits=limits or Limits(), jobs=1), "model.h5", findings)
    ctx.scan(data, "model.h5")
    return findings


def rules(findings: list[Finding]) -> list[tuple[str, Severity]]:
    return [(f.rule, f.severity) for f in findings]


# ---------------------------------------------------------------- hand-built files


def pad8(raw: bytes) -> bytes:
    return raw + b"\0" * (-len(raw) % 8)


def fixed_string_type(size: int, padding: int = 0) -> bytes:
    return bytes([0x13, padding, 0, 0]) + struct.pack("<I", size)


VLEN_STRING_TYPE = (
    bytes([0x19, 0x01, 0x00, 0x00])
    + struct.pack("<I", 16)
    + bytes([0x10, 0, 0, 0])
    + struct.pack("<IHH", 1, 0, 8)
)
INT32_TYPE = bytes([0x10, 0x08, 0, 0]) + struct.pack("<IHH", 4, 0, 32)
SCALAR = bytes([1, 0, 0, 0, 0, 0, 0, 0])


def simple_space(*dims: int) -> bytes:
    return bytes([1, len(dims), 0, 0, 0, 0, 0, 0]) + b"".join(struct.pack("<Q", d) for d in dims)


def attribute(name: str, dtype: bytes, space: bytes, value: bytes) -> bytes:
    raw_name = name.encode() + b"\0"
    header = struct.pack("<BBHHH", 1, 0, len(raw_name), len(dtype), len(space))
    return header + pad8(raw_name) + pad8(dtype) + pad8(space) + value


def message(kind: int, body: bytes, flags: int = 0) -> bytes:
    body = pad8(body)
    return struct.pack("<HHB3x", kind, len(body), flags) + body


def continuation(address: int, length: int) -> bytes:
    return message(0x10, struct.pack("<QQ", address, length))


def vlen_value(length: int, heap: int, index: int) -> bytes:
    return struct.pack("<IQI", length, heap, index)


def global_heap(*objects: bytes, size: int = 4096) -> bytes:
    body = b""
    for index, data in enumerate(objects, start=1):
        body += struct.pack("<HHIQ", index, 1, 0, len(data)) + pad8(data)
    body += struct.pack("<HHIQ", 0, 0, 0, size - 16 - len(body) - 16)
    return (b"GCOL\x01\0\0\0" + struct.pack("<Q", size) + body).ljust(size, b"\0")


HEADER_AT = 128
HEAP_AT = 2048


def build(
    messages: list[bytes],
    *,
    superblock: int = 0,
    extra: dict[int, bytes] | None = None,
    header_at: int = HEADER_AT,
) -> bytes:
    """A file with the root object header at ``header_at`` holding ``messages``."""
    block = b"".join(messages)
    sb = (
        b"\x89HDF\r\n\x1a\n"
        + bytes([superblock, 0, 0, 0, 0, 8, 8, 0])
        + struct.pack("<HHI", 4, 16, 0)
    )
    if superblock == 1:
        sb += struct.pack("<HH", 32, 0)
    sb += struct.pack("<QQQQ", 0, 2**64 - 1, 8192, 2**64 - 1)
    sb += struct.pack("<QQII", 0, header_at, 0, 0) + b"\0" * 16
    header = struct.pack("<BBHII4x", 1, 0, len(messages), 1, len(block)) + block
    out = bytearray(sb.ljust(header_at, b"\0") + header)
    for address, raw in (extra or {}).items():
        out = out.ljust(address, b"\0")
        out[address : address + len(raw)] = raw
    return bytes(out.ljust(8192, b"\0"))


def vlen_config(length: int, heap: int, index: int) -> bytes:
    """A model_config attribute message holding a variable-length string reference."""
    value = vlen_value(length, heap, index)
    return message(0x0C, attribute("model_config", VLEN_STRING_TYPE, SCALAR, value))


def vlen_file(text: str, *, superblock: int = 0) -> bytes:
    raw = text.encode()
    config = vlen_config(len(raw), HEAP_AT, 1)
    return build([config], superblock=superblock, extra={HEAP_AT: global_heap(raw)})


@pytest.mark.parametrize("superblock", [0, 1])
def test_vlen_string_through_the_global_heap(superblock: int) -> None:
    root = read(vlen_file(CONFIG, superblock=superblock))
    assert root.superblock_version == superblock
    config = root.attributes["model_config"]
    assert config.values == (CONFIG,)
    assert config.offset == HEADER_AT + 16 + 8  # first message's data


@pytest.mark.parametrize(
    ("padding", "raw", "expected"),
    [(0, b"abc\0\0\0", "abc"), (1, b"abc\0zz", "abc"), (2, b"abc   ", "abc")],
)
def test_fixed_length_string_paddings(padding: int, raw: bytes, expected: str) -> None:
    attr = attribute("backend", fixed_string_type(len(raw), padding), SCALAR, raw)
    assert read(build([message(0x0C, attr)])).attributes["backend"].values == (expected,)


def test_attributes_in_a_continuation_block() -> None:
    first = attribute("keras_version", fixed_string_type(5), SCALAR, b"2.1.0")
    second = attribute("backend", fixed_string_type(10), SCALAR, b"tensorflow")
    block = message(0x0C, second)
    data = build([message(0x0C, first), continuation(4096, len(block))], extra={4096: block})
    root = read(data)
    assert root.attributes["keras_version"].values == ("2.1.0",)
    assert root.attributes["backend"].values == ("tensorflow",)
    assert root.attributes["backend"].offset == 4096 + 8


def test_unwanted_attributes_are_named_but_not_decoded() -> None:
    attr = attribute("layer_names", INT32_TYPE, SCALAR, b"\1\0\0\0")
    root = read(build([message(0x0C, attr)]))
    assert root.attributes["layer_names"].values is None
    assert root.attributes["layer_names"].problem is None


def test_non_string_model_config_is_reported_as_unreadable() -> None:
    attr = attribute("model_config", INT32_TYPE, SCALAR, b"\1\0\0\0")
    findings = scan(build([message(0x0C, attr)]))
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    assert "datatype class 0" in findings[0].message
    assert findings[0].offset == HEADER_AT + 24


def test_model_config_that_is_not_json_is_unreadable() -> None:
    findings = scan(vlen_file("{not json"))
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    assert "not JSON" in findings[0].message


def test_model_config_array_is_unreadable() -> None:
    attr = attribute("model_config", fixed_string_type(2), simple_space(2), b"{}{}")
    findings = scan(build([message(0x0C, attr)]))
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    assert "2 strings" in findings[0].message


def test_shared_attribute_messages_fail_closed() -> None:
    attr = attribute("model_config", fixed_string_type(2), SCALAR, b"{}")
    findings = scan(build([message(0x0C, attr, flags=0x02)]))
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    assert "shared message" in findings[0].message


def test_invalid_utf8_config_is_unreadable() -> None:
    attr = attribute("model_config", fixed_string_type(2), SCALAR, b"\xff\xfe")
    findings = scan(build([message(0x0C, attr)]))
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    assert "UTF-8" in findings[0].message


def test_continuation_loop_is_detected() -> None:
    loop = continuation(4096, 24)
    data = build([continuation(4096, 24)], extra={4096: loop})
    with pytest.raises(FormatError, match="loop") as error:
        read(data)
    assert error.value.offset == 4096
    assert rules(scan(data)) == [("format.malformed", Severity.MEDIUM)]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (build([], header_at=HEADER_AT)[:100], "past"),
        (build([continuation(10**9, 24)]), "past the end"),
        (build([continuation(4096, 10**9)]), "continuation block"),
        (build([struct.pack("<HHB3x", 0x0C, 4000, 0)]), "runs past its chunk"),
        (vlen_file(CONFIG)[: HEAP_AT + 8], "past"),
        (
            build([vlen_config(3, HEAP_AT, 7)], extra={HEAP_AT: global_heap(b"abc")}),
            "object 7 not found",
        ),
        (build([vlen_config(3, 4000, 1)]), "GCOL"),
    ],
)
def test_malformed_structures_raise_format_errors(data: bytes, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        read(data)
    assert rules(scan(data)) == [("format.malformed", Severity.MEDIUM)]


def test_huge_dataspace_and_strings_hit_limits() -> None:
    attr = attribute("model_config", fixed_string_type(2), simple_space(2**40, 2**20), b"{}")
    with pytest.raises(LimitExceeded):
        read(build([message(0x0C, attr)]))
    findings = scan(vlen_file(CONFIG), limits=Limits(max_string_bytes=10))
    assert rules(findings) == [("format.limit-exceeded", Severity.MEDIUM)]


def test_duplicate_model_config_fails_closed() -> None:
    first = message(0x0C, attribute("model_config", fixed_string_type(2), SCALAR, b"{}"))
    data = build([first, vlen_config(len(CONFIG), HEAP_AT, 1)],
                 extra={HEAP_AT: global_heap(CONFIG.encode())})  # fmt: skip
    findings = scan(data)
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    assert "appears twice" in findings[0].message


def test_many_elements_naming_one_large_heap_object_are_bounded() -> None:
    big = b"x" * 60_000
    elements = b"".join(vlen_value(len(big), HEAP_AT, 1) for _ in range(4000))
    attr = attribute("model_config", VLEN_STRING_TYPE, simple_space(4000), elements)
    data = build([message(0x0C, attr)], extra={HEAP_AT: global_heap(big, size=65536)})
    findings = scan(data, limits=Limits(max_string_bytes=1 << 20))
    assert rules(findings) == [("format.limit-exceeded", Severity.MEDIUM)]
    assert "add up to more than" in findings[0].message


def test_unsupported_superblock_version_fails_closed() -> None:
    data = bytearray(vlen_file(CONFIG))
    data[8] = 9
    findings = scan(bytes(data))
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    assert "superblock version 9" in findings[0].message


# ---------------------------------------------------------------- h5py-written files


def write(
    path: Path, attrs: dict[str, object], libver: str | tuple[str, str] = "earliest"
) -> bytes:
    with h5py.File(path, "w", libver=libver) as handle:
        for key, value in attrs.items():
            handle.attrs[key] = value
        handle.create_dataset("model_weights/dense/kernel", data=np.zeros((2, 2), "f4"))
    return path.read_bytes()


@pytest.mark.parametrize("libver", ["earliest", "latest", ("v108", "v108"), ("v110", "v110")])
@pytest.mark.parametrize(
    "value", [CONFIG, CONFIG.encode(), np.bytes_(CONFIG.encode())], ids=["str", "bytes", "fixed"]
)
def test_reader_agrees_with_h5py(tmp_path: Path, libver: object, value: object) -> None:
    data = write(
        tmp_path / "m.h5",
        {"model_config": value, "keras_version": "2.15.0", "backend": "tensorflow"},
        libver,  # type: ignore[arg-type]
    )
    root = read(data)
    with h5py.File(tmp_path / "m.h5") as handle:
        for name in ("model_config", "keras_version", "backend"):
            expected = handle.attrs[name]
            expected = expected.decode() if isinstance(expected, bytes) else str(expected)
            assert root.attributes[name].values == (expected,)
    assert root.unreadable == []
    assert scan(data) == []


def test_creation_order_and_small_offsets(tmp_path: Path) -> None:
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_sizes(4, 4)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    path = tmp_path / "small.h5"
    fid = h5py.h5f.create(bytes(path), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)
    with h5py.File(fid) as handle:
        handle.attrs["backend"] = "tensorflow"
    fcpl2 = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl2.set_attr_creation_order(h5py.h5p.CRT_ORDER_TRACKED)
    path2 = tmp_path / "ordered.h5"
    fid = h5py.h5f.create(bytes(path2), h5py.h5f.ACC_TRUNC, fcpl=fcpl2, fapl=fapl)
    with h5py.File(fid) as handle:
        handle.attrs["model_config"] = CONFIG
        handle.attrs["backend"] = "jax"
    assert read(path.read_bytes()).attributes["backend"].values == ("tensorflow",)
    ordered = read(path2.read_bytes())
    assert ordered.attributes["model_config"].values == (CONFIG,)
    assert ordered.attributes["backend"].values == ("jax",)


@pytest.mark.parametrize("libver", ["earliest", "latest"])
@pytest.mark.parametrize("userblock", [512, 4096])
def test_superblock_after_a_user_block(tmp_path: Path, libver: str, userblock: int) -> None:
    # libhdf5 finds the superblock at 512 x 2^n, so a user block must not hide the config.
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_userblock(userblock)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    low = h5py.h5f.LIBVER_LATEST if libver == "latest" else h5py.h5f.LIBVER_EARLIEST
    fapl.set_libver_bounds(low, h5py.h5f.LIBVER_LATEST)
    path = tmp_path / "userblock.h5"
    fid = h5py.h5f.create(bytes(path), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)
    with h5py.File(fid) as handle:
        handle.attrs["model_config"] = CONFIG
    data = path.read_bytes()
    assert data[userblock : userblock + 4] == b"\x89HDF"
    root = read(data)
    assert root.attributes["model_config"].values == (CONFIG,)
    assert root.attributes["model_config"].offset > userblock
    findings: list[Finding] = []
    ScanContext(ScanSettings(jobs=1), "m.h5", findings).scan_as(FileFormat.HDF5, data)
    assert findings == []


def test_no_signature_anywhere_is_malformed() -> None:
    with pytest.raises(FormatError, match="no HDF5 signature"):
        read(b"\0" * 5000)


def test_many_attributes_in_a_version_1_header(tmp_path: Path) -> None:
    attrs: dict[str, object] = {f"a{i}": i for i in range(40)}
    attrs["model_config"] = CONFIG
    root = read(write(tmp_path / "many.h5", attrs))
    assert root.attributes["model_config"].values == (CONFIG,)
    assert len(root.attributes) == 41


def test_dense_attribute_storage_fails_closed(tmp_path: Path) -> None:
    attrs: dict[str, object] = {f"a{i}": i for i in range(12)}
    attrs["model_config"] = CONFIG
    findings = scan(write(tmp_path / "dense.h5", attrs, "latest"))
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    assert "dense storage" in findings[0].message


def test_plain_hdf5_and_weights_only_files_pass_with_a_note(tmp_path: Path) -> None:
    plain = scan(write(tmp_path / "plain.h5", {"units": "meters"}))
    assert rules(plain) == [("hdf5.no-model-config", Severity.INFO)]
    assert "no model_config root attribute" in plain[0].message
    weights = scan(write(tmp_path / "w.h5", {"keras_version": "2.15.0", "backend": "tensorflow"}))
    assert rules(weights) == [("hdf5.no-model-config", Severity.INFO)]
    assert "Keras weights" in weights[0].message


def test_corpus_samples(corpus_dir: Path) -> None:
    root = corpus_dir / "modelaudit/samples/keras"
    bad = list(weightgate.scan_path(root / "malicious_lambda.h5").findings)
    assert rules(bad) == [("keras.lambda-layer", Severity.CRITICAL)]
    assert "eval" in bad[0].message
    assert bad[0].offset == 0x340  # the model_config attribute message
    assert list(weightgate.scan_path(root / "safe_model.h5").findings) == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files_never_crash_the_scanner(data: st.DataObject) -> None:
    backend = message(0x0C, attribute("backend", fixed_string_type(3), SCALAR, b"jax"))
    model = bytearray(
        build(
            [vlen_config(len(CONFIG), HEAP_AT, 1), continuation(4096, len(backend))],
            extra={HEAP_AT: global_heap(CONFIG.encode()), 4096: backend},
        )
    )
    # Mutate the structures the reader walks: superblock and header, heap, continuation.
    positions = [*range(200), *range(HEAP_AT, HEAP_AT + 64), *range(4096, 4096 + len(backend))]
    for _ in range(data.draw(st.integers(1, 6))):
        model[data.draw(st.sampled_from(positions))] = data.draw(st.integers(0, 255))
    findings = scan(bytes(model[: data.draw(st.integers(9, len(model)))]))
    assert all(f.rule != "scan.internal-error" for f in findings)


def _latest_libver_file() -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver="latest") as handle:
        handle.attrs["model_config"] = CONFIG
        handle.attrs["backend"] = "tensorflow"
    return buffer.getvalue()


LATEST = _latest_libver_file()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_version_2_headers_never_crash_the_scanner(data: st.DataObject) -> None:
    model = bytearray(LATEST)
    for _ in range(data.draw(st.integers(1, 6))):
        model[data.draw(st.integers(0, min(len(model), 1024) - 1))] = data.draw(st.integers(0, 255))
    findings = scan(bytes(model[: data.draw(st.integers(9, len(model)))]))
    assert all(f.rule != "scan.internal-error" for f in findings)
