"""Keras config rules, for .keras config.json content and legacy .h5 model_config."""

from __future__ import annotations

import base64
import codecs
import json
import marshal
from pathlib import Path
from typing import Any

import h5py
import pytest

import weightgate
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding, Severity
from weightgate.scan.keras import MAX_CONFIG_DEPTH, scan_keras_config
from weightgate.scan.settings import ScanSettings


def payload_code() -> bytes:
    """Marshalled bytecode of a lambda calling os.system (compiled, never run)."""
    module = compile("lambda x: __import__('os').system('id')", "<payload>", "eval")
    return marshal.dumps(next(c for c in module.co_consts if hasattr(c, "co_code")))


KERAS2_CODE = codecs.encode(payload_code(), "base64").decode("ascii")  # as func_dump writes
KERAS3_CODE = base64.b64encode(payload_code()).decode("ascii")


def check(config: object) -> list[Finding]:
    findings: list[Finding] = []
    scan_keras_config(ScanContext(ScanSettings(jobs=1), "config.json", findings), config)
    return findings


def rules(findings: list[Finding]) -> list[tuple[str, Severity]]:
    return [(f.rule, f.severity) for f in findings]


def keras3_layer(
    class_name: str, config: dict[str, Any], module: str = "keras.layers"
) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def keras3_model(*layers: dict[str, Any]) -> dict[str, Any]:
    """A config.json as Keras 3 writes it: Functional model, dtype policies, compile config."""
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}
    dense = keras3_layer(
        "Dense",
        {
            "name": "dense",
            "units": 8,
            "dtype": policy,
            "kernel_initializer": {
                "module": "keras.initializers",
                "class_name": "GlorotUniform",
                "config": {"seed": None},
                "registered_name": None,
            },
            "activation": "relu",
        },
    )
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": "Functional",
        "config": {
            "name": "functional",
            "layers": [
                keras3_layer("InputLayer", {"batch_shape": [None, 4], "name": "input"}),
                dense,
                *layers,
            ],
        },
        "compile_config": {
            "optimizer": keras3_layer("Adam", {"learning_rate": 0.001}, "keras.optimizers"),
            "loss": {
                "module": "keras.losses",
                "class_name": "function",
                "config": "mean_squared_error",
                "registered_name": "mean_squared_error",
            },
        },
    }


def test_benign_keras3_config_has_no_findings() -> None:
    assert check(keras3_model()) == []


def test_keras_hub_models_are_allowed() -> None:
    backbone = keras3_layer("GemmaBackbone", {"name": "gemma"}, "keras_hub.src.models.gemma")
    backbone["registered_name"] = "keras_hub>GemmaBackbone"
    assert check(keras3_model(backbone)) == []


def test_non_keras_json_has_no_findings() -> None:
    hf_config = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 768}
    assert check(hf_config) == []
    assert check([1, "two", None, {"x": [3.0]}]) == []


def test_keras2_lambda_with_base64_bytecode_is_critical() -> None:
    layer = {
        "class_name": "Lambda",
        "config": {
            "name": "evil",
            "function": [KERAS2_CODE, None, None],
            "function_type": "lambda",
            "module": "__main__",
            "output_shape": None,
            "output_shape_type": "raw",
        },
    }
    findings = check({"class_name": "Sequential", "config": {"layers": [layer]}})
    assert rules(findings) == [("keras.lambda-layer", Severity.CRITICAL)]
    finding = findings[0]
    assert finding.evidence == "'evil' (Lambda)"
    assert "marshalled bytecode" in finding.message
    assert "system" in finding.message
    assert payload_code()[:8].hex() in finding.message


def test_keras2_lambda_with_a_bare_code_string_and_a_lambda_output_shape() -> None:
    layer = {
        "class_name": "Lambda",
        "name": "l",
        "config": {
            "function": KERAS2_CODE,
            "function_type": "lambda",
            "output_shape": [KERAS2_CODE, None, None],
            "output_shape_type": "lambda",
        },
    }
    findings = check(layer)
    assert rules(findings) == [("keras.lambda-layer", Severity.CRITICAL)]
    assert "output_shape marshalled bytecode" in findings[0].message


