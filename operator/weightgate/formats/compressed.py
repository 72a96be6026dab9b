"""Bounded decompression: inflate into memory, never past a cap, and stop bombs early.

The standard library decompressors (zlib, bz2, lzma) can stop at ``max_length`` bytes of
output per call, but nothing stops a caller from looping until a 1000:1 stream has filled
memory. :func:`decompress` feeds them small input chunks and, after every step, checks the
output against a size cap and against the ratio of output to input consumed so far. A bomb
is therefore recognised after about ``Bounds.min_ratio_check`` bytes of output, whatever
sizes its headers declare, and a stream is never inflated past ``Bounds.max_output``.

Also here: :class:`ViewReader`, a read-only file object over a memoryview, so that stdlib
``tarfile`` and ``py7zr`` can parse a mapped file without a whole copy; it refuses single
reads larger than a cap, because those libraries only read headers through it.
"""

from __future__ import annotations

import bz2
import enum
import io
import lzma
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from weightgate.errors import FormatError, LimitExceeded

INPUT_CHUNK = 64 * 1024
"""Compressed bytes fed per step: small, so the ratio is checked often."""

OUTPUT_STEP = 1024 * 1024
"""Largest output a single decompressor call may produce."""

_ZERO_CHUNK = 1024 * 1024


class Codec(enum.Enum):
    """Compressed stream formats :func:`decompress` understands."""

    DEFLATE = "deflate"
    """Raw deflate, as in zip method 8."""
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"


class Outcome(enum.Enum):
    """Why :func:`decompress` stopped."""

    COMPLETE = "complete"
    """The stream ended (or produced its declared size)."""
    RATIO = "ratio"
    """Output outgrew ``max_ratio`` times the input consumed: a bomb; stopped early."""
    SIZE = "size"
    """Output would exceed ``max_output``; stopped."""
    BUDGET = "budget"
    """Output would exceed ``budget`` (bytes left for the whole scan); stopped."""
    TRUNCATED = "truncated"
    """The input ended before the stream did."""
    CORRUPT = "corrupt"
    """The decompressor rejected the input."""


@dataclass(frozen=True)
class Bounds:
    """Limits for one decompression.

    Attributes:
        max_output: Most bytes the stream may produce.
        budget: Bytes left in the scan-wide decompression budget.
        max_ratio: Output/input ratio that marks a bomb.
        min_ratio_check: Output below this size is never judged by its ratio.
    """

    max_output: int
    budget: int
    max_ratio: float
    min_ratio_check: int


@dataclass
class Decompressed:
    """What :func:`decompress` produced.

    Attributes:
        data: The output (partial unless ``outcome`` is COMPLETE).
        outcome: Why decompression stopped.
        consumed: Input bytes consumed (up to the end of the last stream when complete).
        crc32: CRC-32 of ``data``.
        detail: The decompressor's message when ``outcome`` is CORRUPT.
    """

    data: bytearray
    outcome: Outcome
    consumed: int
    crc32: int
    detail: str = ""


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes | memoryview, max_length: int = ...) -> bytes: ...


DecompressorFactory = Callable[[], _Decompressor]
"""Makes a fresh decompressor (zlib, bz2 and lzma objects all fit)."""

_STREAM_MAGICS = {
    Codec.GZIP: b"\x1f\x8b",
    Codec.BZIP2: b"BZh",
    Codec.XZ: b"\xfd7zXZ\x00",
}


def _factory(codec: Codec, memlimit: int) -> DecompressorFactory:
    if codec is Codec.DEFLATE:
        return lambda: zlib.decompressobj(-zlib.MAX_WBITS)
    if codec is Codec.GZIP:
        return lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
    if codec is Codec.BZIP2:
        return bz2.BZ2Decompressor
    # liblzma allocates the dictionary the stream asks for; the xz container lets us cap it.
    return lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=max(memlimit, 1 << 24))


