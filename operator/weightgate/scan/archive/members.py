"""What every archive scanner shares: the ``archive.*`` rules and the member checks.

Member names and link targets are checked for ways out of the extraction directory;
decompression is bounded by :func:`decompression_bounds` and its outcome reported by
:func:`accept_decompressed`; bytes that should be raw tensor data (or trailing data) are
scanned only when a strong, unambiguous magic number says they are something else
(:func:`scan_as_data`), so random float bytes never reach the protocol-0 pickle heuristic.
"""

from __future__ import annotations

import posixpath
import re

from weightgate.formats import compressed, detect
from weightgate.formats.compressed import Outcome
from weightgate.formats.detect import FileFormat
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Severity, rule

PATH_TRAVERSAL = rule(
    "archive.path-traversal",
    Severity.HIGH,
    "An archive member name escapes the extraction directory",
    "Names with '..' components, absolute paths or drive letters write outside the target "
    "directory when the archive is extracted. No model needs them: treat it as an attack.",
)
BACKSLASH_NAME = rule(
    "archive.backslash-name",
    Severity.LOW,
    "An archive member name uses backslashes as separators",
    "Some Windows tools write such names; extractors disagree on whether they are paths. "
    "Re-create the archive with forward slashes.",
)
LINK_ESCAPES = rule(
    "archive.link-escapes-root",
    Severity.HIGH,
    "A link member points outside the archive",
    "Extracting it creates a link to an arbitrary path (for example /etc or ~/.ssh), and "
    "later members can be written through it. Treat the archive as hostile.",
)
LINK_MEMBER = rule(
    "archive.link-member",
    Severity.MEDIUM,
    "The archive contains a symbolic or hard link",
    "Links inside model archives are unusual and change what extraction writes; the "
    "target was not followed. Re-create the archive without links.",
)
SPECIAL_MEMBER = rule(
    "archive.special-member",
    Severity.MEDIUM,
    "The archive contains a device or FIFO",
    "Extracting device nodes or FIFOs can hang or reach hardware; no model needs them.",
)
BOMB = rule(
    "archive.compression-bomb",
    Severity.MEDIUM,
    "A member decompresses to far more than its compressed size",
    "Decompression stopped early at the ratio given (limits.max_compression_ratio); the "
    "member was not scanned. Archives that expand like this are built to exhaust memory.",
)
TOO_MANY_MEMBERS = rule(
    "archive.too-many-members",
    Severity.MEDIUM,
    "The archive has more members than the configured limit",
    "Members past limits.max_archive_members were not scanned, so the verdict fails closed.",
)
MEMBER_TOO_LARGE = rule(
    "archive.member-too-large",
    Severity.MEDIUM,
    "A compressed member is larger than the configured limit",
    "It was not decompressed in full and not scanned (limits.max_member_bytes). Store "
    "large tensors uncompressed, or raise the limit.",
)
TOTAL_TOO_LARGE = rule(
    "archive.total-size-exceeded",
    Severity.MEDIUM,
    "Decompressed members add up to more than the configured limit",
    "The rest of the file was not scanned (limits.max_total_uncompressed_bytes).",
)
TRUNCATED = rule(
    "archive.truncated",
    Severity.MEDIUM,
    "Compressed or archived data ends early",
    "What was there was scanned; loaders read streams incrementally, so content before "
    "the cut still runs. Re-create the file.",
)
CORRUPT = rule(
    "archive.corrupt-member",
    Severity.MEDIUM,
    "A compressed member or stream cannot be decompressed",
    "The bytes before the error were scanned; the rest was not, so the verdict fails closed.",
)
UNSCANNABLE = rule(
    "archive.unscannable",
    Severity.MEDIUM,
    "An archive or member uses a method weightgate cannot open within bounds",
    "It was not scanned (for example zip methods other than stored, deflate, bzip2 and "
    "LZMA, sparse tar members, or 7z coders other than LZMA/LZMA2/copy), so the verdict "
    "fails closed. Re-create the archive with a common method.",
)
ENCRYPTED = rule(
    "archive.encrypted-member",
    Severity.LOW,
    "An encrypted member could not be scanned",
    "PyTorch, NumPy and Keras cannot load encrypted members, so it cannot be loaded as "
    "model content either; it was checked for recognisable plain content.",
)
TRAILING_DATA = rule(
    "archive.trailing-data",
    Severity.LOW,
    "Data follows the end of the archive or stream",
    "Most loaders ignore it; it was checked for recognisable content.",
)

LINK_TARGET_MAX = 4096
"""Most bytes of a link member read as its target."""

_DRIVE = re.compile(r"^[A-Za-z]:")
_STRONG_MAGICS = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x1f\x8b\x08",
    b"7z\xbc\xaf\x27\x1c",
    b"\xfd7zXZ\x00",
    b"\x93NUMPY",
    b"\x89HDF\r\n\x1a\n",
    b"GGUF",
)


def decompression_bounds(ctx: ScanContext) -> compressed.Bounds:
    """The bounds one decompression must stay within, given what the scan used so far."""
    limits = ctx.limits
    return compressed.Bounds(
        max_output=limits.max_member_bytes,
        budget=max(0, limits.max_total_uncompressed_bytes - ctx.budget.uncompressed_bytes),
        max_ratio=limits.max_compression_ratio,
        min_ratio_check=limits.min_bomb_check_bytes,
    )


