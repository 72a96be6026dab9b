"""Scan settings: explicit, frozen, with a default and a reason for every field.

Every size or count a reader takes from a file is checked against one of these limits
before anything is allocated, so hostile files end in a finding, not in memory growth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace

from weightgate.scan.findings import Severity

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


@dataclass(frozen=True)
class ScanSettings:
    """Everything a scan needs to know, passed explicitly."""

    limits: Limits = field(default_factory=Limits)
    """Bounds on parsing; see :class:`Limits`."""

    fail_on: Severity = Severity.MEDIUM
    """The gate fails when any finding is at or above this severity."""

    allowed_globals: frozenset[str] = frozenset()
    """Pickle globals allowed on top of the built-in allowlist, as ``module.name`` or
    ``module.*`` (every name in that module and its submodules). A policy extends this,
    for example with ``sklearn.*``; the dangerous list still wins."""

    jobs: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    """Files scanned at once. Hashing releases the GIL, so each job keeps a core busy."""

    chunk_bytes: int = 4 * MiB
    """Read size for hashing; bounds the memory used per job."""


def limits_with(limits: Limits, overrides: dict[str, str]) -> Limits:
    """A copy of ``limits`` with fields replaced from ``name -> text`` pairs.

    Raises:
        ValueError: An unknown field, or a value that is not a positive number.
    """
    changes: dict[str, int | float] = {}
    known = {f.name: f.type for f in fields(Limits)}
    for name, text in overrides.items():
        if name not in known:
            raise ValueError(f"unknown limit {name!r} (known: {', '.join(sorted(known))})")
        try:
            value: int | float = float(text) if known[name] == "float" else int(text, 0)
        except ValueError:
            raise ValueError(f"limit {name} must be a number, not {text!r}") from None
        if value <= 0:
            raise ValueError(f"limit {name} must be positive, not {text!r}")
        changes[name] = value
    return replace(limits, **changes)  # type: ignore[arg-type]


def settings_from_policy(document: object, base: ScanSettings) -> ScanSettings:
    """Apply the scan part of a policy document to ``base``.

    Accepts a ``ModelPolicy`` manifest (its ``spec.scan``) or a bare mapping with the same
    keys: ``failOn`` (a severity), ``allowGlobals`` (list of ``module.name`` or
    ``module.*``) and ``limits`` (field name -> number).

    Raises:
        ValueError: The document does not have that shape.
    """
    if not isinstance(document, dict):
        raise ValueError("policy must be a mapping")
    if document.get("kind") == "ModelPolicy":
        spec = document.get("spec") or {}
        document = spec.get("scan") or {} if isinstance(spec, dict) else None
        if not isinstance(document, dict):
            raise ValueError("ModelPolicy spec.scan must be a mapping")
    unknown = set(document) - {"failOn", "allowGlobals", "limits"}
    if unknown:
        raise ValueError(f"unknown policy keys: {', '.join(sorted(unknown))}")
    settings = base
    if "failOn" in document:
        settings = replace(settings, fail_on=Severity.parse(str(document["failOn"])))
    if "allowGlobals" in document:
        allowed = document["allowGlobals"]
        if not isinstance(allowed, list) or not all(isinstance(g, str) for g in allowed):
            raise ValueError("allowGlobals must be a list of strings")
        settings = replace(settings, allowed_globals=settings.allowed_globals | set(allowed))
    if "limits" in document:
        limits = document["limits"]
        if not isinstance(limits, dict):
            raise ValueError("limits must be a mapping of limit name to number")
        overrides = {str(k): str(v) for k, v in limits.items()}
        settings = replace(settings, limits=limits_with(settings.limits, overrides))
    return settings
