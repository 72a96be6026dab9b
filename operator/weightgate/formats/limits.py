"""Hard bounds on what the readers parse, allocate or descend into.

Every size or count a reader takes from a file is checked against one of these limits
before anything is allocated, so hostile files end in a finding, not in memory growth.
The dataclass lives with the readers (the lowest layer) so they can take it directly;
:mod:`weightgate.scan.settings` carries it in the scan settings.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Hard bounds on what a scan will parse, allocate or descend into."""

    max_archive_depth: int = 4
    """Archives nested deeper than this (zip in tar in gzip ...) are not opened."""

    max_archive_members: int = 100_000
    """Members of one archive; more is reported as an archive bomb."""

    max_total_uncompressed_bytes: int = 64 * GiB
    """Bytes produced by decompression across one top-level file, all levels added up."""

    max_member_bytes: int = 512 * MiB
    """Largest compressed member that is decompressed into memory for scanning."""

    max_compression_ratio: float = 250.0
    """Uncompressed/compressed ratio above which a member counts as a bomb (zip's deflate
    tops out near 1030:1; real weights rarely pass 20:1)."""

    min_bomb_check_bytes: int = 16 * MiB
    """Members smaller than this are never reported for their ratio alone."""

    max_pickle_opcodes: int = 5_000_000
    """Opcodes executed by the static pickle walk, for all pickles of one stream."""

    max_pickle_memo_entries: int = 1_000_000
    """Distinct memo slots a pickle may fill."""

    max_pickle_stack_items: int = 1_000_000
    """Items on the emulated pickle stack (including marked frames)."""

    max_nested_pickle_depth: int = 3
    """Pickles embedded in pickle strings (raw, hex or base64) are scanned this deep."""

    max_header_bytes: int = 100 * MiB
    """safetensors JSON header, GGUF metadata and similar headers (safetensors' own cap)."""

    max_metadata_entries: int = 1_000_000
    """Key/value pairs, tensors or dictionary entries in one header."""

    max_string_bytes: int = 64 * MiB
    """One string or byte array read from a header."""

    max_array_items: int = 50_000_000
    """Items of one array in a header (GGUF token lists run to a few hundred thousand)."""

    max_protobuf_fields: int = 20_000_000
    """Fields walked in one protobuf message tree (ONNX, SavedModel); a 1 GB model with
    embedded weights has far fewer, since tensor payloads are one field each."""

    max_json_bytes: int = 64 * MiB
    """Configuration files (config.json, tokenizer_config.json) parsed as JSON or YAML."""

    max_template_bytes: int = 1 * MiB
    """Chat templates larger than this are not analysed and are reported."""

    max_files: int = 1_000_000
    """Files in one scanned directory tree."""