def accept_decompressed(
    ctx: ScanContext, result: compressed.Decompressed, name: str, offset: int
) -> bytearray | None:
    """Account for a decompression and report how it ended; the bytes worth scanning."""
    ctx.budget.uncompressed_bytes += len(result.data)
    produced = len(result.data)
    if result.outcome is Outcome.RATIO:
        ctx.report(
            BOMB,
            f"expands beyond {ctx.limits.max_compression_ratio:.0f}:1 "
            f"({produced} bytes from {result.consumed}); stopped",
            offset=offset,
            evidence=name,
        )
    elif result.outcome is Outcome.SIZE:
        ctx.report(
            MEMBER_TOO_LARGE,
            f"decompresses to more than {ctx.limits.max_member_bytes} "
            "bytes (limits.max_member_bytes); stopped",
            offset=offset,
            evidence=name,
        )
    elif result.outcome is Outcome.BUDGET:
        ctx.report(
            TOTAL_TOO_LARGE,
            "decompressed data exceeds limits.max_total_uncompressed_bytes; stopped",
            offset=offset,
            evidence=name,
        )
    elif result.outcome is Outcome.TRUNCATED:
        ctx.report(
            TRUNCATED,
            f"compressed stream ends early (after {produced} bytes)",
            offset=offset,
            evidence=name,
        )
        return result.data
    elif result.outcome is Outcome.CORRUPT:
        ctx.report(
            CORRUPT,
            f"cannot decompress after {produced} bytes: {result.detail}",
            offset=offset,
            evidence=name,
        )
        return result.data
    else:
        return result.data
    return None


def check_trailing(ctx: ScanContext, data: memoryview, end: int) -> None:
    """Report and look at what follows the end of an archive or stream at ``end``."""
    # Zero padding (tar records, tape blocks) is normal; anything else is reported and
    # looked at from its first non-zero byte.
    start = compressed.first_nonzero(data, end)
    if start is not None:
        ctx.report(TRAILING_DATA, f"{len(data) - start} bytes after the end", offset=start)
        scan_as_data(ctx, data[start:], "<trailing>")


def check_member_name(ctx: ScanContext, name: str, offset: int | None) -> None:
    """Report a member name that escapes the extraction directory or uses backslashes."""
    path = name.replace("\\", "/")
    if "\x00" in name:
        problem = "contains a NUL byte"
    elif path.startswith("/"):
        problem = "is an absolute path"
    elif _DRIVE.match(path):
        problem = "starts with a drive letter"
    elif ".." in path.split("/"):
        problem = "has a '..' component"
    elif "\\" in name:
        ctx.report(BACKSLASH_NAME, "member name uses backslashes", offset=offset, evidence=name)
        return
    else:
        return
    ctx.report(PATH_TRAVERSAL, f"member name {problem}", offset=offset, evidence=name)


def check_link(
    ctx: ScanContext, name: str, target: bytes, offset: int | None, *, hard: bool
) -> None:
    """Report a link member, as escaping the archive when its target resolves outside it."""
    text = target.decode("utf-8", errors="replace").replace("\\", "/")
    kind = "hard link" if hard else "symbolic link"
    base = "" if hard else posixpath.dirname(name.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, text)) if text else "."
    escapes = (
        text.startswith("/")
        or bool(_DRIVE.match(text))
        or resolved == ".."
        or resolved.startswith(("../", "/"))
    )
    rule_ = LINK_ESCAPES if escapes else LINK_MEMBER
    ctx.report(rule_, f"{kind} to {text!r}", offset=offset, evidence=name)


def _has_strong_magic(data: memoryview | bytearray) -> bool:
    head = bytes(data[:512])
    if head.startswith(_STRONG_MAGICS):
        return True
    if (
        head[:3] == b"BZh"
        and head[3:4] in b"123456789"
        and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")
    ):
        return True
    if head[detect.TAR_MAGIC_OFFSET : detect.TAR_MAGIC_OFFSET + 6] in detect.TAR_MAGICS:
        return True
    # A binary pickle: PROTO 2-5 at the start and STOP at the end (4 in 65536 random
    # buffers start like a pickle; almost none also end with '.').
    return (
        len(head) >= 2
        and head[0] == detect.PICKLE_PROTO
        and 2 <= head[1] <= 5
        and (bytes(data[-1:]) == b".")
    )


def recognisable(data: memoryview | bytearray) -> bool:
    """True when the bytes are plainly some format, not ciphertext or noise."""
    if _has_strong_magic(data):
        return True
    fmt = detect.detect_format(data)
    if fmt is FileFormat.PICKLE:
        return bytes(data[:1]) != bytes([detect.PICKLE_PROTO])
    return fmt in (FileFormat.TEXT, FileFormat.JSON)


def scan_as_data(ctx: ScanContext, data: memoryview | bytearray, name: str) -> None:
    """Scan raw bytes only if a strong magic number says they are something else."""
    if _has_strong_magic(data):
        ctx.member(name).scan(data, name)
