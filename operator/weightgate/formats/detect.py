"""Format detection from content, never from the file name.

The name is only used afterwards, to report names that disagree with the content (a
pickle called ``model.safetensors``), and to tell apart the few formats that have no
magic number at all (ONNX and TensorFlow protobufs).
"""

from __future__ import annotations

import enum
import json
import mmap
import struct
import tarfile
from pathlib import PurePosixPath
from typing import Any, cast

BytesLike = bytes | bytearray | memoryview | mmap.mmap
"""Anything the readers accept; they wrap it in a memoryview and never copy it whole."""


class FileFormat(enum.Enum):
    """What a file is, judged by its bytes."""

    PICKLE = "pickle"
    ZIP = "zip"
    TAR = "tar"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    SEVENZIP = "7z"
    SAFETENSORS = "safetensors"
    GGUF = "gguf"
    NUMPY = "npy"
    HDF5 = "hdf5"
    ONNX = "onnx"
    SAVEDMODEL = "tf-savedmodel"
    KERAS_METADATA = "keras-metadata"
    JSON = "json"
    TEXT = "text"
    EMPTY = "empty"
    UNKNOWN = "unknown"


ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
SEVENZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
NUMPY_MAGIC = b"\x93NUMPY"
GGUF_MAGIC = b"GGUF"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TAR_MAGIC_OFFSET = 257
TAR_MAGICS = (b"ustar\x00", b"ustar ")
PICKLE_PROTO = 0x80
EOCD_SIGNATURE = b"PK\x05\x06"

# Opcodes a protocol 0/1 pickle can start with. Text files share this alphabet, so such a
# file is only a *candidate*: the pickle scanner decides by walking it.
_PICKLE_TEXT_FIRST_OPCODES = frozenset(b"(.0123FIJKLMNPQRSTUVXabcdeghijlopqrstu}])G")

HEAD_BYTES = 4096
"""How much of the start of a file :func:`detect_format` needs to see."""


def detect_format(content: BytesLike, name: str = "") -> FileFormat:
    """Classify a file from its bytes.

    Only the first :data:`HEAD_BYTES` bytes are read, plus the few fixed offsets where an
    HDF5 superblock may sit after a user block.

    Args:
        content: The whole file (a memoryview over an mmap is not copied).
        name: File name, consulted only for protobuf formats that have no magic number.
    """
    view = memoryview(content)
    size = len(view)
    data = bytes(view[:HEAD_BYTES])
    if size == 0:
        return FileFormat.EMPTY
    if data.startswith(ZIP_MAGICS):
        return FileFormat.ZIP
    if data.startswith(GZIP_MAGIC):
        return FileFormat.GZIP
    if data.startswith(SEVENZIP_MAGIC):
        return FileFormat.SEVENZIP
    if data.startswith(XZ_MAGIC):
        return FileFormat.XZ
    if data.startswith(BZIP2_MAGIC) and len(data) >= 4 and data[3:4] in b"123456789":
        return FileFormat.BZIP2
    if data.startswith(NUMPY_MAGIC):
        return FileFormat.NUMPY
    if data.startswith(GGUF_MAGIC):
        return FileFormat.GGUF
    if _hdf5_superblock_offset(view) is not None:
        return FileFormat.HDF5
    if data[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + 6] in TAR_MAGICS or is_tar_header(data):
        return FileFormat.TAR
    if _looks_like_safetensors(data, size):
        return FileFormat.SAFETENSORS
    if len(data) >= 2 and data[0] == PICKLE_PROTO and data[1] <= 5:
        return FileFormat.PICKLE
    protobuf = _protobuf_format(data, name)
    if protobuf is not None:
        return protobuf
    text = _text_format(data, truncated=size > len(data))
    if text is not None:
        return text
    if data[0] in _PICKLE_TEXT_FIRST_OPCODES:
        return FileFormat.PICKLE
    return FileFormat.UNKNOWN


_EOCD_SIZE = 22
_CENTRAL_SIGNATURE = b"PK\x01\x02"


