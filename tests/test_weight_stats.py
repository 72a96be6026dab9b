"""``weightgate scan``'s weight statistics through the real CLI: warnings that never fail the gate.

Clean real models get none; MiniLM copies with a NaN or one weight blown up get a LOW
finding naming the tensor (exit 0 at the default gate, 2 with ``--fail-on low``), in the
text, JSON and SARIF reports alike; ``--no-weight-stats`` skips the pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from safetensors.numpy import load_file, save_file
from sarif_pydantic import Sarif

from tests.builders.gguf_files import assemble, kv_string, tensor_info
from tests.builders.minilm import Arrays, minilm_variant
from tests.cli_process import run
from tests.models import minilm_dir, smollm2_gguf

POISONED = "encoder.layer.2.attention.self.key.weight"
BLOWN_UP = "encoder.layer.3.intermediate.dense.weight"


def _scan_json(path: Path, *options: str) -> tuple[int, dict[str, Any]]:
    result = run("scan", path, "--format", "json", *options)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def _weight_findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        finding
        for file in report["files"]
        for finding in file["findings"]
        if finding["rule"].startswith("weights.")
    ]


@pytest.mark.parametrize("path", [minilm_dir(), smollm2_gguf()], ids=["minilm", "smollm2"])
def test_real_models_get_no_weight_finding(path: Path) -> None:
    code, report = _scan_json(path)
    assert code == 0
    assert _weight_findings(report) == []
    assert report["passed"] is True


def _poison(tensors: Arrays) -> None:
    tensors[POISONED][3, 7] = np.nan
    tensors[POISONED][5, :2] = np.inf


def test_nan_is_a_warning_naming_the_tensor_and_its_count(tmp_path: Path) -> None:
    model = minilm_variant(tmp_path, "nan", _poison)
    code, report = _scan_json(model)
    assert code == 0  # a warning: below the default gate
    (finding,) = _weight_findings(report)
    assert finding["rule"] == "weights.non-finite"
    assert finding["severity"] == "low"
    assert finding["path"] == "model.safetensors"
    assert finding["evidence"] == POISONED
    assert "3 of 147456 values are NaN or infinite" in finding["message"]
    assert report["passed"] is True and report["summary"]["findings"]["low"] == 1

    text = run("scan", model)
    assert text.returncode == 0
    assert "weights.non-finite" in text.stdout and POISONED in text.stdout
    assert run("scan", model, "--fail-on", "low").returncode == 2


def test_one_weight_blown_up_is_a_family_outlier_in_json_and_sarif(tmp_path: Path) -> None:
    def blow_up(tensors: Arrays) -> None:
        tensors[BLOWN_UP][100, 200] = np.float32(1e4) * np.sqrt(np.mean(tensors[BLOWN_UP] ** 2))

    model = minilm_variant(tmp_path, "weight", blow_up)
    code, report = _scan_json(model)
    assert code == 0
    findings = _weight_findings(report)
    assert findings and {f["rule"] for f in findings} == {"weights.family-outlier"}
    assert {f["evidence"] for f in findings} == {BLOWN_UP}
    assert any("RMS" in f["message"] and "family's median" in f["message"] for f in findings)
    # The tensor's first byte: where safetensors says its data starts.
    with open(model / "model.safetensors", "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    offset = 8 + header_size + header[BLOWN_UP]["data_offsets"][0]
    assert {f["offset"] for f in findings} == {offset}

    out = tmp_path / "report.sarif"
    assert run("scan", model, "--format", "sarif", "--output", out).returncode == 0
    document = json.loads(out.read_text())
    Sarif.model_validate(document)
    results = [r for r in document["runs"][0]["results"] if r["ruleId"] == "weights.family-outlier"]
    assert results and all(r["level"] == "note" for r in results)  # LOW, as every LOW rule
    assert all(BLOWN_UP in r["message"]["text"] for r in results)
    location = results[0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "model.safetensors"
    assert location["region"]["byteOffset"] == offset


def test_no_weight_stats_skips_the_pass(tmp_path: Path) -> None:
    code, report = _scan_json(minilm_variant(tmp_path, "nan", _poison), "--no-weight-stats")
    assert code == 0
    assert _weight_findings(report) == []


def test_a_tensor_in_two_shards_is_reported_as_unreadable(tmp_path: Path) -> None:
    tensors = load_file(str(minilm_dir() / "model.safetensors"))
    name = "pooler.dense.weight"
    save_file({name: tensors[name]}, str(tmp_path / "a.safetensors"))
    save_file({name: -tensors[name]}, str(tmp_path / "b.safetensors"))
    code, report = _scan_json(tmp_path)
    assert code == 0
    (finding,) = _weight_findings(report)
    assert finding["rule"] == "weights.unreadable"
    assert finding["path"] == "b.safetensors"
    assert "is in both a.safetensors and b.safetensors" in finding["message"]


def test_a_malformed_tensor_file_is_not_reported_twice(tmp_path: Path) -> None:
    data = (minilm_dir() / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])  # truncated
    code, report = _scan_json(tmp_path)
    assert code == 2  # the safetensors scanner's own finding fails the gate
    assert _weight_findings(report) == []


def test_a_dtype_the_analysis_does_not_decode_is_reported_as_skipped(tmp_path: Path) -> None:
    # F4 (fp4, two to a byte) is valid safetensors; the statistics do not decode it.
    header = json.dumps({"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(2))
    code, report = _scan_json(path)
    assert code == 0
    (finding,) = _weight_findings(report)
    assert finding["rule"] == "weights.unreadable"
    assert "dtype F4, which the analysis does not read" in finding["message"]


def test_a_gguf_type_gguf_cannot_dequantise_is_reported_as_skipped(tmp_path: Path) -> None:
    # Q8_1 is a valid GGML type (32 elements in 40 bytes) the gguf package has no numpy
    # dequantiser for: the pass must say so, not crash on the first read.
    info = tensor_info("blk.0.ffn_down.weight", [32], GGMLQuantizationType.Q8_1, 0)
    data = assemble([kv_string("general.architecture", "llama")], [info], bytes(40))
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    code, report = _scan_json(path)
    assert code == 0
    (finding,) = _weight_findings(report)
    assert finding["rule"] == "weights.unreadable"
    assert "GGML type Q8_1, which the gguf package does not dequantise" in finding["message"]
