"""Build zip files byte by byte, including every way a zip can lie.

zipfile cannot write CRC mismatches, odd flag bits, names that differ between the local
header and the central directory, members missing from either directory, or gaps, so
tests describe members with :class:`Member` and :func:`build_zip` assembles the bytes.
"""

from __future__ import annotations

import bz2
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from weightgate import Finding, Limits, ScanSettings, Severity, scan_path

STORED, DEFLATED, BZIP2, LZMA = 0, 8, 12, 14
S_IFLNK = 0o120000


@dataclass
class Member:
    """One zip member and the lies its headers tell.

    Attributes:
        name: Name in the central directory (and the local header unless local_name).
        data: Uncompressed content.
        method: Compression method; STORED, DEFLATED and BZIP2 are compressed here.
        flags: General purpose flag bits (both headers).
        crc: CRC-32 to declare instead of the real one.
        local_name: Name for the local header when it should differ.
        raw: Bytes to write as member data instead of compressing ``data``.
        declared_size: Uncompressed size to declare instead of the real one.
        external_attr: Central directory external attributes (mode << 16 for unix).
        in_central: Write a central directory record.
        zip64: Use Zip64 extra fields for sizes and offset.
        descriptor: Zero sizes in the local header and a data descriptor after the data.
        gap_before: Junk bytes written before this member's local header.
        extra: Extra field bytes for the local header (padding, for example).
    """

    name: str
    data: bytes = b""
    method: int = STORED
    flags: int = 0
    crc: int | None = None
    local_name: str | None = None
    raw: bytes | None = None
    declared_size: int | None = None
    external_attr: int = 0
    in_central: bool = True
    zip64: bool = False
    descriptor: bool = False
    gap_before: bytes = b""
    extra: bytes = b""
    offset: int = field(default=0, init=False)


def compress(data: bytes, method: int) -> bytes:
    """Compress ``data`` with a zip method."""
    if method == DEFLATED:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if method == BZIP2:
        return bz2.compress(data)
    return data


def build_zip(
    members: list[Member],
    *,
    prefix: bytes = b"",
    trailing: bytes = b"",
    zip64_end: bool = False,
    central: bool = True,
) -> bytes:
    """Assemble a zip file from ``members``."""
    out = BytesIO()
    out.write(prefix)
    records = []
    for m in members:
        out.write(m.gap_before)
        m.offset = out.tell() - len(prefix)  # offsets relative to the archive, like zip -A
        body = m.raw if m.raw is not None else compress(m.data, m.method)
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        usize = len(m.data) if m.declared_size is None else m.declared_size
        csize = len(body)
        flags = m.flags | (0x8 if m.descriptor else 0)
        name = (m.local_name if m.local_name is not None else m.name).encode()
        extra = m.extra
        l_crc, l_c, l_u = (0, 0, 0) if m.descriptor else (crc, csize, usize)
        if m.zip64:
            extra += struct.pack("<HHQQ", 1, 16, l_u, l_c)
            l_c = l_u = 0xFFFFFFFF
        out.write(
            struct.pack(
                "<4sHHHHHIIIHH",
                b"PK\x03\x04",
                45 if m.zip64 else 20,
                flags,
                m.method,
                0,
                0x21,
                l_crc,
                l_c,
                l_u,
                len(name),
                len(extra),
            )
        )
        out.write(name + extra + body)
        if m.descriptor:
            out.write(struct.pack("<4sIII", b"PK\x07\x08", crc, csize, usize))
        if m.in_central and central:
            records.append((m, crc, csize, usize, flags))
    cd_start = out.tell() - len(prefix)
    for m, crc, csize, usize, flags in records:
        name = m.name.encode()
        extra, c32, u32, off32 = b"", csize, usize, m.offset
        if m.zip64:
            extra = struct.pack("<HHQQQ", 1, 24, usize, csize, m.offset)
            c32 = u32 = off32 = 0xFFFFFFFF
        out.write(
            struct.pack(
                "<4sHHHHHHIIIHHHHHII",
                b"PK\x01\x02",
                0x031E,
                45 if m.zip64 else 20,
                flags,
                m.method,
                0,
                0x21,
                crc,
                c32,
                u32,
                len(name),
                len(extra),
                0,
                0,
                0,
                m.external_attr,
                off32,
            )
        )
        out.write(name + extra)
    cd_size = out.tell() - len(prefix) - cd_start
    if central:
        count = len(records)
        if zip64_end:
            record_at = out.tell() - len(prefix)
            out.write(
                struct.pack(
                    "<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_start
                )
            )
            out.write(struct.pack("<4sIQI", b"PK\x06\x07", 0, record_at, 1))
            out.write(
                struct.pack(
                    "<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0
                )
            )
        else:
            out.write(
                struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, cd_size, cd_start, 0)
            )
    out.write(trailing)
    return out.getvalue()