def ends_with_zip_directory(content: BytesLike) -> bool:
    """True when the content ends like a zip archive, whatever it starts like.

    zipfile-based loaders (Keras, NumPy's npz, many custom ones) find an archive from its
    end-of-central-directory record, so a pickle or safetensors file with a zip appended
    is also a zip to them. The record must end the file exactly (its comment reaching
    EOF) and point back at a central directory record, so stray bytes never match.
    """
    view = memoryview(content)
    size = len(view)
    start = max(0, size - (0xFFFF + _EOCD_SIZE))
    tail = bytes(view[start:])
    pos = tail.rfind(EOCD_SIGNATURE)
    while pos >= 0:
        eocd = start + pos
        if eocd + _EOCD_SIZE <= size:
            cd_size, _cd_offset, comment = struct.unpack_from("<IIH", view, eocd + 12)
            cd_start = eocd - cd_size
            if (
                eocd + _EOCD_SIZE + comment == size
                and cd_size >= 46
                and cd_start >= 0
                and view[cd_start : cd_start + 4] == _CENTRAL_SIGNATURE
            ):
                return True
        pos = tail.rfind(EOCD_SIGNATURE, 0, pos)
    return False


def is_tar_header(head: bytes) -> bool:
    """Whether ``head`` starts with a header block that :mod:`tarfile` accepts.

    tarfile needs no ``ustar`` magic: an old-style (v7) header with a valid checksum is a
    member. ``torch.load`` tries ``tarfile.open(mode="r:")`` before unpickling, so such a
    file is a legacy checkpoint to torch however its first member's name makes it look.
    """
    if len(head) < tarfile.BLOCKSIZE:
        return False
    block = head[: tarfile.BLOCKSIZE]
    if not block.strip(b"\0"):
        return False  # an end-of-archive block: tarfile refuses it as a first header
    module = cast(Any, tarfile)  # nti and calc_chksums are not in the type stubs
    try:
        checksum = module.nti(block[148:156])
    except (tarfile.TarError, ValueError):
        return False
    return bool(checksum in module.calc_chksums(block))


def _hdf5_superblock_offset(view: memoryview) -> int | None:
    # libhdf5 looks for the superblock at 0, then 512, 1024, 2048, ... (after a user
    # block), so a Keras .h5 with a user block loads; it must not escape detection.
    offset = 0
    while offset + len(HDF5_MAGIC) <= len(view):
        if view[offset : offset + len(HDF5_MAGIC)] == HDF5_MAGIC:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def _looks_like_safetensors(data: bytes, size: int) -> bool:
    # 8-byte little-endian header length, then a JSON object. The length itself is
    # checked by the reader; here a '{' after it is enough to route the file there, so
    # that an absurd length becomes a finding instead of "unknown format".
    if len(data) < 9 or data[8:9] != b"{":
        return False
    # A JSON or text file can have '{' as its ninth byte, but its first eight bytes are
    # then printable, which as a length would mean more than 2 EiB of header.
    if all(0x20 <= b < 0x7F for b in data[:8]):
        return False
    header_len: int = struct.unpack_from("<Q", data)[0]
    if data[0] == PICKLE_PROTO and data[1] <= 5:
        # A header length of 128, 384, ... starts like a pickle's PROTO opcode. 0x00 is
        # no opcode, so a zero third byte (any header under 64 KiB) rules the pickle out;
        # otherwise only a length that fits the file makes it safetensors.
        return data[2] == 0 or 2 <= header_len <= size - 8
    return header_len > 1 or size > 9


def _protobuf_format(data: bytes, name: str) -> FileFormat | None:
    base = PurePosixPath(name).name.lower()
    if base == "saved_model.pb":
        return FileFormat.SAVEDMODEL
    if base == "keras_metadata.pb":
        return FileFormat.KERAS_METADATA
    # ONNX ModelProto starts with field 1 (ir_version, a small varint): tag 0x08.
    if base.endswith(".onnx") or (len(data) >= 3 and data[0] == 0x08 and 1 <= data[1] <= 30):
        return FileFormat.ONNX
    return None


