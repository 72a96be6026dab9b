"""TensorFlow SavedModel scanner: Python-calling and file ops in graphs and functions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import weightgate
from tests.builders.onnx_models import field_bytes, field_varint
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding, Severity
from weightgate.scan.settings import Limits, ScanSettings


def node(name: str, op: str, *inputs: str) -> bytes:
    """NodeDef: name = 1, op = 2, input = 3, plus an attr (5) to skip."""
    body = field_bytes(1, name) + field_bytes(2, op)
    body += b"".join(field_bytes(3, i) for i in inputs)
    return body + field_bytes(5, field_bytes(1, "T") + field_bytes(2, field_varint(6, 1)))


def function(name: str, *nodes: bytes) -> bytes:
    """FunctionDef: signature (OpDef, name = 1) = 1, node_def = 3."""
    return field_bytes(1, field_bytes(1, name)) + b"".join(field_bytes(3, n) for n in nodes)


def saved_model(nodes: list[bytes], functions: list[bytes] | None = None) -> bytes:
    """SavedModel(schema 1, meta_graphs = 2 -> graph_def = 2 -> node = 1, library = 2)."""
    graph = b"".join(field_bytes(1, n) for n in nodes)
    if functions:
        graph += field_bytes(2, b"".join(field_bytes(1, f) for f in functions))
    meta = field_bytes(1, field_bytes(1, "serve")) + field_bytes(2, graph)
    return field_varint(1, 1) + field_bytes(2, meta)


def scan(data: bytes, limits: Limits | None = None) -> list[Finding]:
    findings: list[Finding] = []
    ctx = ScanContext(ScanSettings(limits=limits or Limits(), jobs=1), "saved_model.pb", findings)
    ctx.scan(data, "saved_model.pb")
    return findings


def rules(findings: list[Finding]) -> list[tuple[str, Severity]]:
    return [(f.rule, f.severity) for f in findings]


BENIGN = [
    node("x", "Placeholder"),
    node("w", "VarHandleOp"),
    node("save/SaveV2", "SaveV2", "x"),
    node("restore", "RestoreV2"),
    node("mm", "MatMul", "x", "w"),
]


def test_benign_graph_has_no_findings() -> None:
    assert scan(saved_model(BENIGN, [function("f", node("a", "Relu"))])) == []


@pytest.mark.parametrize("op", ["PyFunc", "PyFuncStateless", "EagerPyFunc"])
def test_python_ops_in_the_graph_are_critical(op: str) -> None:
    data = saved_model([*BENIGN, node("bad", op, "x")])
    findings = scan(data)
    assert rules(findings) == [("savedmodel.python-op", Severity.CRITICAL)]
    assert findings[0].evidence == op
    assert "bad (graph)" in findings[0].message
    assert findings[0].offset == data.index(b"\n\x03bad") - 2


def test_python_op_inside_a_library_function_is_found() -> None:
    data = saved_model(BENIGN, [function("__inference_call_42", node("p", "EagerPyFunc"))])
    findings = scan(data)
    assert rules(findings) == [("savedmodel.python-op", Severity.CRITICAL)]
    assert "p (function __inference_call_42)" in findings[0].message


def test_file_ops_are_flagged_write_higher_than_read() -> None:
    findings = scan(
        saved_model([node("r", "ReadFile"), node("w", "WriteFile"), node("m", "MatchingFiles")])
    )
    assert rules(findings) == [
        ("savedmodel.file-op", Severity.MEDIUM),
        ("savedmodel.file-op", Severity.HIGH),
        ("savedmodel.file-op", Severity.MEDIUM),
    ]
    assert [f.evidence for f in findings] == ["ReadFile", "WriteFile", "MatchingFiles"]


def test_many_uses_of_one_op_are_one_finding() -> None:
    findings = scan(saved_model([node(f"p{i}", "PyFunc") for i in range(25)]))
    assert len(findings) == 1
    assert "25 node(s)" in findings[0].message
    assert "15 more" in findings[0].message


def test_corpus_samples(corpus_dir: Path) -> None:
    root = corpus_dir / "modelaudit/samples/tensorflow"
    bad = list(weightgate.scan_path(root / "malicious_pyfunc/saved_model.pb").findings)
    assert rules(bad) == [("savedmodel.python-op", Severity.CRITICAL)]
    assert bad[0].offset == 20
    assert list(weightgate.scan_path(root / "safe_savedmodel/saved_model.pb").findings) == []


def test_truncated_savedmodel_is_malformed() -> None:
    data = saved_model([node("bad", "PyFunc")])
    findings = scan(data[:-3])
    assert rules(findings) == [("format.malformed", Severity.MEDIUM)]
    assert "tf-savedmodel" in findings[0].message


def test_op_field_with_the_wrong_wire_type_is_malformed() -> None:
    bad_node = field_bytes(1, "n") + field_varint(2, 5)
    findings = scan(saved_model([bad_node]))
    assert rules(findings) == [("format.malformed", Severity.MEDIUM)]
    assert "NodeDef.op" in findings[0].message


def test_field_budget_is_enforced() -> None:
    findings = scan(saved_model(BENIGN), limits=Limits(max_protobuf_fields=5))
    assert rules(findings) == [("format.limit-exceeded", Severity.MEDIUM)]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_savedmodels_never_crash_the_scanner(data: st.DataObject) -> None:
    model = bytearray(saved_model(BENIGN, [function("f", node("p", "PyFunc"))]))
    for _ in range(data.draw(st.integers(1, 4))):
        model[data.draw(st.integers(0, len(model) - 1))] = data.draw(st.integers(0, 255))
    findings = scan(bytes(model[: data.draw(st.integers(1, len(model)))]))
    assert all(f.rule != "scan.internal-error" for f in findings)
