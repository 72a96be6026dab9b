"""The lenient zip reader and scanner: every way a zip can lie, built byte by byte."""

from __future__ import annotations

import io
import lzma
import os
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import zips
from tests.builders.zips import (
    BENIGN_PICKLE,
    EVIL_PICKLE,
    Member,
    build_zip,
    rules,
    scan_bytes,
    worst,
)
from weightgate import Limits, ScanSettings, Severity
from weightgate.formats import zip as reader
from weightgate.formats.detect import FileFormat
from weightgate.scan.context import ScanContext

CRITICAL_PICKLE = ("pickle.dangerous-global", Severity.CRITICAL)


def findings_of(found: list, rule_id: str) -> list:
    return [f for f in found if f.rule == rule_id]


# -- the reader ----------------------------------------------------------------------------


def test_reader_lists_a_zipfile_archive_like_zipfile() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.txt", b"hello")
        archive.writestr("dir/b.bin", bytes(1000))
    data = out.getvalue()
    listing = reader.read_zip(memoryview(data), max_members=10)
    assert listing.issues == []
    assert listing.has_central_directory
    expected = zipfile.ZipFile(io.BytesIO(data)).infolist()
    assert [e.record.name for e in listing.entries] == [i.filename for i in expected]
    assert [e.local.offset for e in listing.entries] == [i.header_offset for i in expected]
    assert [e.record.compressed_size for e in listing.entries] == [
        i.compress_size for i in expected
    ]
    assert all(e.in_walk for e in listing.entries)


def test_reader_zip64_sizes_and_end_record() -> None:
    data = build_zip([Member("a.pkl", BENIGN_PICKLE, zip64=True)], zip64_end=True)
    listing = reader.read_zip(memoryview(data), max_members=10)
    assert listing.issues == []
    (entry,) = listing.entries
    assert entry.record.uncompressed_size == len(BENIGN_PICKLE)
    assert entry.local.compressed_size == len(BENIGN_PICKLE)
    assert bytes(memoryview(data)[entry.data]) == BENIGN_PICKLE
    # zipfile agrees on the bytes (the builder writes valid Zip64)
    assert zipfile.ZipFile(io.BytesIO(data)).read("a.pkl") == BENIGN_PICKLE


def test_reader_counts_members_against_the_limit() -> None:
    data = build_zip([Member(f"m{i}", b"x") for i in range(11)])
    listing = reader.read_zip(memoryview(data), max_members=10)
    assert len(listing.entries) == 10
    assert [i.kind for i in listing.issues] == [reader.IssueKind.TOO_MANY_MEMBERS]


def test_reader_resolves_prepended_data_like_zipfile() -> None:
    data = build_zip([Member("a.pkl", BENIGN_PICKLE)], prefix=b"#!/bin/sh\nexit 0\n")
    listing = reader.read_zip(memoryview(data), max_members=10)
    assert listing.prefix_end == len(b"#!/bin/sh\nexit 0\n")
    assert [i.kind for i in listing.issues] == [reader.IssueKind.PREFIX]
    assert bytes(memoryview(data)[listing.entries[0].data]) == BENIGN_PICKLE


# -- findings, one per lie -----------------------------------------------------------------


def test_plain_zip_with_malicious_pickle(tmp_path: Path) -> None:
    found = scan_bytes(tmp_path, build_zip([Member("data.pkl", EVIL_PICKLE)]))
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == "model.zip!data.pkl"


def test_benign_zip_is_clean(tmp_path: Path) -> None:
    members = [Member("a.pkl", BENIGN_PICKLE), Member("b.txt", b"hello", method=zips.DEFLATED)]
    assert scan_bytes(tmp_path, build_zip(members)) == []


def test_bad_crc_is_reported_and_the_member_still_scanned(tmp_path: Path) -> None:
    found = scan_bytes(tmp_path, build_zip([Member("data.pkl", EVIL_PICKLE, crc=0x12345678)]))
    assert rules(found) == {("zip.crc-mismatch", Severity.LOW), CRITICAL_PICKLE}
    (crc,) = findings_of(found, "zip.crc-mismatch")
    assert (crc.offset, crc.evidence) == (0, "data.pkl")
    assert "12345678" in crc.message


@pytest.mark.parametrize("flag", [0x1, 0x20, 0x40, 0x2000])
@pytest.mark.parametrize("method", [zips.STORED, zips.DEFLATED])
def test_odd_flag_bits_do_not_hide_a_member(tmp_path: Path, flag: int, method: int) -> None:
    found = scan_bytes(tmp_path, build_zip([Member("m/config.pkl", EVIL_PICKLE, method, flag)]))
    assert rules(found) == {("zip.odd-flags", Severity.LOW), CRITICAL_PICKLE}
    (odd,) = findings_of(found, "zip.odd-flags")
    assert odd.message.startswith("flag bits set: ")
    assert odd.offset == 0


