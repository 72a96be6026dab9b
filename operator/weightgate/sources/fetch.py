"""Fetching a resolved model into the content-addressed cache, and laying it out as a directory.

Each file is streamed once from its source: written to a partial file and hashed in the same
pass (1 MiB chunks, no second read), checked against the announced size and, when the source
vouches for one, the sha256, then committed as a read-only blob (see :mod:`.cache`, also for
how blobs survive a crash without waiting for the disk). Files of one model download in
parallel (a few threads: hashing and writing release the GIL). Only one thread or process
downloads a given file; the others wait on its lock and find the blob.

A download that fails part-way keeps its partial file; the retries (:func:`.retry.with_retries`)
and later fetches resume from its length. Bytes beyond the announced size, or a wrong digest,
delete the partial: those bytes can never become the blob.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from weightgate.errors import VerificationFailed
from weightgate.sources.base import ProgressCounter, Source, SourceSettings
from weightgate.sources.cache import ModelCache, PartialDownload, file_key, identifies_content
from weightgate.sources.errors import (
    DigestMismatch,
    SourceError,
    TruncatedDownload,
    not_the_file,
)
from weightgate.sources.model import FetchedFile, FetchedModel, RemoteFile, ResolvedModel
from weightgate.sources.paths import safe_relative_path
from weightgate.sources.retry import with_retries


def _parallel_files() -> int:
    """Files downloaded at a time: 2 to 4, no more than the CPUs this process may use.

    Several streams hide a remote server's latency; past the CPU count they only compete for
    the cores that decrypt and hash (on 2 cores, 4 streams fetched 10% slower than 2).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(2, min(4, cpus))


PARALLEL_FILES = _parallel_files()
_COPY_INSTEAD_OF_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP)


class _Cancelled(Exception):
    """Another file of the model failed: stop this one (its partial stays for later)."""


class _Fetch:
    """One fetch_model call: its model, source, cache and shared state between threads."""

    def __init__(
        self,
        model: ResolvedModel,
        source: Source,
        settings: SourceSettings,
        progress: ProgressCounter,
    ) -> None:
        self.model = model
        self.source = source
        self.settings = settings
        self.progress = progress
        self.cache = ModelCache(settings.cache_dir)
        self.cancelled = threading.Event()
        self.keep = {file.sha256 for file in model.files if file.sha256}  # never evicted
        self.keep_lock = threading.Lock()

    def file(self, file: RemoteFile) -> FetchedFile:
        """Find `file` in the cache or download it; the blob is marked used."""
        try:
            sha256 = self._cached_or_downloaded(file)
        except OSError as error:
            raise SourceError(
                f"{self.model.reference}: {file.path}: cache {self.cache.root}: {error}"
            ) from error
        return FetchedFile(file.path, file.size, sha256, self.cache.blob(sha256))

    def _cached_or_downloaded(self, file: RemoteFile) -> str:
        key = file_key(self.model, file)
        trusted = identifies_content(self.model, file)
        sha256 = self.cache.lookup(key, file, None) if trusted else None
        if sha256 is not None:
            self.progress.advance(file.path, file.size)
            self._keep(sha256)
            return sha256
        waiting_since = time.time()
        with self.cache.locked(key) as lock:
            assert lock is not None
            # Whoever held the lock before us has committed the blob, unless it failed.
            sha256 = self.cache.lookup(key, file, None if trusted else waiting_since)
            if sha256 is not None:
                self.progress.advance(file.path, file.size)
                self._keep(sha256)
                lock.finished = True
                return sha256
            try:
                sha256 = self._download(key, file, resumable=trusted)
            except VerificationFailed:
                lock.finished = True  # its partial is gone: nothing to resume
                raise
            lock.finished = True
        self.cache.evict(self.settings.cache_max_bytes, self._keep(sha256))
        return sha256

    def _keep(self, sha256: str) -> frozenset[str]:
        """Add a blob to those eviction must leave alone; returns them all."""
        with self.keep_lock:
            self.keep.add(sha256)
            return frozenset(self.keep)

    def _download(self, key: str, file: RemoteFile, resumable: bool) -> str:
        what = f"{self.model.reference}: {file.path}"
        try:
            with PartialDownload(self.cache.partial(key), file.size, resumable) as partial:
                self.progress.advance(file.path, partial.length)
                with_retries(self.settings, lambda: self._attempt(partial, file, what))
                sha256 = partial.hasher.hexdigest()
                if file.sha256 and sha256 != file.sha256:
                    raise DigestMismatch(
                        f"{what}: the downloaded bytes have sha256 {sha256}, but the pin (or "
                        f"the source itself) declared {file.sha256}: not the pinned content"
                    )
        except VerificationFailed:
            self.cache.discard(key)  # these bytes can never become the blob
            raise
        self.cache.commit(key, sha256, indexed=not file.sha256)
        return sha256

    def _attempt(self, partial: PartialDownload, file: RemoteFile, what: str) -> None:
        """One try at the rest of the file, from what the partial holds."""
        if not partial.resumable:  # nothing pins the file: an earlier try's bytes may differ
            self.progress.advance(file.path, -partial.restart())
        if partial.length < file.size:
            with self.source.open(self.model, file, partial.length) as chunks:
                for chunk in chunks:
                    if self.cancelled.is_set():
                        raise _Cancelled
                    if partial.length + len(chunk) > file.size:
                        detail = f"the source sent more than the {file.size} bytes it announced"
                        raise not_the_file(what, file.sha256, detail)
                    partial.append(chunk)
                    self.progress.advance(file.path, len(chunk))
        if partial.length < file.size:
            raise TruncatedDownload(
                f"{what}: the download ended after {partial.length} of {file.size} bytes"
            )


