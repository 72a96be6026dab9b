"""The interface every model source implements, and the settings they share."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from weightgate.sources.errors import ModelTooLarge
from weightgate.sources.model import RemoteFile, ResolvedModel

DownloadProgress = Callable[[str, int, int], None]
"""Called as (file path, bytes done, bytes total) while downloading (a model's files, or a
modelcar image's layers while it is resolved)."""


def default_cache_dir() -> Path:
    """`$WEIGHTGATE_CACHE/models`, else `${XDG_CACHE_HOME:-~/.cache}/weightgate/models`."""
    root = os.environ.get("WEIGHTGATE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "weightgate"
    )
    return Path(root) / "models"


class ProgressCounter:
    """Bytes done of `total`, told to a DownloadProgress (thread-safe; nothing without one)."""

    def __init__(self, callback: DownloadProgress | None, total: int) -> None:
        """Count towards `total` for `callback`."""
        self.callback = callback
        self.total = total
        self.done = 0
        self.lock = threading.Lock()

    def advance(self, path: str, count: int) -> None:
        """`count` more bytes done (fewer when negative: a restarted download), of `path`."""
        if self.callback is None:
            return
        with self.lock:
            self.done += count
            self.callback(path, self.done, self.total)


@dataclass(frozen=True)
class SourceSettings:
    """Network and size limits for resolving and fetching.

    Attributes:
        timeout: Seconds to wait for a connection or for the next bytes of a response.
        retries: Further attempts after a timeout, a dropped connection, a 5xx or a truncated
            body (never after 401/403/404 or a digest mismatch).
        backoff: Seconds before the first retry; doubled for each further one.
        max_model_bytes: Refuse models larger than this before downloading anything.
        cache_dir: Where verified blobs live (content-addressed by sha256).
        cache_max_bytes: Evict least-recently-used blobs beyond this size.
        ca_bundle: PEM file of CAs to trust for HTTPS sources, in addition to none: when set,
            it replaces the system store (as `REQUESTS_CA_BUNDLE` does for requests).
        progress: Told of every downloaded chunk (the CLI's progress bar), or None.
    """

    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    max_model_bytes: int = 256 * 1024**3
    cache_dir: Path = field(default_factory=default_cache_dir)
    cache_max_bytes: int = 512 * 1024**3
    ca_bundle: Path | None = None
    progress: DownloadProgress | None = field(default=None, compare=False, repr=False)

    def check_model_size(self, reference: str, total: int, files: int) -> None:
        """Raise ModelTooLarge when `total` bytes (in `files` files) exceed the limit."""
        if total > self.max_model_bytes:
            raise ModelTooLarge(
                f"{reference}: {total} bytes in {files} files is more than the limit of "
                f"{self.max_model_bytes} bytes; nothing was downloaded (raise the limit with "
                "--max-model-size if this model is expected)"
            )


class Source(Protocol):
    """Resolves references of some URI schemes and streams the files of a resolved model.

    Implementations raise only :mod:`weightgate.sources.errors` exceptions, translated from
    their client library's, with the reference in the message.
    """

    schemes: ClassVar[tuple[str, ...]]

    def resolve(self, reference: str) -> ResolvedModel:
        """Pin `reference` to an immutable revision and list its files (no file content)."""
        ...

    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> AbstractContextManager[Iterator[bytes]]:
        """Stream `file`'s bytes from `offset` on (a resumed download), in chunks.

        One attempt: the fetcher retries the whole download (resuming from what it has), so
        a source never retries here. Raises RevisionMoved when the source can tell the file
        is no longer the pinned one (ETag/version precondition failed).
        """
        ...
