"""Red-team regressions for the zip reader: archives whose loaders disagree on the directory."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from tests.builders.zips import BENIGN_PICKLE, EVIL_PICKLE, rules, scan_bytes
from weightgate import Severity


def _local(name: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(body)
    header = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, len(body), len(body), len(name), 0
    )
    return header + name + body


def _central(name: bytes, body: bytes, local_offset: int) -> bytes:
    crc = zlib.crc32(body)
    record = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02",
        0x031E,
        20,
        0,
        0,
        0,
        0x21,
        crc,
        len(body),
        len(body),
        len(name),
        0,
        0,
        0,
        0,
        0,
        local_offset,
    )
    return record + name


def _eocd(size: int, offset: int, comment: bytes) -> bytes:
    return struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, size, offset, len(comment))


def test_declared_directory_differing_from_the_corrected_one_is_read(tmp_path: Path) -> None:
    """miniz reads the directory at the declared offset; zipfile the one before the end record.

    The declared directory (the one PyTorch reads) names a member hidden in the end record's
    comment, past every directory: it must be scanned, and the disagreement reported.
    """
    name = b"arch/data.pkl"
    benign = _local(name, BENIGN_PICKLE)
    hidden_directory_at = len(benign)
    hidden_directory_size = len(_central(name, EVIL_PICKLE, 0))
    visible_directory_at = hidden_directory_at + hidden_directory_size
    eocd_at = visible_directory_at + len(_central(name, BENIGN_PICKLE, 0))
    evil_at = eocd_at + 22  # the comment starts right after the end record
    comment = _local(name, EVIL_PICKLE)
    data = (
        benign
        + _central(name, EVIL_PICKLE, evil_at)
        + _central(name, BENIGN_PICKLE, 0)
        + _eocd(hidden_directory_size, hidden_directory_at, comment)
        + comment
    )
    found = rules(scan_bytes(tmp_path, data))
    assert ("pickle.dangerous-global", Severity.CRITICAL) in found
    assert ("zip.directory-mismatch", Severity.MEDIUM) in found


def test_zip64_locator_naming_another_record_is_read(tmp_path: Path) -> None:
    """zipfile reads the Zip64 record before the locator, older miniz the one it names.

    The named record's directory points at a member hidden in the end record's comment.
    """
    name = b"arch/data.pkl"
    benign = _local(name, BENIGN_PICKLE)
    cd_b_at = len(benign)
    cd_b_size = len(_central(name, EVIL_PICKLE, 0))
    z64_b_at = cd_b_at + cd_b_size
    z64_b = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, cd_b_size, cd_b_at)
    cd_a_at = z64_b_at + len(z64_b)
    cd_a = _central(name, BENIGN_PICKLE, 0)
    z64_a = struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, 1, 1, len(cd_a), cd_a_at)
    locator = struct.pack("<4sIQI", b"PK\x06\x07", 0, z64_b_at, 1)
    eocd_at = cd_a_at + len(cd_a) + len(z64_a) + len(locator)
    comment = _local(name, EVIL_PICKLE)
    cd_b = _central(name, EVIL_PICKLE, eocd_at + 22)
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, len(comment)
    )
    data = benign + cd_b + z64_b + cd_a + z64_a + locator + end + comment
    found = rules(scan_bytes(tmp_path, data))
    assert ("pickle.dangerous-global", Severity.CRITICAL) in found
    assert ("zip.directory-mismatch", Severity.MEDIUM) in found