def _text_format(data: bytes, truncated: bool) -> FileFormat | None:
    if _wide_json(data):
        return FileFormat.JSON
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A head cut from a longer file may end inside a multi-byte character.
        if not (truncated and exc.reason == "unexpected end of data"):
            return None
        text = data[: exc.start].decode("utf-8")
    if any(ch in text for ch in "\x00\x01\x02\x03\x04\x05\x06\x07\x0e\x0f\x10\x11\x12"):
        return None
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(("{", "[")):
        return FileFormat.JSON
    if data[0] in _PICKLE_TEXT_FIRST_OPCODES:
        # Protocol 0 pickles are printable text too; the pickle scanner tells them apart
        # and hands real text back as TEXT.
        return FileFormat.PICKLE
    return FileFormat.TEXT


def _wide_json(data: bytes) -> bool:
    # json.loads (and so Keras reading config.json) accepts UTF-16 and UTF-32 by their
    # BOM or zero-byte pattern; such a file must reach the JSON checks too.
    encoding = json.detect_encoding(data)
    if encoding in ("utf-8", "utf-8-sig"):
        return False
    width = 4 if encoding.startswith("utf-32") else 2
    sample = data[: len(data) - len(data) % width]
    try:
        text = sample.decode(encoding)
    except UnicodeDecodeError:
        return False
    return text.lstrip("\ufeff \t\r\n").startswith(("{", "["))


# What each name claims. A name missing here claims nothing. Names are matched by their
# last suffix (".bin"), or by the full name for formats with fixed names.
_CLAIMS: dict[str, frozenset[FileFormat]] = {
    ".safetensors": frozenset({FileFormat.SAFETENSORS}),
    ".gguf": frozenset({FileFormat.GGUF}),
    ".npy": frozenset({FileFormat.NUMPY}),
    ".npz": frozenset({FileFormat.ZIP}),
    ".h5": frozenset({FileFormat.HDF5}),
    ".hdf5": frozenset({FileFormat.HDF5}),
    ".keras": frozenset({FileFormat.ZIP}),
    ".onnx": frozenset({FileFormat.ONNX}),
    ".json": frozenset({FileFormat.JSON}),
    ".zip": frozenset({FileFormat.ZIP}),
    ".tar": frozenset({FileFormat.TAR}),
    ".gz": frozenset({FileFormat.GZIP}),
    ".tgz": frozenset({FileFormat.GZIP}),
    ".7z": frozenset({FileFormat.SEVENZIP}),
    ".pkl": frozenset({FileFormat.PICKLE}),
    ".pickle": frozenset({FileFormat.PICKLE}),
    ".joblib": frozenset({FileFormat.PICKLE, FileFormat.ZIP, FileFormat.GZIP}),
    ".dill": frozenset({FileFormat.PICKLE}),
    ".pt": frozenset({FileFormat.PICKLE, FileFormat.ZIP, FileFormat.TAR}),
    ".pth": frozenset({FileFormat.PICKLE, FileFormat.ZIP, FileFormat.TAR}),
    ".ckpt": frozenset({FileFormat.PICKLE, FileFormat.ZIP, FileFormat.TAR}),
}

# Formats that cannot carry code; a name claiming one of them for content that can is a
# disguise, not an accident.
CODE_FREE_FORMATS = frozenset(
    {
        FileFormat.SAFETENSORS,
        FileFormat.GGUF,
        FileFormat.NUMPY,
        FileFormat.ONNX,
        FileFormat.JSON,
    }
)

# Formats whose content can run code when loaded by the usual tools.
CODE_CARRYING_FORMATS = frozenset({FileFormat.PICKLE})


# Formats whose readers can say precisely why unrecognisable content is not valid: when
# the name claims one of them alone, the content goes to that reader (a truncated
# download named model.safetensors is a broken safetensors file, not "unknown").
VERIFIABLE_CLAIMS = frozenset(
    {FileFormat.SAFETENSORS, FileFormat.GGUF, FileFormat.NUMPY, FileFormat.HDF5}
)


def claimed_formats(name: str) -> frozenset[FileFormat] | None:
    """The formats a file name claims, or None if the name claims nothing."""
    suffix = PurePosixPath(name).suffix.lower()
    return _CLAIMS.get(suffix)
