"""Real models from PyPI pass the scan with nothing above info, through the real CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import weightgate
from tests.cli_process import run
from tests.models import minilm_dir, smollm2_gguf


def _scan_json(path: Path) -> tuple[int, dict[str, object]]:
    result = run("scan", path, "--format", "json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def _above_info(report: dict[str, object]) -> list[object]:
    files = report["files"]
    assert isinstance(files, list)
    return [f for file in files for f in file["findings"] if f["severity"] != "info"]


def test_minilm_safetensors_directory_passes() -> None:
    code, report = _scan_json(minilm_dir())
    assert code == 0, report
    assert _above_info(report) == []
    formats = {f["path"]: f["format"] for f in report["files"]}  # type: ignore[union-attr,index]
    assert formats["model.safetensors"] == "safetensors"
    assert formats["tokenizer.json"] == "json"


def test_smollm2_gguf_passes() -> None:
    path = smollm2_gguf()
    code, report = _scan_json(path)
    assert code == 0, report
    assert _above_info(report) == []
    (file,) = report["files"]  # type: ignore[misc]
    assert file["format"] == "gguf"
    assert file["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256_of_every_minilm_file_matches_hashlib() -> None:
    report = weightgate.scan_path(minilm_dir())
    assert len(report.files) >= 10
    for result in report.files:
        expected = hashlib.sha256((minilm_dir() / result.path).read_bytes()).hexdigest()
        assert result.sha256 == expected, result.path
