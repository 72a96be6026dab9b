"""Format detection is by content; names only produce findings when they disagree."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest

import weightgate
from weightgate.formats.detect import FileFormat, detect_format


class _System:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("id",))


def _safetensors(header_len: int) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (header_len - len(header))
    return struct.pack("<Q", len(header)) + header + b"\0\0\0\0"


def _rules(path: Path) -> dict[str, str]:
    return {f.rule: f.severity.label for f in weightgate.scan_path(path).findings}


@pytest.mark.parametrize("name", ["model.safetensors", "model", "weights.gguf", "x.onnx"])
def test_a_pickle_is_scanned_as_a_pickle_whatever_its_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(_System(), protocol=4))
    report = weightgate.scan_path(path)
    assert report.files[0].format == "pickle"
    rules = _rules(path)
    assert rules["pickle.dangerous-global"] == "critical"
    if name != "model":
        assert rules["format.disguised"] == "high"


def test_a_benign_pickle_with_a_code_free_name_is_a_disguise(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=2))
    assert _rules(path) == {"format.disguised": "high"}


def test_harmless_mismatch_is_low(tmp_path: Path) -> None:
    path = tmp_path / "picture.pt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert _rules(path) == {"format.extension-mismatch": "low", "format.unrecognized": "info"}


@pytest.mark.parametrize("header_len", [128, 384, 640, 896, 1152, 1408, 65536 + 128])
def test_safetensors_headers_that_start_like_proto_are_safetensors(header_len: int) -> None:
    blob = _safetensors(header_len)
    assert blob[0] == 0x80 and blob[1] <= 5
    assert detect_format(blob, "m.safetensors") is FileFormat.SAFETENSORS


def test_a_proto_pickle_is_not_mistaken_for_safetensors() -> None:
    for protocol in range(2, 6):
        assert detect_format(pickle.dumps({"x": "a{b"}, protocol=protocol)) is FileFormat.PICKLE


def test_json_whose_ninth_byte_is_a_brace_is_json() -> None:
    assert detect_format(b'{"abcdef{": 1}') is FileFormat.JSON
    assert detect_format(b'{"a": 1, "b": {"c": 2}}') is FileFormat.JSON


@pytest.mark.parametrize("user_block", [0, 512, 1024, 2048, 8192])
def test_hdf5_is_found_after_a_user_block(user_block: int) -> None:
    blob = bytes(user_block) + b"\x89HDF\r\n\x1a\n" + bytes(200)
    assert detect_format(blob) is FileFormat.HDF5


def test_protocol_0_text_is_offered_to_the_pickle_scanner_then_read_as_text(
    tmp_path: Path,
) -> None:
    path = tmp_path / "LICENSE"
    path.write_text("MIT License\n\nCopyright (c) someone\n")
    assert detect_format(path.read_bytes()) is FileFormat.PICKLE
    assert list(weightgate.scan_path(path).findings) == []


def test_pickle_with_an_appended_zip_is_scanned_both_ways(tmp_path: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("payload.pkl", pickle.dumps(_System()))
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0]}, protocol=4) + archive.getvalue())
    findings = list(weightgate.scan_path(path).findings)
    rules = {f.rule for f in findings}
    assert "format.polyglot" in rules
    hidden = [f for f in findings if f.rule == "pickle.dangerous-global"]
    assert hidden and hidden[0].path == "model.pkl!payload.pkl"
    assert hidden[0].evidence == "posix.system"


def test_bytes_that_merely_contain_a_zip_signature_are_not_a_polyglot(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    blob = _safetensors(64)
    # the end-of-directory signature without a directory behind it
    path.write_bytes(blob + b"PK\x05\x06" + bytes(18))
    assert "format.polyglot" not in _rules(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    report = weightgate.scan_path(path)
    assert report.files[0].format == "empty"
    assert list(report.findings) == []