def test_keras3_lambda_is_one_critical_finding() -> None:
    function = {"class_name": "__lambda__", "config": {"code": KERAS3_CODE, "defaults": None}}
    findings = check(keras3_model(keras3_layer("Lambda", {"name": "lam", "function": function})))
    assert rules(findings) == [("keras.lambda-layer", Severity.CRITICAL)]
    assert "'lam' (Lambda)" in findings[0].message


def test_lambda_naming_a_keras_function_is_high() -> None:
    function = {"module": "keras.activations", "class_name": "function", "config": "relu"}
    findings = check(keras3_layer("Lambda", {"name": "act", "function": function}))
    assert rules(findings) == [("keras.lambda-layer", Severity.HIGH)]
    assert "keras.activations.relu" in findings[0].message


def test_cve_2025_9906_lambda_calling_load_model() -> None:
    function = {"module": "keras.models", "class_name": "function", "config": "load_model"}
    layer = keras3_layer("Lambda", {"name": "x", "function": function, "arguments": {}})
    findings = check(keras3_model(layer))
    assert rules(findings) == [
        ("keras.lambda-layer", Severity.HIGH),
        ("keras.unsafe-function", Severity.HIGH),
    ]


def test_lambda_naming_a_builtin_is_reported_with_its_module() -> None:
    function = {"module": "builtins", "class_name": "function", "config": "exec"}
    findings = check(keras3_layer("Lambda", {"name": "x", "function": function}))
    assert rules(findings) == [
        ("keras.lambda-layer", Severity.HIGH),
        ("keras.custom-module", Severity.HIGH),
    ]
    assert findings[1].evidence == "builtins.exec"


def test_keras2_lambda_naming_a_function_of_another_module() -> None:
    layer = {
        "class_name": "Lambda",
        "config": {
            "name": "sys",
            "function": "system",
            "function_type": "function",
            "module": "os",
        },
    }
    findings = check(layer)
    assert rules(findings) == [("keras.lambda-layer", Severity.HIGH)]
    assert "os.system" in findings[0].message


def test_serialized_lambda_outside_a_lambda_layer_is_critical() -> None:
    activation = {"class_name": "__lambda__", "config": {"value": [KERAS3_CODE, None, None]}}
    dense = keras3_layer("Dense", {"name": "d", "activation": activation})
    findings = check(keras3_model(dense))
    assert rules(findings) == [("keras.python-bytecode", Severity.CRITICAL)]
    assert "system" in findings[0].message


def test_cve_2025_1550_arbitrary_module_is_high() -> None:
    gadget = {"module": "os", "class_name": "function", "config": "system", "registered_name": None}
    findings = check(keras3_model(keras3_layer("Dense", {"name": "d", "activation": gadget})))
    assert rules(findings) == [("keras.custom-module", Severity.HIGH)]
    assert findings[0].evidence == "os.system"


def test_custom_layer_from_a_user_module_is_high() -> None:
    layer = keras3_layer("MyLayer", {"name": "mine"}, "my_project.layers")
    layer["registered_name"] = "MyProject>MyLayer"
    findings = check(keras3_model(layer))
    assert rules(findings) == [("keras.custom-module", Severity.HIGH)]  # reported once


def test_registered_custom_objects_are_high() -> None:
    keras3: dict[str, Any] = {
        "module": None,
        "class_name": "X",
        "config": {},
        "registered_name": "Pkg>X",
    }
    keras2 = {"class_name": "Custom>Attention", "config": {"name": "att"}}
    assert rules(check(keras3)) == [("keras.custom-object", Severity.HIGH)]
    findings = check(keras2)
    assert rules(findings) == [("keras.custom-object", Severity.HIGH)]
    assert findings[0].evidence == "Custom>Attention"


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("keras.config", "enable_unsafe_deserialization"),
        ("keras.src.backend.common.global_state", "set_global_attribute"),
        ("keras.utils", "get_file"),
        ("keras.models", "load_model"),
    ],
)
def test_keras_gadget_functions_are_high(module: str, name: str) -> None:
    gadget = {"module": module, "class_name": "function", "config": name, "registered_name": None}
    findings = check(keras3_model(keras3_layer("Dense", {"name": "d", "activation": gadget})))
    assert rules(findings) == [("keras.unsafe-function", Severity.HIGH)]
    assert findings[0].evidence == f"{module}.{name}"


