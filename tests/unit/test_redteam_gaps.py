"""Red-team regressions for three gaps: PrintV2 into a file, vocabulary file paths in Keras
lookup layers, and Jinja in GGUF metadata other than the chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.builders import gguf_files as gb
from tests.builders.onnx_models import field_bytes
from tests.unit.test_gguf import BENIGN_TEMPLATE, SMOLLM2, header_value_offset
from tests.unit.test_gguf import scan as scan_gguf
from tests.unit.test_keras import check, keras3_layer, keras3_model
from tests.unit.test_keras import rules as keras_rules
from tests.unit.test_savedmodel import BENIGN, function, node, rules, saved_model, scan
from weightgate import scan_path
from weightgate.scan.findings import Severity
from weightgate.scan.settings import Limits, ScanSettings

# -- SavedModel: PrintV2 with output_stream "file://<path>" ------------------------------


def string_attr(key: str, value: str) -> bytes:
    """NodeDef.attr (5) map entry: key = 1, value = 2 -> AttrValue.s = 2."""
    return field_bytes(5, field_bytes(1, key) + field_bytes(2, field_bytes(2, value)))


def print_node(name: str, stream: str) -> bytes:
    return (
        node(name, "PrintV2", "x") + string_attr("end", "\n") + string_attr("output_stream", stream)
    )


def test_print_into_a_file_is_high_with_the_path() -> None:
    printer = print_node("p", "file:///root/.bashrc")
    data = saved_model([*BENIGN, printer])
    findings = scan(data)
    assert rules(findings) == [("savedmodel.file-op", Severity.HIGH)]
    assert findings[0].evidence == "/root/.bashrc"
    assert "p (graph)" in findings[0].message
    assert findings[0].offset == data.index(printer) - 2


def test_print_into_a_file_inside_a_function_is_found() -> None:
    data = saved_model(BENIGN, [function("__inference_f_1", print_node("p", "file:///tmp/x"))])
    findings = scan(data)
    assert rules(findings) == [("savedmodel.file-op", Severity.HIGH)]
    assert "p (function __inference_f_1)" in findings[0].message


@pytest.mark.parametrize("stream", ["stderr", "stdout", "log(info)", "log(error)"])
def test_print_to_a_stream_or_log_is_quiet(stream: str) -> None:
    assert scan(saved_model([*BENIGN, print_node("p", stream)])) == []


def test_print_without_output_stream_is_quiet() -> None:
    assert scan(saved_model([*BENIGN, node("p", "PrintV2", "x")])) == []


def test_prints_into_many_files_are_bounded() -> None:
    printers = [print_node(f"p{i}", f"file:///tmp/f{i}") for i in range(30)]
    findings = scan(saved_model([*BENIGN, *printers]))
    assert len(findings) == 11
    assert {f.severity for f in findings} == {Severity.HIGH}
    assert findings[-1].evidence == "<further paths>"
    assert "20 node(s)" in findings[-1].message


# -- Keras: lookup layers whose vocabulary is a file path ---------------------------------


def lookup(class_name: str, vocabulary: Any) -> dict[str, Any]:
    return keras3_layer(class_name, {"name": "lookup", "vocabulary": vocabulary})


@pytest.mark.parametrize("class_name", ["StringLookup", "IntegerLookup", "TextVectorization"])
@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../../secrets.txt", "vocab/../../x", "C:\\keys.txt", "gs://bucket/v"],
)
def test_vocabulary_file_outside_the_model_is_high(class_name: str, path: str) -> None:
    findings = check(keras3_model(lookup(class_name, path)))
    assert keras_rules(findings) == [("keras.unsafe-function", Severity.HIGH)]
    assert findings[0].evidence == path


def test_relative_vocabulary_file_is_low() -> None:
    findings = check(keras3_model(lookup("StringLookup", "vocab.txt")))
    assert keras_rules(findings) == [("keras.unsafe-function", Severity.LOW)]


@pytest.mark.parametrize("vocabulary", [["a", "b", "c"], [1, 2, 3], None])
def test_inline_vocabulary_is_quiet(vocabulary: object) -> None:
    assert check(keras3_model(lookup("StringLookup", vocabulary))) == []


def test_hashing_layer_has_no_vocabulary_file() -> None:
    assert check(keras3_model(keras3_layer("Hashing", {"name": "h", "salt": "/etc"}))) == []


# -- GGUF: templates in other metadata strings --------------------------------------------


def test_dunder_template_in_other_metadata_is_low(tmp_path: Path) -> None:
    template = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    data = gb.write_with_gguf(tmp_path / "w.gguf", strings={"general.description": template})
    offset = header_value_offset(data, "general.description")
    assert scan_gguf(tmp_path, data) == [("gguf.template-in-metadata", Severity.LOW, offset)]


def test_template_that_also_reads_like_code_keeps_the_code_finding(tmp_path: Path) -> None:
    template = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
    data = gb.write_with_gguf(tmp_path / "w.gguf", strings={"general.description": template})
    offset = header_value_offset(data, "general.description")
    assert scan_gguf(tmp_path, data) == [
        ("gguf.code-in-metadata", Severity.MEDIUM, offset),
        ("gguf.template-in-metadata", Severity.LOW, offset),
    ]


def test_benign_template_syntax_in_other_metadata_is_quiet(tmp_path: Path) -> None:
    strings = {"general.description": BENIGN_TEMPLATE, "general.name": "{% broken"}
    data = gb.write_with_gguf(tmp_path / "w.gguf", strings=strings)
    assert scan_gguf(tmp_path, data) == []


def test_oversized_template_in_other_metadata_is_skipped(tmp_path: Path) -> None:
    template = "{{ x.__class__ }}" + " " * 2000
    data = gb.write_with_gguf(tmp_path / "w.gguf", strings={"general.description": template})
    small = ScanSettings(limits=Limits(max_template_bytes=1000))
    assert scan_gguf(tmp_path, data, small) == []
    offset = header_value_offset(data, "general.description")
    assert scan_gguf(tmp_path, data) == [("gguf.template-in-metadata", Severity.LOW, offset)]


def test_smollm2_stays_clean() -> None:
    report = scan_path(SMOLLM2)
    assert [f for f in report.findings if f.severity > Severity.INFO] == []
