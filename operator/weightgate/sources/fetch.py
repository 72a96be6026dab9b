"""Fetching a resolved model into the content-addressed cache (being written: see cache.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from weightgate.sources.base import Source, SourceSettings
from weightgate.sources.model import FetchedModel, ResolvedModel

DownloadProgress = Callable[[str, int, int], None]
"""Called as (file path, bytes done, bytes total of the model) while downloading."""


def fetch_model(
    model: ResolvedModel,
    source: Source,
    settings: SourceSettings,
    progress: DownloadProgress | None = None,
) -> FetchedModel:
    """Fetch every file of `model` into the cache, verified."""
    raise NotImplementedError


def materialize(model: FetchedModel, directory: Path) -> Path:
    """Lay out `model`'s files under `directory` (hard links to the cache's blobs)."""
    raise NotImplementedError
