"""ONNX scanner: external-data paths, custom operator domains, malformed protobuf."""

from __future__ import annotations

import time

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tests.builders import onnx_models
from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.onnx import OnnxModel, read_onnx_model
from weightgate.formats.protobuf import ProtoReader, read_varint
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding, Severity
from weightgate.scan.onnx import location_escape
from weightgate.scan.settings import Limits, ScanSettings


def scan(data: bytes, name: str = "model.onnx", limits: Limits | None = None) -> list[Finding]:
    findings: list[Finding] = []
    ctx = ScanContext(ScanSettings(limits=limits or Limits(), jobs=1), name, findings)
    ctx.scan(data, name)
    return findings


def rules(findings: list[Finding]) -> list[tuple[str, Severity]]:
    return [(f.rule, f.severity) for f in findings]


def read(data: bytes) -> OnnxModel:
    return read_onnx_model(
        memoryview(data), max_fields=10**7, max_string_bytes=1 << 20, max_entries=10**5
    )


def test_benign_model_has_no_findings() -> None:
    assert scan(onnx_models.benign_model()) == []


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("../../etc/passwd", "'..'"),
        ("/etc/passwd", "absolute"),
        ("weights/../../../secret", "'..'"),
        ("C:/Windows/win.ini", "drive letter"),
        ("..\\..\\boot.ini", "backslash"),
        ("ok\x00/../x", "NUL"),
    ],
)
def test_external_data_escaping_the_model_directory_is_high(location: str, reason: str) -> None:
    data = onnx_models.external_data_model([location])
    findings = scan(data)
    assert rules(findings) == [("onnx.external-data-escape", Severity.HIGH)]
    finding = findings[0]
    assert finding.evidence == location
    assert reason in finding.message
    assert "W0" in finding.message
    # The offset is the initializer's tag: GraphProto field 5, length-delimited.
    assert finding.offset is not None
    assert data[finding.offset] == (5 << 3 | 2)


def test_external_data_inside_the_model_directory_is_listed() -> None:
    data = onnx_models.external_data_model(["weights.bin", "weights.bin", "sub/more.bin"])
    findings = scan(data)
    assert rules(findings) == [("onnx.external-data", Severity.INFO)] * 2
    assert [f.evidence for f in findings] == ["weights.bin", "sub/more.bin"]
    assert "2 tensor(s)" in findings[0].message
    assert "W0, W1" in findings[0].message


def test_external_entries_without_the_external_flag_are_still_checked() -> None:
    findings = scan(onnx_models.external_data_model(["/etc/shadow"], mark_external=False))
    assert rules(findings) == [("onnx.external-data-escape", Severity.HIGH)]
    assert "not marked EXTERNAL" in findings[0].message


def test_constant_and_sparse_tensors_with_external_data_are_checked() -> None:
    constant = scan(onnx_models.constant_external_model("../x"))
    sparse = scan(onnx_models.sparse_external_model("/abs"))
    assert rules(constant) == [("onnx.external-data-escape", Severity.HIGH)]
    assert rules(sparse) == [("onnx.external-data-escape", Severity.HIGH)]
    assert "sv" in sparse[0].message


def test_location_escape_accepts_plain_relative_paths() -> None:
    for location in ("model.onnx.data", "data/w.bin", "./w.bin", "a..b", ""):
        assert location_escape(location) is None, location


def test_custom_domain_is_medium_with_the_op_list() -> None:
    data = onnx_models.custom_domain_model("evil.ops", ("Evil", "Worse", "Evil"))
    findings = scan(data)
    assert rules(findings) == [("onnx.custom-op-domain", Severity.MEDIUM)]
    finding = findings[0]
    assert finding.evidence == "evil.ops"
    assert "3 node(s)" in finding.message
    assert "Evil (x2), Worse (x1)" in finding.message
    # Offset of the first custom node: GraphProto.node tag (field 1, length-delimited).
    model = onnx.load_model_from_string(data)
    assert model.graph.node[1].domain == "evil.ops"
    assert finding.offset is not None
    assert data[finding.offset] == (1 << 3 | 2)


def test_microsoft_contrib_ops_are_low() -> None:
    findings = scan(onnx_models.custom_domain_model("com.microsoft", ("FusedMatMul",)))
    assert rules(findings) == [("onnx.custom-op-domain", Severity.LOW)]
    assert "FusedMatMul" in findings[0].message


def test_standard_domains_are_not_reported() -> None:
    for domain in ("ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"):
        assert scan(onnx_models.custom_domain_model(domain, ("Relu",))) == []


def test_custom_op_in_nested_subgraphs_is_found() -> None:
    findings = scan(onnx_models.nested_custom_model())
    assert rules(findings) == [("onnx.custom-op-domain", Severity.MEDIUM)]
    assert "Hidden" in findings[0].message
    assert "loop_body" in findings[0].message


def test_calls_of_model_local_functions_are_not_custom_ops() -> None:
    assert scan(onnx_models.function_model()) == []