def zip_lzma_factory(header: memoryview) -> tuple[int, DecompressorFactory]:
    """Decoder for zip method 14 (LZMA), from the 9-byte header that starts its data.

    Returns:
        The header length (where the raw LZMA stream starts) and a decompressor factory.

    Raises:
        FormatError: The header is not a valid LZMA properties block.
    """
    if len(header) < 4:
        raise FormatError("LZMA member shorter than its header", 0)
    (props_len,) = struct.unpack_from("<H", header, 2)
    if props_len != 5 or len(header) < 9:
        raise FormatError(f"LZMA properties of {props_len} bytes (expected 5)", 2)
    lclppb = header[4]
    (dict_size,) = struct.unpack_from("<I", header, 5)
    lc, lp, pb = lclppb % 9, (lclppb // 9) % 5, lclppb // 45
    if lclppb >= 9 * 5 * 5 or lc + lp > 4:
        raise FormatError(f"invalid LZMA properties byte 0x{lclppb:02x}", 4)
    filters = [
        {
            "id": lzma.FILTER_LZMA1,
            "dict_size": max(dict_size, 4096),
            "lc": lc,
            "lp": lp,
            "pb": pb,
        }
    ]
    return 9, lambda: lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)


def decompress(
    source: memoryview,
    codec: Codec | DecompressorFactory,
    bounds: Bounds,
    *,
    multi_stream: bool = False,
    exact_size: int | None = None,
) -> Decompressed:
    """Decompress ``source`` into memory within ``bounds``.

    Args:
        source: The compressed bytes (a slice of the mapped file; not copied whole).
        codec: A known codec, or a factory of decompressor objects (zip's LZMA).
        bounds: Caps on output size and ratio.
        multi_stream: Continue with a new decompressor when another stream of the same
            codec follows (gzip, bzip2 and xz files may be concatenations).
        exact_size: Stop as complete once this many bytes were produced (streams without
            an end marker, such as zip LZMA members without the EOS flag).

    Returns:
        The output and why it stopped. ``consumed`` tells where trailing data starts.
    """
    factory = _factory(codec, bounds.max_output) if isinstance(codec, Codec) else codec
    out = bytearray()
    crc = 0
    pos = 0
    dec = factory()
    pending: bytes | memoryview = b""
    full_step = False
    cap = min(bounds.max_output, bounds.budget)
    while True:
        if dec.eof:
            end = pos - len(dec.unused_data) - len(getattr(dec, "unconsumed_tail", b""))
            following = _next_stream(source, end, codec) if multi_stream else None
            if following is not None:
                dec, pos, pending = factory(), following, b""
                continue
            return Decompressed(out, Outcome.COMPLETE, end, crc)
        if exact_size is not None and len(out) >= exact_size:
            return Decompressed(out, Outcome.COMPLETE, pos, crc)
        zlib_style = hasattr(dec, "unconsumed_tail")
        if zlib_style:
            tail = dec.unconsumed_tail  # type: ignore[attr-defined]
            need_input = not tail and not full_step
            pending = tail
        else:
            need_input = dec.needs_input  # type: ignore[attr-defined]
            pending = b""
        if need_input:
            if pos >= len(source):
                return Decompressed(out, Outcome.TRUNCATED, pos, crc)
            pending = source[pos : pos + INPUT_CHUNK]
            pos += len(pending)
        step = min(OUTPUT_STEP, cap - len(out) + 1)
        try:
            chunk = dec.decompress(pending, step)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError, MemoryError) as exc:
            return Decompressed(out, Outcome.CORRUPT, pos, crc, f"{type(exc).__name__}: {exc}")
        stuck = (
            not chunk
            and not dec.eof
            and (
                (zlib_style and len(pending) > 0 and len(dec.unconsumed_tail) == len(pending))  # type: ignore[attr-defined]
                or (not zlib_style and not need_input and not dec.needs_input)  # type: ignore[attr-defined]
            )
        )
        if stuck:  # no output and no input taken: never loop on a confused decoder
            return Decompressed(out, Outcome.CORRUPT, pos, crc, "decompressor made no progress")
        full_step = len(chunk) == step
        out += chunk
        crc = zlib.crc32(chunk, crc)
        if len(out) > cap:
            outcome = Outcome.SIZE if bounds.max_output <= bounds.budget else Outcome.BUDGET
            del out[cap:]
            return Decompressed(out, outcome, pos, crc)
        consumed = pos - len(getattr(dec, "unconsumed_tail", b""))
        if len(out) > bounds.min_ratio_check and len(out) > bounds.max_ratio * max(consumed, 1):
            return Decompressed(out, Outcome.RATIO, consumed, crc)


