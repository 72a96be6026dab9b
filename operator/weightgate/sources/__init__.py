"""Model sources: resolve a reference to an immutable revision, fetch it once, verified.

    resolved = resolve("hf://org/name")            # pinned revision + file list, no content
    fetched = fetch(resolved)                       # every file in the cache, sha256-checked
    materialize(fetched, Path("/tmp/model"))        # a directory view to scan

Sources never import anything from Kubernetes; `pvc://` is a path under a mount point.
"""

from __future__ import annotations

from weightgate.errors import VerificationFailed
from weightgate.sources.base import DownloadProgress, Source, SourceSettings
from weightgate.sources.errors import (
    DigestMismatch,
    ModelTooLarge,
    NotFound,
    RevisionMoved,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    Unauthorized,
    UnsupportedReference,
    UntrustedCertificate,
)
from weightgate.sources.fetch import fetch_model, materialize
from weightgate.sources.model import FetchedFile, FetchedModel, RemoteFile, ResolvedModel
from weightgate.sources.registry import source_for


def resolve(reference: str, settings: SourceSettings | None = None) -> ResolvedModel:
    """Pin `reference` to an immutable revision and list its files."""
    return source_for(reference, settings or SourceSettings()).resolve(reference)


def fetch(
    reference: str | ResolvedModel,
    settings: SourceSettings | None = None,
) -> FetchedModel:
    """Resolve (unless already resolved) and fetch every file into the cache, verified."""
    settings = settings or SourceSettings()
    resolved = reference if isinstance(reference, ResolvedModel) else None
    source = source_for(resolved.reference if resolved else str(reference), settings)
    if resolved is None:
        resolved = source.resolve(str(reference))
    return fetch_model(resolved, source, settings)


__all__ = [
    "DigestMismatch",
    "DownloadProgress",
    "FetchedFile",
    "FetchedModel",
    "ModelTooLarge",
    "NotFound",
    "RemoteFile",
    "ResolvedModel",
    "RevisionMoved",
    "Source",
    "SourceError",
    "SourceSettings",
    "SourceTimeout",
    "SourceUnavailable",
    "TruncatedDownload",
    "Unauthorized",
    "UnsupportedReference",
    "UntrustedCertificate",
    "VerificationFailed",
    "fetch",
    "materialize",
    "resolve",
]
