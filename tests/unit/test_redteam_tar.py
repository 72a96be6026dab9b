"""Red-team regressions for tar: headers tarfile (and so torch.load) accepts without magic."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

import weightgate
from weightgate.formats.detect import FileFormat, detect_format, is_tar_header
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding, Severity
from weightgate.scan.settings import ScanSettings

EVIL_PROTOCOL0 = b"cposix\nsystem\n(S'echo pwned'\ntR."
"""Hand-assembled protocol 0 pickle calling os.system (never loaded)."""


def v7_legacy_checkpoint(first: str = "sys_info") -> bytes:
    """A legacy torch tar checkpoint whose headers carry no ustar magic (v7 style)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in (first, "pickle", "storages", "tensors"):
            info = tarfile.TarInfo(name)
            info.size = len(EVIL_PROTOCOL0)
            archive.addfile(info, io.BytesIO(EVIL_PROTOCOL0))
    data = bytearray(buffer.getvalue())
    offset = 0
    while offset + 512 <= len(data) and any(data[offset : offset + 512]):
        header = data[offset : offset + 512]
        size = int(bytes(header[124:136]).strip(b"\0 ") or b"0", 8)
        header[257:265] = bytes(8)  # magic and version gone: a v7 header
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        data[offset : offset + 512] = header
        offset += 512 + (size + 511) // 512 * 512
    return bytes(data)


@pytest.mark.parametrize("first", ["sys_info", "{x}", "\xff\xfe", "README"])
def test_v7_headers_are_detected_as_tar_whatever_the_first_name(first: str) -> None:
    data = v7_legacy_checkpoint(first)
    assert b"ustar" not in data
    assert is_tar_header(data)
    assert detect_format(data) is FileFormat.TAR


@pytest.mark.parametrize(
    "head",
    [
        b"",
        bytes(512),
        b"sys_info" + bytes(504),  # no checksum
        EVIL_PROTOCOL0 * 20,
    ],
)
def test_other_content_is_not_a_tar_header(head: bytes) -> None:
    assert not is_tar_header(head)


def test_v7_legacy_checkpoint_scanned_as_tar_is_critical() -> None:
    # every legacy pickle is found once the content is read as a tar
    findings: list[Finding] = []
    ScanContext(ScanSettings(jobs=1), "model.pt", findings).scan_as(
        FileFormat.TAR, v7_legacy_checkpoint()
    )
    severities = {(f.rule, f.severity) for f in findings}
    assert ("pickle.dangerous-global", Severity.CRITICAL) in severities


@pytest.mark.parametrize("name", ["model.pt", "model.tar", "notes.txt", "data.json"])
def test_v7_legacy_checkpoint_on_disk_is_critical(tmp_path: Path, name: str) -> None:
    # Detection checks the header checksum as tarfile does, so no magic is needed.
    path = tmp_path / name
    path.write_bytes(v7_legacy_checkpoint())
    report = weightgate.scan_path(path)
    assert ("pickle.dangerous-global", Severity.CRITICAL) in {
        (f.rule, f.severity) for f in report.findings
    }
