"""Red-team regressions for Keras configs: shapes and encodings Keras loads that were missed."""

from __future__ import annotations

import base64
import json
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import h5py
import pytest

from tests.builders.zips import BENIGN_PICKLE, EVIL_PICKLE, rules, scan_bytes
from weightgate import Severity
from weightgate.formats.detect import FileFormat
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding
from weightgate.scan.settings import ScanSettings

# A Keras 3 Lambda whose function is a serialized lambda (bytes are a stand-in: never run).
LAMBDA = {
    "module": "keras.layers",
    "class_name": "Lambda",
    "config": {
        "name": "lam",
        "function": {
            "class_name": "__lambda__",
            "config": {"code": "YWJjZA==", "defaults": None, "closure": None},
        },
    },
    "registered_name": None,
}


PROTOCOL0_EVIL = b"cposix\nsystem\n(S'echo pwned'\ntR."
"""Hand-assembled protocol 0 pickle calling os.system (never loaded)."""


def sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "seq", "layers": list(layers)},
        "registered_name": None,
        "build_config": {"input_shape": [None, 4]},
    }


def layer(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {
        "module": "keras.layers",
        "class_name": class_name,
        "config": {"name": "wrapped", **config},
        "registered_name": None,
    }


def weights_h5() -> bytes:
    buffer = BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_group("layers")
    return buffer.getvalue()


def keras_archive(config: bytes) -> bytes:
    """A .keras file as Keras 3 writes it, with ``config`` as its config.json bytes."""
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        archive.writestr("config.json", config)
        archive.writestr("model.weights.h5", weights_h5())
    return buffer.getvalue()


def scan_json_bytes(data: bytes) -> list[Finding]:
    findings: list[Finding] = []
    ctx = ScanContext(ScanSettings(jobs=1), "model.keras!config.json", findings)
    ctx.scan_as(FileFormat.JSON, data)
    return findings


@pytest.mark.parametrize(
    "config",
    [
        pytest.param([sequential(LAMBDA)], id="top-level-list"),
        pytest.param({"model": sequential(LAMBDA)}, id="plain-dict-wrapper"),
    ],
)
def test_config_json_of_any_shape_is_checked(tmp_path: Path, config: object) -> None:
    # deserialize_keras_object maps over lists and over dicts without class_name/config,
    # so the model inside is built (and its Lambda run) before Keras notices the shape.
    findings = scan_bytes(tmp_path, keras_archive(json.dumps(config).encode()), "m.keras")
    assert rules(findings) == {("keras.lambda-layer", Severity.CRITICAL)}


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"])
def test_config_json_in_any_encoding_json_loads_accepts_is_checked(encoding: str) -> None:
    # Keras passes config.json's bytes to json.loads, which detects UTF-16 and UTF-32.
    data = json.dumps(sequential(LAMBDA)).encode(encoding)
    assert rules(scan_json_bytes(data)) == {("keras.lambda-layer", Severity.CRITICAL)}


def test_torch_module_wrapper_pickle_is_scanned(tmp_path: Path) -> None:
    # TorchModuleWrapper.from_config runs torch.load(weights_only=False) on the base64.
    module = base64.b64encode(EVIL_PICKLE).decode("ascii")
    config = sequential(layer("TorchModuleWrapper", {"module": module}))
    findings = scan_bytes(tmp_path, keras_archive(json.dumps(config).encode()), "m.keras")
    assert rules(findings) == {("pickle.dangerous-global", Severity.CRITICAL)}
    evil = next(f for f in findings if f.rule == "pickle.dangerous-global")
    assert evil.path.endswith("config.json!wrapped.module")


def test_torch_module_wrapper_base64_with_junk_is_decoded_as_keras_does(
    tmp_path: Path,
) -> None:
    # base64.b64decode without validate drops characters outside the alphabet.
    encoded = base64.b64encode(EVIL_PICKLE).decode("ascii")
    module = "!".join(encoded[i : i + 7] for i in range(0, len(encoded), 7))
    config = sequential(layer("TorchModuleWrapper", {"module": module}))
    findings = scan_bytes(tmp_path, keras_archive(json.dumps(config).encode()), "m.keras")
    assert rules(findings) == {("pickle.dangerous-global", Severity.CRITICAL)}


def test_torch_module_wrapper_legacy_bytes_form_is_scanned() -> None:
    # Keras stores bytes as {"value": raw.decode("utf-8")}: a protocol 0 pickle is text.
    value = {"class_name": "__bytes__", "config": {"value": PROTOCOL0_EVIL.decode("ascii")}}
    data = json.dumps(sequential(layer("TorchModuleWrapper", {"module": value}))).encode()
    assert rules(scan_json_bytes(data)) == {("pickle.dangerous-global", Severity.CRITICAL)}


def test_torch_module_wrapper_with_a_benign_pickle_passes() -> None:
    module = base64.b64encode(BENIGN_PICKLE).decode("ascii")
    data = json.dumps(sequential(layer("TorchModuleWrapper", {"module": module}))).encode()
    findings = scan_json_bytes(data)
    assert findings == []


@pytest.mark.parametrize(
    ("module", "detail"),
    [
        pytest.param("not base64 \u00e9", "could not be decoded", id="non-ascii"),
        pytest.param(base64.b64encode(b"\x00\x01garbage").decode(), "not a format", id="junk"),
        pytest.param(7, "could not be decoded", id="not-a-string"),
    ],
)
def test_torch_module_wrapper_that_cannot_be_checked_fails_closed(
    module: object, detail: str
) -> None:
    data = json.dumps(sequential(layer("TorchModuleWrapper", {"module": module}))).encode()
    findings = [f for f in scan_json_bytes(data) if f.rule == "keras.config-unreadable"]
    assert [(f.rule, f.severity) for f in findings] == [
        ("keras.config-unreadable", Severity.MEDIUM)
    ]
    assert detail in findings[0].message


def test_tfsm_layer_loading_a_path_is_high() -> None:
    config = sequential(layer("TFSMLayer", {"filepath": "/tmp/x", "call_endpoint": "serve"}))
    findings = scan_json_bytes(json.dumps(config).encode())
    assert [(f.rule, f.severity) for f in findings] == [("keras.unsafe-function", Severity.HIGH)]
    assert "/tmp/x" in findings[0].message


def test_objects_in_the_torch_module_slot_are_still_walked() -> None:
    data = json.dumps(sequential(layer("TorchModuleWrapper", {"module": LAMBDA}))).encode()
    assert rules(scan_json_bytes(data)) == {
        ("keras.lambda-layer", Severity.CRITICAL),
        ("keras.config-unreadable", Severity.MEDIUM),
    }


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
def test_wide_config_json_in_a_keras_archive_is_detected_and_checked(
    tmp_path: Path, encoding: str
) -> None:
    # Detection must route UTF-16/32 JSON to the JSON scanner, as json.loads accepts it.
    data = json.dumps(sequential(LAMBDA)).encode(encoding)
    findings = scan_bytes(tmp_path, keras_archive(data), "m.keras")
    assert ("keras.lambda-layer", Severity.CRITICAL) in rules(findings)
