"""Build GGUF files for tests: well-formed ones with gguf.GGUFWriter, broken ones by hand.

The hand assembler writes exactly the bytes it is told to, so tests can forge counts,
types, offsets and lengths that no writer would produce.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np

STRING = 8
ARRAY = 9
UINT32 = 4
UINT64 = 10


def write_with_gguf(
    path: Path,
    *,
    chat_template: str | Sequence[Mapping[str, str]] | None = None,
    strings: Mapping[str, str] | None = None,
    tensors: Mapping[str, np.ndarray[Any, Any]] | None = None,
    big_endian: bool = False,
) -> bytes:
    """Write a GGUF file with the reference writer and return its bytes."""
    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(path, "llama", endianess=endian)
    writer.add_uint32("llama.context_length", 2048)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "hello", "world"])
    writer.add_array("tokenizer.ggml.scores", [0.0, 0.0, -1.5, -2.5])
    for key, value in (strings or {}).items():
        writer.add_string(key, value)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if tensors is None:
        tensors = {
            "token_embd.weight": np.arange(32, dtype=np.float32).reshape(4, 8),
            "output_norm.weight": np.ones(8, dtype=np.float16),
        }
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def gguf_string(text: str | bytes, *, wide: bool = True) -> bytes:
    """A GGUF string: length (u64, or u32 in v1) then the bytes."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q" if wide else "<I", len(raw)) + raw


def kv(key: str, value_type: int, payload: bytes, *, wide: bool = True) -> bytes:
    """One key/value pair with a raw, already encoded payload."""
    return gguf_string(key, wide=wide) + struct.pack("<I", value_type) + payload


def kv_string(key: str, value: str, *, wide: bool = True) -> bytes:
    """A string-valued key/value pair."""
    return kv(key, STRING, gguf_string(value, wide=wide), wide=wide)


def kv_u32(key: str, value: int) -> bytes:
    """A u32-valued key/value pair."""
    return kv(key, UINT32, struct.pack("<I", value))


def string_array(items: Iterable[str], *, wide: bool = True) -> bytes:
    """An array payload of strings (item type, count, items)."""
    encoded = [gguf_string(item, wide=wide) for item in items]
    count = struct.pack("<Q" if wide else "<I", len(encoded))
    return struct.pack("<I", STRING) + count + b"".join(encoded)


def tensor_info(
    name: str, shape: Sequence[int], ggml_type: int, offset: int, *, wide: bool = True
) -> bytes:
    """One tensor info record."""
    dims = b"".join(struct.pack("<Q" if wide else "<I", d) for d in shape)
    return (
        gguf_string(name, wide=wide)
        + struct.pack("<I", len(shape))
        + dims
        + struct.pack("<IQ", ggml_type, offset)
    )


def assemble(
    kvs: Sequence[bytes],
    infos: Sequence[bytes] = (),
    data: bytes = b"",
    *,
    version: int = 3,
    tensor_count: int | None = None,
    kv_count: int | None = None,
    alignment: int = 32,
) -> bytes:
    """Header + key/values + tensor infos, padding to ``alignment``, then ``data``.

    ``tensor_count`` and ``kv_count`` default to the real counts; pass others to forge.
    """
    wide = version >= 2
    count = "<Q" if wide else "<I"
    head = (
        b"GGUF"
        + struct.pack("<I", version)
        + struct.pack(count, len(infos) if tensor_count is None else tensor_count)
        + struct.pack(count, len(kvs) if kv_count is None else kv_count)
    )
    body = head + b"".join(kvs) + b"".join(infos)
    if data or infos:
        body += b"\x00" * (-len(body) % alignment)
    return body + data