@pytest.mark.parametrize("method", [zips.STORED, zips.DEFLATED])
def test_really_encrypted_member_is_low(tmp_path: Path, method: int) -> None:
    ciphertext = bytes.fromhex("a62423adadd3da9954d84e5b29041920ff872cadc7c6151c53aa99")
    member = Member("test.txt", b"secret", method=method, flags=0x1, raw=ciphertext)
    found = scan_bytes(tmp_path, build_zip([member]))
    assert rules(found) == {
        ("zip.odd-flags", Severity.LOW),
        ("archive.encrypted-member", Severity.LOW),
    }


def test_local_and_central_names_differ(tmp_path: Path) -> None:
    member = Member("data.pkl", EVIL_PICKLE, local_name="datap.kl")
    found = scan_bytes(tmp_path, build_zip([member]))
    assert rules(found) == {("zip.header-mismatch", Severity.MEDIUM), CRITICAL_PICKLE}
    (mismatch,) = findings_of(found, "zip.header-mismatch")
    assert "'datap.kl' vs 'data.pkl'" in mismatch.message
    # scanned under the central name, the one PyTorch and zipfile use
    assert findings_of(found, "pickle.dangerous-global")[0].path == "model.zip!data.pkl"


def test_local_only_member_is_scanned(tmp_path: Path) -> None:
    members = [Member("a.txt", b"hello"), Member("hidden.pkl", EVIL_PICKLE, in_central=False)]
    found = scan_bytes(tmp_path, build_zip(members))
    assert rules(found) == {("zip.directory-mismatch", Severity.MEDIUM), CRITICAL_PICKLE}
    (missing,) = findings_of(found, "zip.directory-mismatch")
    assert (missing.evidence, "no central directory record" in missing.message) == (
        "hidden.pkl",
        True,
    )


def test_central_only_member_behind_junk_is_scanned(tmp_path: Path) -> None:
    members = [Member("a.txt", b"hello"), Member("data.pkl", EVIL_PICKLE, gap_before=b"junk" * 4)]
    data = build_zip(members)
    found = scan_bytes(tmp_path, data)
    assert rules(found) == {
        ("zip.unreferenced-data", Severity.LOW),
        ("zip.directory-mismatch", Severity.MEDIUM),
        CRITICAL_PICKLE,
    }
    (gap,) = findings_of(found, "zip.unreferenced-data")
    assert gap.offset == data.index(b"junk")
    (cd_only,) = findings_of(found, "zip.directory-mismatch")
    assert "not reachable by walking" in cd_only.message


def test_local_header_hidden_in_a_gap_is_found(tmp_path: Path) -> None:
    members = [
        Member("a.txt", b"hello"),
        Member("hidden.pkl", EVIL_PICKLE, in_central=False, gap_before=b"junk"),
    ]
    found = scan_bytes(tmp_path, build_zip(members))
    assert CRITICAL_PICKLE in rules(found)
    assert ("zip.directory-mismatch", Severity.MEDIUM) in rules(found)


def test_descriptor_members_without_central_directory(tmp_path: Path) -> None:
    members = [
        Member("a.pkl", BENIGN_PICKLE, descriptor=True),
        Member("b.pkl", EVIL_PICKLE, method=zips.DEFLATED, descriptor=True),
        Member("c.pkl", EVIL_PICKLE, descriptor=True),
    ]
    found = scan_bytes(tmp_path, build_zip(members, central=False))
    assert rules(found) == {("zip.bad-central-directory", Severity.MEDIUM), CRITICAL_PICKLE}
    assert sorted(f.path for f in findings_of(found, "pickle.dangerous-global")) == [
        "model.zip!b.pkl",
        "model.zip!c.pkl",
    ]


def test_zip64_member_is_clean(tmp_path: Path) -> None:
    data = build_zip([Member("a.pkl", EVIL_PICKLE, zip64=True)], zip64_end=True)
    assert rules(scan_bytes(tmp_path, data)) == {CRITICAL_PICKLE}


def test_trailing_data_after_the_end_record(tmp_path: Path) -> None:
    assert scan_bytes(tmp_path, build_zip([Member("a.txt", b"hi")], trailing=bytes(512))) == []
    data = build_zip([Member("a.txt", b"hi")], trailing=b"\x01\x02trailing")
    found = scan_bytes(tmp_path, data)
    assert rules(found) == {("archive.trailing-data", Severity.LOW)}
    assert found[0].offset == len(data) - len(b"\x01\x02trailing")
    # trailing data with a strong magic is scanned
    found = scan_bytes(tmp_path, build_zip([Member("a.txt", b"hi")], trailing=EVIL_PICKLE))
    assert CRITICAL_PICKLE in rules(found)