def deflate_zeros(total: int, chunk: int = 16 << 20) -> bytes:
    """A raw deflate stream of ``total`` zero bytes, built without compressing them all.

    After a full flush the compressor starts from a clean state, so every ``chunk`` of
    zeros compresses to the same bytes: compress one chunk, repeat its output.
    """
    assert total % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (total // chunk) + compressor.flush(zlib.Z_FINISH)


def build_tar(
    files: list[tuple[tarfile.TarInfo, bytes | None]], fmt: int = tarfile.PAX_FORMAT
) -> bytes:
    """A tar archive of ``files`` (TarInfo, content) built with the standard library."""
    out = BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as archive:
        for info, content in files:
            if content is not None:
                info.size = len(content)
                archive.addfile(info, BytesIO(content))
            else:
                archive.addfile(info)
    return out.getvalue()


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    """A TarInfo of the given type."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


class Evil:
    """Reduces to os.system: pickling it writes an exploit (never loaded here)."""

    def __reduce__(self) -> tuple[object, ...]:
        import os

        return (os.system, ("echo pwned",))


EVIL_PICKLE = pickle.dumps(Evil(), protocol=4)
"""A pickle that would call os.system when loaded (it never is: only dumped here)."""
BENIGN_PICKLE = pickle.dumps({"weights": [1.0, 2.0]}, protocol=4)


def scan_bytes(
    tmp_path: Path, data: bytes, name: str = "model.zip", limits: Limits | None = None
) -> list[Finding]:
    """Scan ``data`` as a file on disk (through mmap, as in production)."""
    path = tmp_path / name
    path.write_bytes(data)
    settings = ScanSettings(limits=limits) if limits is not None else None
    report = scan_path(path, settings)
    assert not report.errors
    return list(report.findings)


def rules(findings: list[Finding]) -> set[tuple[str, Severity]]:
    """The (rule, severity) pairs of ``findings``, INFO notes left out."""
    return {(f.rule, f.severity) for f in findings if f.severity > Severity.INFO}


def worst(findings: list[Finding]) -> Severity | None:
    """The highest severity among ``findings``."""
    return max((f.severity for f in findings), default=None)


def build_7z(
    files: dict[str, bytes],
    filters: list[dict[str, int]] | None = None,
    password: str | None = None,
    rename: dict[str, str] | None = None,
) -> bytes:
    """A 7z archive written by py7zr; ``rename`` patches names py7zr refuses to write."""
    import py7zr

    out = BytesIO()
    with py7zr.SevenZipFile(out, "w", filters=filters, password=password) as archive:
        archive.set_encoded_header_mode(not rename)
        for name, data in files.items():
            archive.writestr(data, name)
    data = bytearray(out.getvalue())
    for old, new in (rename or {}).items():
        assert len(old) == len(new)
        (offset, size) = struct.unpack_from("<QQ", data, 12)
        start = 32 + offset
        header = bytes(data[start : start + size]).replace(
            old.encode("utf-16-le"), new.encode("utf-16-le")
        )
        data[start : start + size] = header
        struct.pack_into("<I", data, 28, zlib.crc32(header))
        struct.pack_into("<I", data, 8, zlib.crc32(data[12:32]))
    return bytes(data)


def gzip_wrap(deflate: bytes, crc: int = 0, size: int = 0) -> bytes:
    """A gzip member around a raw deflate stream (trailer values as given)."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + deflate + struct.pack("<II", crc, size)