def test_custom_op_inside_a_local_function_is_found() -> None:
    findings = scan(onnx_models.function_model("secret.ops"))
    assert rules(findings) == [("onnx.custom-op-domain", Severity.MEDIUM)]
    assert findings[0].evidence == "secret.ops"
    assert "function local.fn:Double" in findings[0].message


def test_training_graphs_are_walked() -> None:
    findings = scan(onnx_models.training_info_model())
    assert [f.evidence for f in findings] == ["train.evil"]


def test_reader_sees_the_same_operators_as_onnx() -> None:
    data = onnx_models.nested_custom_model()
    expected: set[tuple[str, str]] = set()

    def collect(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            expected.add((node.domain, node.op_type))
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    collect(attribute.g)

    collect(onnx.load_model_from_string(data).graph)
    model = read(data)
    assert {(domain, op) for domain, op, _ in model.ops} == expected
    assert model.ir_version == onnx.load_model_from_string(data).ir_version
    assert model.producer == "weightgate-tests"


def test_truncated_model_named_onnx_is_malformed() -> None:
    data = onnx_models.benign_model()
    findings = scan(data[:-7])
    assert rules(findings) == [("format.malformed", Severity.MEDIUM)]
    assert findings[0].offset is not None


def test_protobuf_lookalike_not_named_onnx_falls_back_to_unknown() -> None:
    garbage = b"\x08\x07" + b"\xff" * 20
    assert rules(scan(garbage, "blob.bin")) == [("format.unrecognized", Severity.INFO)]
    findings = scan(garbage, "model.onnx")
    assert rules(findings) == [("format.malformed", Severity.MEDIUM)]
    assert findings[0].offset == 2


def test_message_without_a_graph_is_not_a_model() -> None:
    only_version = onnx_models.field_varint(1, 7)
    assert rules(scan(only_version, "x.bin")) == [("format.unrecognized", Severity.INFO)]
    findings = scan(only_version, "x.onnx")
    assert rules(findings) == [("format.malformed", Severity.MEDIUM)]
    assert "no graph" in findings[0].message


def test_wrong_wire_type_for_the_graph_is_malformed() -> None:
    data = onnx_models.field_varint(1, 7) + onnx_models.field_varint(7, 1)
    findings = scan(data)
    assert rules(findings) == [("format.malformed", Severity.MEDIUM)]
    assert findings[0].offset == 2
    assert "GraphProto" in findings[0].message


def test_deeply_nested_subgraphs_hit_the_nesting_limit() -> None:
    findings = scan(onnx_models.nested_graph_bytes(60), "deep.bin")
    assert rules(findings) == [("format.limit-exceeded", Severity.MEDIUM)]
    assert "nested more than 100" in findings[0].message
    # A legitimate depth is fine.
    assert scan(onnx_models.nested_graph_bytes(10)) == []


def test_field_budget_is_enforced() -> None:
    findings = scan(onnx_models.benign_model(), limits=Limits(max_protobuf_fields=10))
    assert rules(findings) == [("format.limit-exceeded", Severity.MEDIUM)]


def test_varint_reader_rejects_overlong_and_truncated_varints() -> None:
    with pytest.raises(FormatError, match="longer than ten"):
        read_varint(memoryview(b"\xff" * 11), 0, 11)
    with pytest.raises(FormatError, match="past the end"):
        read_varint(memoryview(b"\xff\xff"), 0, 2)
    assert read_varint(memoryview(b"\xac\x02"), 0, 2) == (300, 2)


def test_reader_rejects_groups_and_field_zero() -> None:
    reader = ProtoReader(memoryview(b"\x0b\x0c"), max_fields=10, max_string_bytes=10)
    with pytest.raises(FormatError, match="group"):
        list(reader.fields(0, 2))
    reader = ProtoReader(memoryview(b"\x00\x00"), max_fields=10, max_string_bytes=10)
    with pytest.raises(FormatError, match="field number 0"):
        list(reader.fields(0, 2))


def test_long_strings_are_limited() -> None:
    data = onnx_models.custom_domain_model("d" * 100)
    with pytest.raises(LimitExceeded):
        read_onnx_model(memoryview(data), max_fields=1000, max_string_bytes=50, max_entries=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_models_never_crash_the_scanner(data: st.DataObject) -> None:
    model = bytearray(onnx_models.nested_custom_model())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(model) - 1))
        model[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(model)))
    findings = scan(bytes(model[:cut]))
    assert all(f.rule != "scan.internal-error" for f in findings)


def test_large_graph_is_walked_quickly() -> None:
    nodes = [
        helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(20_000)
    ]
    weight = helper.make_tensor(
        "big", TensorProto.FLOAT, [1 << 20], vals=b"\0" * (4 << 20), raw=True
    )
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("t20000", TensorProto.FLOAT, [1])],
        [weight],
    )
    data = helper.make_model(graph).SerializeToString()
    start = time.perf_counter()
    assert scan(data) == []
    assert time.perf_counter() - start < 5.0