def test_pickle_prefix_is_scanned_as_its_own_object() -> None:
    data = build_zip([Member("a.txt", b"hi")], prefix=EVIL_PICKLE)
    findings: list = []
    ScanContext(ScanSettings(), "poly.zip", findings).scan_as(FileFormat.ZIP, data)
    assert rules(findings) == {("zip.prefix-data", Severity.MEDIUM), CRITICAL_PICKLE}
    assert findings_of(findings, "pickle.dangerous-global")[0].path == "poly.zip!<prefix>"


def test_duplicate_names_are_both_scanned(tmp_path: Path) -> None:
    members = [Member("data.pkl", BENIGN_PICKLE), Member("data.pkl", EVIL_PICKLE)]
    found = scan_bytes(tmp_path, build_zip(members))
    assert rules(found) == {("zip.duplicate-name", Severity.LOW), CRITICAL_PICKLE}


def test_shared_local_header_is_an_overlap_scanned_once(tmp_path: Path) -> None:
    data = build_zip([Member("data.pkl", EVIL_PICKLE)])
    # Add 999 more central records pointing at the same local header (Fifield-style).
    cd_at = data.index(b"PK\x01\x02")
    eocd_at = data.index(b"PK\x05\x06")
    record = data[cd_at:eocd_at]
    records = record * 1000
    eocd = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1000, 1000, len(records), cd_at, 0)
    found = scan_bytes(tmp_path, data[:cd_at] + records + eocd)
    assert rules(found) == {("zip.overlapping-entries", Severity.MEDIUM), CRITICAL_PICKLE}
    assert len(findings_of(found, "pickle.dangerous-global")) == 1


def test_nested_zip_within_depth_is_scanned(tmp_path: Path) -> None:
    inner = build_zip([Member("data.pkl", EVIL_PICKLE)])
    middle = build_zip([Member("inner.zip", inner, method=zips.DEFLATED)])
    found = scan_bytes(tmp_path, build_zip([Member("middle.zip", middle)]))
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == "model.zip!middle.zip!inner.zip!data.pkl"


def test_nested_zip_beyond_max_depth(tmp_path: Path) -> None:
    data = build_zip([Member("data.pkl", EVIL_PICKLE)])
    for level in range(5):
        data = build_zip([Member(f"level{level}.zip", data)])
    found = scan_bytes(tmp_path, data)
    assert rules(found) == {("archive.depth-exceeded", Severity.MEDIUM)}
    assert found[0].path.count("!") == 5


def test_too_many_members(tmp_path: Path) -> None:
    data = build_zip([Member(f"m{i}.txt", b"x") for i in range(11)])
    found = scan_bytes(tmp_path, data, limits=Limits(max_archive_members=10))
    assert rules(found) == {("archive.too-many-members", Severity.MEDIUM)}
    assert scan_bytes(tmp_path, data, limits=Limits(max_archive_members=11)) == []


@pytest.mark.parametrize(
    "name",
    ["../evil.txt", "a/../../evil.txt", "/etc/evil", "C:/evil.txt", "..\\..\\evil", "a\x00.txt"],
)
def test_path_traversal_names(tmp_path: Path, name: str) -> None:
    found = scan_bytes(tmp_path, build_zip([Member(name, b"hello")]))
    assert rules(found) == {("archive.path-traversal", Severity.HIGH)}
    assert found[0].evidence == name


def test_backslash_separator_alone_is_low(tmp_path: Path) -> None:
    found = scan_bytes(tmp_path, build_zip([Member("model\\weights.txt", b"hello")]))
    assert rules(found) == {("archive.backslash-name", Severity.LOW)}


def test_traversal_in_unicode_path_extra_field(tmp_path: Path) -> None:
    target = b"../../evil.txt"
    extra = struct.pack("<HHB", 0x7075, 5 + len(target), 1) + b"\0\0\0\0" + target
    found = scan_bytes(tmp_path, build_zip([Member("safe.txt", b"hello", extra=extra)]))
    assert rules(found) == {("archive.path-traversal", Severity.HIGH)}
    assert found[0].evidence == "../../evil.txt"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"../../../etc/passwd", ("archive.link-escapes-root", Severity.HIGH)),
        (b"/etc/passwd", ("archive.link-escapes-root", Severity.HIGH)),
        (b"../weights.bin", ("archive.link-member", Severity.MEDIUM)),
    ],
)
def test_zip_symlinks(tmp_path: Path, target: bytes, expected: tuple) -> None:
    member = Member("model/link", target, external_attr=(zips.S_IFLNK | 0o777) << 16)
    found = scan_bytes(tmp_path, build_zip([member]))
    assert rules(found) == {expected}
    assert found[0].evidence == "model/link"


