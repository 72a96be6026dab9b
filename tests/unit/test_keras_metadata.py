"""keras_metadata.pb: Keras layer configs inside a TensorFlow SavedModel directory."""

from __future__ import annotations

import base64
import json
import marshal
from pathlib import Path

import weightgate
from tests.builders.onnx_models import field_bytes, field_varint
from tests.unit.test_savedmodel import node, saved_model

# Bytecode of a lambda, as Keras 2 writes it for a Lambda layer; only ever marshalled here.
LAMBDA_CODE = base64.b64encode(marshal.dumps((lambda x: x * 2).__code__)).decode()


def saved_object(path: str, identifier: str, metadata: dict[str, object] | str) -> bytes:
    """SavedObject: node_id = 2, node_path = 3, identifier = 4, metadata = 5."""
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    return (
        field_varint(2, 1)
        + field_bytes(3, path)
        + field_bytes(4, identifier)
        + field_bytes(5, text)
    )


def keras_metadata(*objects: bytes) -> bytes:
    """SavedMetadata: nodes = 1."""
    return b"".join(field_bytes(1, o) for o in objects)


DENSE = {
    "name": "dense",
    "class_name": "Dense",
    "config": {"name": "dense", "units": 4, "activation": "relu"},
}
LAMBDA = {
    "name": "lambda",
    "class_name": "Lambda",
    "config": {
        "name": "lambda",
        "function": {"class_name": "__tuple__", "items": [LAMBDA_CODE, None, None]},
        "function_type": "lambda",
    },
}


def _model_dir(tmp_path: Path, metadata: bytes) -> Path:
    (tmp_path / "saved_model.pb").write_bytes(saved_model([node("x", "Placeholder")]))
    (tmp_path / "keras_metadata.pb").write_bytes(metadata)
    (tmp_path / "variables").mkdir()
    return tmp_path


def test_benign_layers_pass(tmp_path: Path) -> None:
    path = _model_dir(
        tmp_path, keras_metadata(saved_object("root.layer-0", "_tf_keras_layer", DENSE))
    )
    report = weightgate.scan_path(path)
    formats = {f.path: f.format for f in report.files}
    assert formats["keras_metadata.pb"] == "keras-metadata"
    assert list(report.findings) == []


def test_lambda_layer_in_keras_metadata_is_critical(tmp_path: Path) -> None:
    data = keras_metadata(
        saved_object("root.layer-0", "_tf_keras_layer", DENSE),
        saved_object("root.layer-1", "_tf_keras_layer", LAMBDA),
    )
    path = _model_dir(tmp_path, data)
    report = weightgate.scan_path(path)
    (finding,) = [f for f in report.findings if f.rule == "keras.lambda-layer"]
    assert finding.severity.label == "critical"
    assert finding.path == "keras_metadata.pb"
    assert finding.offset is not None and data[finding.offset : finding.offset + 1] == b"{"
    assert report.failed(weightgate.ScanSettings().fail_on)


def test_metadata_that_is_not_json_fails_closed(tmp_path: Path) -> None:
    path = _model_dir(
        tmp_path, keras_metadata(saved_object("root.layer-0", "_tf_keras_layer", "{not json"))
    )
    rules = {(f.rule, f.severity.label, f.evidence) for f in weightgate.scan_path(path).findings}
    assert ("keras.config-unreadable", "medium", "root.layer-0") in rules


def test_truncated_keras_metadata_is_malformed(tmp_path: Path) -> None:
    data = keras_metadata(saved_object("root.layer-0", "_tf_keras_layer", DENSE))
    path = _model_dir(tmp_path, data[:-7])
    rules = {f.rule for f in weightgate.scan_path(path).findings}
    assert "format.malformed" in rules
