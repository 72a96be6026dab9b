"""Red-team regressions for ONNX external data: locations a runtime resolves unexpectedly."""

from __future__ import annotations

from tests.builders import onnx_models
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding, Severity
from weightgate.scan.onnx import ORT_MEMORY_ADDRESS_TAG, location_escape
from weightgate.scan.settings import ScanSettings


def scan(data: bytes) -> list[Finding]:
    findings: list[Finding] = []
    ScanContext(ScanSettings(jobs=1), "model.onnx", findings).scan(data, "model.onnx")
    return findings


def test_onnxruntime_memory_address_tag_is_high() -> None:
    # onnxruntime reads the "offset" entry as a pointer when location is this tag
    # (kTensorProtoMemoryAddressTag): the model reads the loading process's memory.
    findings = scan(onnx_models.external_data_model([ORT_MEMORY_ADDRESS_TAG]))
    assert [(f.rule, f.severity) for f in findings] == [
        ("onnx.external-data-escape", Severity.HIGH)
    ]
    assert findings[0].evidence == ORT_MEMORY_ADDRESS_TAG
    assert "memory" in findings[0].message


def test_locations_that_only_look_odd_stay_inside() -> None:
    # Loaders join the location as is: no URL decoding, no ~ expansion.
    for location in ("%2e%2e/%2e%2e/etc/passwd", "~/secret", "_ORT_MEM_ADDR_", "a/..b/c"):
        assert location_escape(location) is None, location