def _next_stream(source: memoryview, end: int, codec: Codec | DecompressorFactory) -> int | None:
    """Where the next concatenated stream of ``codec`` starts after ``end``, if one does."""
    magic = _STREAM_MAGICS.get(codec) if isinstance(codec, Codec) else None
    if magic is None:
        return None
    if codec is Codec.GZIP:
        # Python's gzip module skips zero bytes between members (gzip FAQ 8), so a member
        # after padding is part of what gzip.open returns, not trailing data.
        start = first_nonzero(source, end)
        return start if start is not None and _starts_with(source, start, magic) else None
    return end if _starts_with(source, end, magic) else None


def _starts_with(source: memoryview, offset: int, magic: bytes) -> bool:
    return bytes(source[offset : offset + len(magic)]) == magic


def first_nonzero(source: memoryview, start: int = 0) -> int | None:
    """Offset of the first non-zero byte at or after ``start``, or None (zero padding)."""
    for offset in range(start, len(source), _ZERO_CHUNK):
        chunk = bytes(source[offset : offset + _ZERO_CHUNK])
        stripped = chunk.lstrip(b"\0")
        if stripped:
            return offset + len(chunk) - len(stripped)
    return None


class ViewReader(io.RawIOBase):
    """A read-only, seekable file object over a memoryview.

    Args:
        view: The bytes to expose (not copied).
        max_read: Largest single ``read``; larger requests raise :class:`LimitExceeded`.
            Parsers such as ``tarfile`` read whole headers in one call, so this bounds
            what a hostile header can make them allocate.
    """

    def __init__(self, view: memoryview, max_read: int) -> None:
        super().__init__()
        self._view = view
        self._pos = 0
        self._max_read = max_read

    def readable(self) -> bool:
        """Always True."""
        return True

    def close(self) -> None:
        """Drop the view, so the mapped file it comes from can be closed."""
        self._view = memoryview(b"")
        super().close()

    def seekable(self) -> bool:
        """Always True."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position, as :meth:`io.IOBase.seek`."""
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = len(self._view) + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all the rest when negative), within ``max_read``."""
        remaining = max(0, len(self._view) - self._pos)
        count = remaining if size is None or size < 0 else min(size, remaining)
        if count > self._max_read:
            raise LimitExceeded(
                f"a single header read of {count} bytes exceeds the limit of "
                f"{self._max_read} bytes",
                self._pos,
            )
        data = bytes(self._view[self._pos : self._pos + count])
        self._pos += count
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """Read up to and including the next newline, looking at most ``max_read`` ahead."""
        limit = self._max_read if size is None or size < 0 else min(size, self._max_read)
        window = bytes(self._view[self._pos : self._pos + limit])
        end = window.find(b"\n")
        data = window if end < 0 else window[: end + 1]
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Read into ``buffer``; used by ``io.BufferedReader``."""
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)


class ArchiveBomb(LimitExceeded):
    """Declared or observed sizes show a decompression bomb."""


class BudgetExceeded(LimitExceeded):
    """Decompressing would exceed the scan-wide budget of uncompressed bytes."""


class Unscannable(FormatError):
    """The archive is valid but cannot be opened within bounds (coder, encryption)."""