def fetch_model(
    model: ResolvedModel,
    source: Source,
    settings: SourceSettings,
) -> FetchedModel:
    """Fetch every file of `model` into the cache, verified; files already there are reused."""
    settings.check_model_size(model.reference, model.total_size, len(model.files))
    fetch = _Fetch(model, source, settings, ProgressCounter(settings.progress, model.total_size))
    files = _fetch_files(fetch)
    fetch.cache.sweep()
    return FetchedModel(model, tuple(sorted(files, key=lambda f: f.path)))


def _fetch_files(fetch: _Fetch) -> list[FetchedFile]:
    """Fetch the files a few at a time; the first failure stops the others."""
    failures: list[BaseException] = []
    files = fetch.model.files
    with ThreadPoolExecutor(max(1, min(PARALLEL_FILES, len(files)))) as pool:
        futures = [pool.submit(fetch.file, file) for file in files]
        try:
            for done in as_completed(futures):
                error = done.exception()
                if error is not None:
                    fetch.cancelled.set()  # the other files stop at their next chunk
                    failures.append(error)
        except BaseException:  # interrupted (Ctrl-C): let the threads stop, then go
            fetch.cancelled.set()
            raise
    real_failures = [error for error in failures if not isinstance(error, _Cancelled)]
    if real_failures:
        raise real_failures[0]  # the first to happen: the others may be its consequences
    fetched: list[FetchedFile] = []
    for file, future in zip(files, futures, strict=True):
        result = future.result()
        if not _touch(result.blob):  # evicted meanwhile by another process: once more
            result = fetch.file(file)
        fetched.append(result)
    return fetched


def _touch(blob: Path) -> bool:
    try:
        os.utime(blob)
    except FileNotFoundError:
        return False
    return True


def materialize(model: FetchedModel, directory: Path) -> Path:
    """Lay out `model`'s files under `directory`: hard links to the blobs (else copies)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        root = directory.resolve(strict=True)
        for file in model.files:
            path = safe_relative_path(file.path, model.resolved.reference)
            target = root.joinpath(*path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.parent.resolve(strict=True).is_relative_to(root):
                raise SourceError(
                    f"{model.resolved.reference}: {file.path}: {target.parent} leads outside "
                    f"{root} (a symlink); refusing to write there"
                )
            _link_or_copy(file.blob, target)
            os.utime(file.blob)  # a use, for least-recently-used eviction
    except OSError as error:
        raise SourceError(
            f"{model.resolved.reference}: cannot lay out the model in {directory}: {error}"
        ) from error
    return directory


def _link_or_copy(blob: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        os.link(blob, temporary)
    except OSError as error:
        if error.errno not in _COPY_INSTEAD_OF_LINK:
            raise
        shutil.copyfile(blob, temporary)
        os.chmod(temporary, 0o444)
    try:
        os.replace(temporary, target)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
