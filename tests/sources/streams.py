"""What the source tests share: quick settings, and reading a file through `Source.open`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from weightgate.sources.base import Source, SourceSettings
from weightgate.sources.model import RemoteFile, ResolvedModel


def source_settings(tmp_path: Path, **overrides: Any) -> SourceSettings:
    """Settings for servers on loopback: 10 s timeout, one quick retry, cache in `tmp_path`."""
    values: dict[str, Any] = {"timeout": 10.0, "retries": 1, "backoff": 0.01}
    return SourceSettings(cache_dir=tmp_path / "cache", **(values | overrides))


def read(source: Source, model: ResolvedModel, file: RemoteFile | str, offset: int = 0) -> bytes:
    """All of `file` (or the file at that path) from `offset`, in one `open` (no retries)."""
    if isinstance(file, str):
        file = by_path(model)[file]
    with source.open(model, file, offset) as chunks:
        return b"".join(chunks)


def by_path(model: ResolvedModel) -> dict[str, RemoteFile]:
    """The model's files by path."""
    return {file.path: file for file in model.files}
