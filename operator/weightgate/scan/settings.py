"""Scan settings: explicit, frozen, with a default and a reason for every field."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace

from weightgate.formats.limits import KiB, Limits
from weightgate.scan.findings import Severity

__all__ = ["Limits", "ScanSettings", "limits_with", "settings_from_policy"]


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

    weight_stats: bool = True
    """After the files, read every safetensors and GGUF weight once more for the weight
    statistics (NaN/Inf, family outliers; :mod:`weightgate.scan.weights`), reported below
    the default gate. Off skips that pass, which costs more than hashing does."""

    chunk_bytes: int = 128 * KiB
    """Read size for hashing. Small enough that each chunk is hashed while it is still in
    the CPU cache: 4 MiB chunks made one large file a third slower than openssl."""


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
