"""Hostile and broken input through the real command: a precise finding or error, exit 1
or 2, bounded time and memory, never a traceback.

Each case runs ``weightgate scan`` in a child process that reports its own peak RSS
(VmHWM), so the memory bound is measured on the real thing, not on Python's allocator.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.builders.zips import DEFLATED, Member, build_zip, deflate_zeros
from tests.models import minilm_dir

PEAK_RSS_LIMIT_MB = 300
TIME_LIMIT_S = 60

# The child reports its own high-water mark from /proc: getrusage's ru_maxrss survives
# fork and exec, so it would report the (large) pytest parent instead.
_CHILD = (
    "import sys\n"
    "from weightgate.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "status = open('/proc/self/status').read()\n"
    "peak = status.split('VmHWM:')[1].split()[0]\n"
    "print(f'peak-rss-kb {peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


@dataclass
class Outcome:
    code: int
    report: dict[str, object] | None
    stderr: str
    seconds: float
    peak_mb: float

    def rules(self) -> set[str]:
        assert self.report is not None
        files = self.report["files"]
        assert isinstance(files, list)
        return {f["rule"] for file in files for f in file["findings"]}


def scan(path: Path, *args: str) -> Outcome:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, "scan", str(path), "--format", "json", *args],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S * 2,
        check=False,
    )
    seconds = time.monotonic() - started
    assert "Traceback" not in result.stderr, result.stderr
    peak_kb = int(result.stderr.rsplit("peak-rss-kb ", 1)[1].split()[0])
    report = json.loads(result.stdout) if result.stdout.strip() else None
    outcome = Outcome(result.returncode, report, result.stderr, seconds, peak_kb / 1024)
    assert outcome.seconds < TIME_LIMIT_S, f"took {outcome.seconds:.1f}s"
    assert outcome.peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {outcome.peak_mb:.0f} MB"
    return outcome


def test_truncated_real_safetensors(tmp_path: Path) -> None:
    original = (minilm_dir() / "model.safetensors").read_bytes()
    for cut in (4, 100, len(original) // 2, len(original) - 1):
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(original[:cut])
        outcome = scan(path)
        assert outcome.code == 2, (cut, outcome.report)
        assert any(r.startswith("safetensors.") for r in outcome.rules()), outcome.rules()


def test_truncated_pickle(tmp_path: Path) -> None:
    import pickle

    data = pickle.dumps({"w": list(range(1000))}, protocol=4)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) // 2])
    outcome = scan(path)
    assert outcome.code == 2
    assert "pickle.malformed" in outcome.rules()


@pytest.mark.parametrize(
    "magic",
    [b"\x80\x04\x95", b"PK\x03\x04", b"\x1f\x8b\x08", b"\x93NUMPY\x01\x00", b"GGUF\x03\x00"],
    ids=["pickle", "zip", "gzip", "npy", "gguf"],
)
def test_garbage_after_a_format_magic(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(magic + os.urandom(1 << 20))
    outcome = scan(path)
    assert outcome.code == 2, outcome.report


def test_pure_garbage_is_reported_as_unrecognised_not_as_a_model(tmp_path: Path) -> None:
    """Random bytes are no model format and cannot run code: an info finding, exit 0."""
    path = tmp_path / "blob"
    path.write_bytes(b"\x00\xff" + os.urandom(1 << 20))
    outcome = scan(path)
    assert outcome.code == 0
    assert outcome.rules() == {"format.unrecognized"}


def test_safetensors_header_length_2_pow_63(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b'{"a":1}' + bytes(64))
    outcome = scan(path)
    assert outcome.code == 2
    assert outcome.rules() & {"safetensors.header-too-large", "safetensors.header-out-of-bounds"}


def test_zip_bomb(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    # 4 GiB of zeros in a few MB, with honest sizes in zip64 fields
    member = Member("bomb.bin", method=DEFLATED, raw=deflate_zeros(4 << 30), crc=0)
    member.declared_size = 4 << 30
    member.zip64 = True
    path.write_bytes(build_zip([member]))
    outcome = scan(path)
    assert outcome.code == 2
    assert "archive.compression-bomb" in outcome.rules()


def test_pickle_with_ten_million_opcodes(tmp_path: Path) -> None:
    # EMPTY_LIST, then 10^7 x (NONE, APPEND): twenty million opcodes, 20 MB
    path = tmp_path / "long.pkl"
    path.write_bytes(b"\x80\x04]" + b"Na" * 10_000_000 + b".")
    outcome = scan(path)
    assert outcome.code == 2
    assert "pickle.limit-exceeded" in outcome.rules()


def test_unreadable_path_exits_1() -> None:
    # /proc/self/mem is a regular file whose read fails with EIO, even for root.
    outcome = scan(Path("/proc/self/mem"))
    assert outcome.code == 1
    assert outcome.report is not None
    assert outcome.report["errors"] == [{"path": "mem", "reason": "Input/output error"}]


def test_missing_path_exits_1(tmp_path: Path) -> None:
    outcome = scan(tmp_path / "absent")
    assert outcome.code == 1
    assert "no such file or directory" in outcome.stderr
