"""Archive scanners: bombs, tar, gzip/bzip2/xz streams and 7z, built in the tests."""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import time
import tracemalloc
from pathlib import Path

import py7zr
import pytest

from tests.builders import zips
from tests.builders.zips import (
    BENIGN_PICKLE,
    EVIL_PICKLE,
    Member,
    build_tar,
    build_zip,
    rules,
    scan_bytes,
    tar_info,
)
from weightgate import Limits, Severity

CRITICAL_PICKLE = ("pickle.dangerous-global", Severity.CRITICAL)
BOMB = ("archive.compression-bomb", Severity.MEDIUM)
GIB = 1 << 30


def scan_measured(tmp_path: Path, data: bytes, name: str, limits: Limits | None = None):
    """Scan and return (findings, seconds, peak traced bytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        found = scan_bytes(tmp_path, data, name, limits)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return found, elapsed, peak


# -- bombs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_gib_of_zeros() -> bytes:
    """A raw deflate stream of 2 GiB of zeros (about 2 MB)."""
    return zips.deflate_zeros(2 * GIB)


def test_deflate_bomb_with_honest_sizes_ends_before_inflating(
    tmp_path: Path, two_gib_of_zeros: bytes
) -> None:
    member = Member("zeros.bin", raw=two_gib_of_zeros, method=zips.DEFLATED, declared_size=2 * GIB)
    found, elapsed, peak = scan_measured(tmp_path, build_zip([member]), "bomb.zip")
    assert rules(found) == {BOMB}
    assert found[0].evidence == "zeros.bin"
    assert f"declares {2 * GIB} bytes" in found[0].message
    assert elapsed < 2 and peak < 32 << 20


def test_deflate_bomb_with_lying_sizes_is_stopped_early(
    tmp_path: Path, two_gib_of_zeros: bytes
) -> None:
    member = Member(
        "zeros.bin", raw=two_gib_of_zeros, method=zips.DEFLATED, declared_size=len(two_gib_of_zeros)
    )
    found, elapsed, peak = scan_measured(tmp_path, build_zip([member]), "bomb.zip")
    assert rules(found) == {BOMB}
    assert "expands beyond 250:1" in found[0].message
    # stopped after ~16 MiB (limits.min_bomb_check_bytes), never 2 GiB
    assert elapsed < 5 and peak < 64 << 20


def test_gzip_bomb_is_stopped_early(tmp_path: Path, two_gib_of_zeros: bytes) -> None:
    data = zips.gzip_wrap(two_gib_of_zeros)
    found, elapsed, peak = scan_measured(tmp_path, data, "zeros.bin.gz")
    assert rules(found) == {BOMB}
    assert found[0].path == "zeros.bin.gz" and found[0].evidence == "zeros.bin"
    assert elapsed < 5 and peak < 64 << 20


def test_member_larger_than_the_limit(tmp_path: Path) -> None:
    data = build_zip([Member("big.bin", bytes(range(256)) * 4096, method=zips.DEFLATED)])
    limits = Limits(max_member_bytes=1 << 19)
    found = scan_bytes(tmp_path, data, "m.zip", limits)
    assert rules(found) == {("archive.member-too-large", Severity.MEDIUM)}
    # the same with a lying declared size: stopped while inflating
    data = build_zip([Member("big.bin", bytes(range(256)) * 4096, zips.DEFLATED, declared_size=1)])
    found = scan_bytes(tmp_path, data, "m.zip", limits)
    assert rules(found) == {("archive.member-too-large", Severity.MEDIUM)}


def test_total_uncompressed_budget(tmp_path: Path) -> None:
    members = [Member(f"m{i}.bin", bytes(range(256)) * 1024, zips.DEFLATED) for i in range(4)]
    limits = Limits(max_total_uncompressed_bytes=600_000)
    found = scan_bytes(tmp_path, build_zip(members), "m.zip", limits)
    assert rules(found) == {("archive.total-size-exceeded", Severity.MEDIUM)}
    (stopped,) = [f for f in found if f.rule == "archive.total-size-exceeded"]
    assert stopped.evidence == "m2.bin"  # m0 and m1 fit, m2 crossed the limit


# -- tar -----------------------------------------------------------------------------------


def test_tar_gz_of_a_pickle(tmp_path: Path) -> None:
    data = gzip.compress(build_tar([(tar_info("model/evil.pkl"), EVIL_PICKLE)]))
    found = scan_bytes(tmp_path, data, "model.tar.gz")
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == "model.tar.gz!model.tar!model/evil.pkl"


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_formats_and_long_names(tmp_path: Path, fmt: int) -> None:
    name = "d/" * (60 if fmt != tarfile.USTAR_FORMAT else 20) + "evil.pkl"
    data = build_tar([(tar_info(name), EVIL_PICKLE), (tar_info("ok.pkl"), BENIGN_PICKLE)], fmt)
    found = scan_bytes(tmp_path, data, "m.tar")
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == f"m.tar!{name}"


@pytest.mark.parametrize(
    ("kind", "name", "target", "expected"),
    [
        (tarfile.SYMTYPE, "model/link", "../../etc/passwd", ("archive.link-escapes-root", 3)),
        (tarfile.SYMTYPE, "model/link", "/etc/passwd", ("archive.link-escapes-root", 3)),
        (tarfile.SYMTYPE, "model/link", "weights.bin", ("archive.link-member", 2)),
        (tarfile.LNKTYPE, "model/link", "../outside", ("archive.link-escapes-root", 3)),
        (tarfile.LNKTYPE, "model/link", "model/weights.bin", ("archive.link-member", 2)),
        (tarfile.CHRTYPE, "dev/null", "", ("archive.special-member", 2)),
        (tarfile.FIFOTYPE, "fifo", "", ("archive.special-member", 2)),
    ],
)
def test_tar_links_and_special_members(
    tmp_path: Path, kind: bytes, name: str, target: str, expected: tuple
) -> None:
    found = scan_bytes(tmp_path, build_tar([(tar_info(name, kind, target), None)]), "m.tar")
    assert rules(found) == {(expected[0], Severity(expected[1]))}
    assert found[0].evidence == name


def test_tar_traversal_name(tmp_path: Path) -> None:
    found = scan_bytes(tmp_path, build_tar([(tar_info("../../evil.sh"), b"#!/bin/sh\n")]), "m.tar")
    assert rules(found) == {("archive.path-traversal", Severity.HIGH)}
    assert found[0].offset == 0


def test_truncated_tar(tmp_path: Path) -> None:
    data = build_tar([(tar_info("a.bin"), bytes(4096)), (tar_info("b.pkl"), EVIL_PICKLE)])
    cut = data[: 512 + 4096 + 512 + 10]  # inside b.pkl's data
    found = scan_bytes(tmp_path, cut, "m.tar")
    assert rules(found) == {("archive.truncated", Severity.MEDIUM)}
    assert found[0].offset == 512 + 4096


def test_tar_too_many_members(tmp_path: Path) -> None:
    data = build_tar([(tar_info(f"f{i}"), b"x") for i in range(6)])
    found = scan_bytes(tmp_path, data, "m.tar", Limits(max_archive_members=5))
    assert rules(found) == {("archive.too-many-members", Severity.MEDIUM)}


def test_tar_pax_header_over_the_limit(tmp_path: Path) -> None:
    data = build_tar([(tar_info("x" * 5000), b"x")], tarfile.PAX_FORMAT)
    found = scan_bytes(tmp_path, data, "m.tar", Limits(max_header_bytes=4096))
    assert rules(found) == {("format.limit-exceeded", Severity.MEDIUM)}


def test_tar_trailing_data(tmp_path: Path) -> None:
    data = build_tar([(tar_info("a.txt"), b"hello")])
    assert scan_bytes(tmp_path, data + bytes(10240), "m.tar") == []
    found = scan_bytes(tmp_path, data + EVIL_PICKLE, "m.tar")
    assert rules(found) == {("archive.trailing-data", Severity.LOW), CRITICAL_PICKLE}


# -- gzip, bzip2, xz -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compress", "name", "inner"),
    [
        (gzip.compress, "model.pkl.gz", "model.pkl"),
        (bz2.compress, "model.pkl.bz2", "model.pkl"),
        (lzma.compress, "model.pkl.xz", "model.pkl"),
        (gzip.compress, "weights", "weights.content"),
    ],
)
def test_compressed_pickle(tmp_path: Path, compress, name: str, inner: str) -> None:
    found = scan_bytes(tmp_path, compress(EVIL_PICKLE), name)
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == f"{name}!{inner}"


def test_concatenated_gzip_members_are_one_stream(tmp_path: Path) -> None:
    half = len(EVIL_PICKLE) // 2
    data = gzip.compress(EVIL_PICKLE[:half]) + gzip.compress(EVIL_PICKLE[half:])
    assert rules(scan_bytes(tmp_path, data, "m.pkl.gz")) == {CRITICAL_PICKLE}


def test_truncated_gzip_still_scans_what_is_there(tmp_path: Path) -> None:
    data = gzip.compress(EVIL_PICKLE + bytes(range(256)) * 64)
    found = scan_bytes(tmp_path, data[: len(data) - 30], "m.pkl.gz")
    assert ("archive.truncated", Severity.MEDIUM) in rules(found)
    assert CRITICAL_PICKLE in rules(found)


def test_gzip_trailing_data(tmp_path: Path) -> None:
    data = gzip.compress(BENIGN_PICKLE)
    assert scan_bytes(tmp_path, data + bytes(512), "m.pkl.gz") == []
    found = scan_bytes(tmp_path, data + b"junk", "m.pkl.gz")
    assert rules(found) == {("archive.trailing-data", Severity.LOW)}
    assert found[0].offset == len(data)


def test_corrupt_bzip2(tmp_path: Path) -> None:
    data = bz2.compress(EVIL_PICKLE * 10)
    corrupt = data[:20] + bytes(len(data) - 20)
    found = scan_bytes(tmp_path, corrupt, "m.pkl.bz2")
    assert ("archive.corrupt-member", Severity.MEDIUM) in rules(found)


# -- 7z ------------------------------------------------------------------------------------


def test_7z_with_a_pickle(tmp_path: Path) -> None:
    data = zips.build_7z({"data.pkl": EVIL_PICKLE, "readme.txt": b"hello"})
    found = scan_bytes(tmp_path, data, "m.7z")
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == "m.7z!data.pkl"


def test_7z_coder_that_cannot_be_bounded_fails_closed(tmp_path: Path) -> None:
    data = zips.build_7z({"data.pkl": BENIGN_PICKLE}, filters=[{"id": py7zr.FILTER_DEFLATE}])
    found = scan_bytes(tmp_path, data, "m.7z")
    assert rules(found) == {("archive.unscannable", Severity.MEDIUM)}


def test_encrypted_7z_fails_closed(tmp_path: Path) -> None:
    data = zips.build_7z({"data.pkl": BENIGN_PICKLE}, password="secret")
    found = scan_bytes(tmp_path, data, "m.7z")
    assert rules(found) == {("archive.unscannable", Severity.MEDIUM)}


def test_7z_bomb_from_declared_sizes(tmp_path: Path) -> None:
    data = zips.build_7z({"zeros.bin": bytes(32 << 20)})
    found, elapsed, peak = scan_measured(tmp_path, data, "m.7z")
    assert rules(found) == {BOMB}
    # py7zr's LZMA dictionary for the header (16 MiB) is the peak; 32 MiB never inflated
    assert elapsed < 2 and peak < 32 << 20


def test_7z_traversal_name_is_reported(tmp_path: Path) -> None:
    data = zips.build_7z(
        {"ok.pkl": EVIL_PICKLE, "xx.pkl": EVIL_PICKLE}, rename={"xx.pkl": "../x.p"}
    )
    found = scan_bytes(tmp_path, data, "m.7z")
    assert rules(found) == {("archive.path-traversal", Severity.HIGH), CRITICAL_PICKLE}
    assert [f.evidence for f in found if f.rule == "archive.path-traversal"] == ["../x.p"]


def test_malformed_7z(tmp_path: Path) -> None:
    data = zips.build_7z({"a.pkl": BENIGN_PICKLE})
    found = scan_bytes(tmp_path, data[:40], "m.7z")
    assert rules(found) == {("format.malformed", Severity.MEDIUM)}