def test_unsupported_method_fails_closed(tmp_path: Path) -> None:
    found = scan_bytes(
        tmp_path, build_zip([Member("data.pkl", raw=b"\x28\xb5\x2f\xfd", method=93)])
    )
    assert rules(found) == {("archive.unscannable", Severity.MEDIUM)}


@pytest.mark.parametrize("eos_flag", [0x2, 0])
def test_bzip2_and_lzma_members_are_scanned(tmp_path: Path, eos_flag: int) -> None:
    props = {"id": lzma.FILTER_LZMA1, "dict_size": 1 << 16, "lc": 3, "lp": 0, "pb": 2}
    body = lzma.compress(EVIL_PICKLE, format=lzma.FORMAT_RAW, filters=[props])
    header = (
        struct.pack("<BBH", 9, 20, 5) + bytes([(2 * 5 + 0) * 9 + 3]) + struct.pack("<I", 1 << 16)
    )
    members = [
        Member("a.pkl", EVIL_PICKLE, method=zips.BZIP2),
        Member("b.pkl", EVIL_PICKLE, method=zips.LZMA, flags=eos_flag, raw=header + body),
    ]
    found = scan_bytes(tmp_path, build_zip(members))
    assert rules(found) == {CRITICAL_PICKLE}
    assert len(found) == 2


def test_truncated_and_corrupt_deflate(tmp_path: Path) -> None:
    body = zips.compress(EVIL_PICKLE + os.urandom(4000), zips.DEFLATED)
    found = scan_bytes(tmp_path, build_zip([Member("a.pkl", raw=body[: len(body) // 2], method=8)]))
    assert ("archive.truncated", Severity.MEDIUM) in rules(found)
    assert CRITICAL_PICKLE in rules(found)  # the bytes before the cut were scanned
    found = scan_bytes(tmp_path, build_zip([Member("a.pkl", raw=b"\xff" * 20, method=8)]))
    assert rules(found) == {("archive.corrupt-member", Severity.MEDIUM)}


def test_raw_storage_members_only_count_with_a_strong_magic(tmp_path: Path) -> None:
    # float32 values whose bytes read as a protocol-0 pickle ('c' is GLOBAL)
    looks_like_text = struct.pack("<2f", *struct.unpack("<2f", b"cos\nsyst"))
    members = [
        Member("archive/data/0", b"cos\nsystem\n(S'ls'\ntR."),
        Member("archive/data/1", looks_like_text),
        Member("archive/data/2", os.urandom(256)),
    ]
    assert worst(scan_bytes(tmp_path, build_zip(members))) is None
    found = scan_bytes(tmp_path, build_zip([Member("archive/data/0", EVIL_PICKLE)]))
    assert rules(found) == {CRITICAL_PICKLE}


def test_entries_only_raw_storage_if_every_name_says_so(tmp_path: Path) -> None:
    member = Member("archive/data/0", b"cos\nsystem\n(S'ls'\ntR.", local_name="evil.pkl")
    found = scan_bytes(tmp_path, build_zip([member]))
    assert ("zip.header-mismatch", Severity.MEDIUM) in rules(found)
    assert CRITICAL_PICKLE in rules(found)


# -- properties ----------------------------------------------------------------------------

_BASE = build_zip(
    [
        Member("a.pkl", BENIGN_PICKLE),
        Member("b.txt", b"hello " * 40, method=zips.DEFLATED),
        Member("c/d.bin", bytes(100), descriptor=True),
        Member("e.bin", b"\x01\x02" * 30, method=zips.BZIP2, zip64=True),
    ],
    zip64_end=True,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, len(_BASE) - 1), st.integers(0, 255)), max_size=6),
    cut=st.integers(1, len(_BASE)),
)
def test_any_corruption_ends_in_findings_not_errors(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_BASE)
    for pos, value in edits:
        data[pos] = value
    data = data[:cut]
    listing = reader.read_zip(memoryview(bytes(data)), max_members=50)
    for entry in listing.entries:
        assert 0 <= entry.local.data_offset <= entry.data_end <= len(data)
    findings: list = []
    ScanContext(ScanSettings(), "f.zip", findings).scan_as(FileFormat.ZIP, bytes(data))
    assert not [f for f in findings if f.rule == "scan.internal-error" and f.path == "f.zip"]