@pytest.mark.parametrize("symbol", ["math.add", "__operators__.getitem", "tf.nn.relu", "reshape"])
def test_tf_op_lambda_with_tensorflow_symbols_passes(symbol: str) -> None:
    assert check({"class_name": "TFOpLambda", "config": {"name": "op", "function": symbol}}) == []


@pytest.mark.parametrize(
    "symbol",
    ["py_function", "numpy_function", "compat.v1.py_func", "io.write_file", "io.gfile.GFile",
     "raw_ops.PyFunc", "os.system; rm -rf /", "", 42],
)  # fmt: skip
def test_tf_op_lambda_with_unsafe_or_invalid_symbols_is_high(symbol: object) -> None:
    layer = {"class_name": "SlicingOpLambda", "config": {"name": "op", "function": symbol}}
    assert rules(check(layer)) == [("keras.tf-op-lambda", Severity.HIGH)]


def test_lambda_nested_in_an_inner_model_is_found() -> None:
    lam = {"class_name": "Lambda", "config": {"name": "deep", "function": KERAS2_CODE}}
    inner = {"class_name": "Functional", "config": {"name": "inner", "layers": [lam]}}
    wrapper = {"class_name": "TimeDistributed", "config": {"layer": inner}}
    findings = check({"class_name": "Sequential", "config": {"layers": [wrapper]}})
    assert [f.evidence for f in findings] == ["'deep' (Lambda)"]


def test_findings_come_out_in_document_order() -> None:
    first = {"class_name": "Custom>A", "config": {"name": "a"}}
    second = {"class_name": "Custom>B", "config": {"name": "b"}}
    assert [f.evidence for f in check([first, second])] == ["Custom>A", "Custom>B"]


def test_deep_nesting_and_cycles_end_cleanly() -> None:
    deep: dict[str, Any] = {"class_name": "Dense"}
    for _ in range(MAX_CONFIG_DEPTH + 5):
        deep = {"config": deep}
    findings = check(deep)
    assert rules(findings) == [("keras.config-unreadable", Severity.MEDIUM)]
    cyclic: dict[str, Any] = {"class_name": "Custom>Loop", "config": {}}
    cyclic["config"]["self"] = cyclic
    assert rules(check(cyclic)) == [("keras.custom-object", Severity.HIGH)]


def test_source_text_lambda_is_shown_not_decoded() -> None:
    layer = {"class_name": "Lambda", "config": {"function": "lambda x: eval('1')"}}
    findings = check(layer)
    assert rules(findings) == [("keras.lambda-layer", Severity.CRITICAL)]
    assert "Python source \"lambda x: eval('1')\"" in findings[0].message


def test_legacy_h5_with_a_lambda_layer_fails(tmp_path: Path) -> None:
    function = [KERAS2_CODE, None, None]
    layer = {"class_name": "Lambda", "config": {"name": "evil", "function": function}}
    config = json.dumps({"class_name": "Sequential", "config": {"layers": [layer]}})
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = config.encode()
        handle.attrs["training_config"] = json.dumps({"loss": {"class_name": "Custom>Loss"}})
        handle.attrs["keras_version"] = "2.15.0"
    findings = list(weightgate.scan_path(path).findings)
    assert rules(findings) == [
        ("keras.lambda-layer", Severity.CRITICAL),
        ("keras.custom-object", Severity.HIGH),
    ]
    assert "system" in findings[0].message
    data = path.read_bytes()
    # Offsets point at each attribute message: its version byte and the name after it.
    assert findings[0].offset is not None
    assert data[findings[0].offset + 8 : findings[0].offset + 20] == b"model_config"
