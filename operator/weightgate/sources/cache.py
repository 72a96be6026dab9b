"""The content-addressed model cache: verified blobs by sha256, resumable partials, locks.

Layout under ``SourceSettings.cache_dir``::

    blobs/sha256/<hex>   verified content, read-only (0444). A blob appears only through an
                         os.replace of a file whose size and sha256 were checked and whose
                         bytes are on disk (fdatasync, as containerd's content store does), so
                         a partial file is never visible as complete, not even after a crash.
                         Its mtime is its last use (least-recently-used eviction).
    partial/<key>        a download in progress or interrupted; the next fetch hashes what is
                         there and resumes from its length.
    locks/<key>.lock     flock'ed by whoever downloads <key>; everyone else waits, then finds
                         the blob. Removed (while held) once the blob exists.
    index/<key>          the sha256 a key's download produced, for files whose source gave no
                         digest, so that waiters and later fetches find the blob.

A key names one remote file (see :func:`file_key`): its sha256 when the source vouches for
one, else the revision, path, size, ETag and locator.

Housekeeping: after each commit, least-recently-used blobs are deleted while the blobs total
more than the limit (never those of the model being fetched); index entries of deleted blobs
go with them. Partials untouched for :data:`STALE_SECONDS` (a download that nobody resumed)
are deleted with their lock files, under the lock.

Standard library only: ``fcntl.flock`` excludes other threads (each holder opens its own file
description) and other processes alike, and the kernel drops it when a holder dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Collection, Iterator
from concurrent.futures import Executor, Future, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from weightgate.sources.model import RemoteFile, ResolvedModel

CHUNK_BYTES = 1024 * 1024
SYNC_BYTES = 64 * 1024 * 1024  # flush to disk in the background while the download goes on
STALE_SECONDS = 24 * 3600
"""Partials (and their lock files) untouched this long are deleted by :meth:`ModelCache.sweep`."""


def file_key(model: ResolvedModel, file: RemoteFile) -> str:
    """A stable name for one remote file: the same file from any fetch gets the same key."""
    if file.sha256:
        parts = ["sha256", file.sha256, str(file.size)]
    else:
        parts = [
            "file",
            model.revision or model.pinned,
            file.path,
            str(file.size),
            file.etag or "",
            file.locator,
        ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def identifies_content(model: ResolvedModel, file: RemoteFile) -> bool:
    """Whether the key pins the bytes (digest, ETag or revision) rather than only a name.

    A file without any of them (an unpinned URL without ETag) may change under the same key,
    so neither its partial nor an old index entry can be trusted.
    """
    return bool(file.sha256 or file.etag or model.revision)


@dataclass
class KeyLock:
    """An exclusive hold on one key; set `finished` once the blob exists (drops the lock file)."""

    path: Path
    finished: bool = False


class ModelCache:
    """The cache directory: blobs, partials, locks and index (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        """Use (and create) the cache at `root`."""
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.partials = root / "partial"
        self.locks = root / "locks"
        self.index = root / "index"
        for directory in (self.blobs, self.partials, self.locks, self.index):
            directory.mkdir(parents=True, exist_ok=True)

    def blob(self, sha256: str) -> Path:
        """Where the verified content with digest `sha256` lives (whether or not it exists)."""
        return self.blobs / sha256

    def partial(self, key: str) -> Path:
        """The partial download of `key`."""
        return self.partials / key

    @contextmanager
    def locked(self, key: str, blocking: bool = True) -> Iterator[KeyLock | None]:
        """Hold `key`'s lock (wait for it, or yield None at once when `blocking` is False)."""
        path = self.locks / f"{key}.lock"
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(descriptor)
                yield None
                return
            except BaseException:
                os.close(descriptor)
                raise
            # The holder before us may have removed the file: then we hold a lock on an
            # inode nobody else will see, and must lock whatever the path names now.
            if _same_file(descriptor, path):
                break
            os.close(descriptor)
        lock = KeyLock(path)
        try:
            yield lock
        finally:
            if lock.finished:
                path.unlink(missing_ok=True)
            os.close(descriptor)

    def lookup(self, key: str, file: RemoteFile, trusted_since: float | None) -> str | None:
        """The sha256 of `file`'s blob when the cache has it (and mark it used), else None.

        Without a digest from the source, the index says which blob a key produced; an entry
        is trusted when `trusted_since` is None or the entry is at least that recent.
        """
        sha256 = file.sha256 or self._indexed(key, trusted_since)
        if sha256 is None:
            return None
        blob = self.blob(sha256)
        try:
            if blob.stat().st_size != file.size:
                return None
            with suppress(PermissionError):  # a shared cache: another user's blob
                os.utime(blob)
        except FileNotFoundError:
            return None
        return sha256

    def commit(self, key: str, sha256: str, indexed: bool) -> Path:
        """Make `key`'s verified partial the blob `sha256` (atomically); index it if asked."""
        blob = self.blob(sha256)
        partial = self.partial(key)
        os.chmod(partial, 0o444)
        os.replace(partial, blob)
        os.utime(blob)
        if indexed:
            entry = self.index / key
            temporary = self.index / f".{key}.{os.getpid()}.{threading.get_ident()}"
            temporary.write_text(sha256)
            os.replace(temporary, entry)
        return blob

    def discard(self, key: str) -> None:
        """Delete `key`'s partial download (its bytes cannot become the blob)."""
        self.partial(key).unlink(missing_ok=True)

    def evict(self, max_bytes: int, keep: Collection[str]) -> list[str]:
        """Delete least-recently-used blobs until they total at most `max_bytes`.

        Blobs named in `keep` (the model being fetched) stay, even over the limit. One
        process evicts at a time; others skip. Returns the digests deleted.
        """
        with self.locked("evict", blocking=False) as lock:
            if lock is None:
                return []
            blobs: list[tuple[float, str, int]] = []
            for entry in os.scandir(self.blobs):
                with suppress(FileNotFoundError):
                    status = entry.stat()
                    blobs.append((status.st_mtime, entry.name, status.st_size))
            total = sum(size for _, _, size in blobs)
            evicted: list[str] = []
            for _, name, size in sorted(blobs):
                if total <= max_bytes:
                    break
                if name in keep:
                    continue
                self.blob(name).unlink(missing_ok=True)
                total -= size
                evicted.append(name)
            if evicted:
                self._prune_index(set(evicted))
            return evicted

    def sweep(self, now: float | None = None) -> list[str]:
        """Delete partials (and their locks) untouched for STALE_SECONDS; returns their keys."""
        cutoff = (time.time() if now is None else now) - STALE_SECONDS
        swept: list[str] = []
        for entry in os.scandir(self.locks):
            key = entry.name.removesuffix(".lock")
            if key in (entry.name, "evict"):
                continue
            partial = self.partial(key)
            if _modified_after(partial, cutoff) or _modified_after(Path(entry.path), cutoff):
                continue
            with self.locked(key, blocking=False) as lock:
                if lock is None:  # someone is downloading it right now
                    continue
                partial.unlink(missing_ok=True)
                lock.finished = True
                swept.append(key)
        for entry in os.scandir(self.partials):  # partials whose lock file is already gone
            if not _modified_after(Path(entry.path), cutoff):
                with self.locked(entry.name, blocking=False) as lock:
                    if lock is not None and not _modified_after(Path(entry.path), cutoff):
                        Path(entry.path).unlink(missing_ok=True)
                        lock.finished = True
                        swept.append(entry.name)
        return swept

    def blob_bytes(self) -> int:
        """Total size of the blobs."""
        total = 0
        for entry in os.scandir(self.blobs):
            with suppress(FileNotFoundError):
                total += entry.stat().st_size
        return total

    def _indexed(self, key: str, trusted_since: float | None) -> str | None:
        entry = self.index / key
        try:
            if trusted_since is not None and entry.stat().st_mtime < trusted_since:
                return None
            sha256 = entry.read_text().strip()
        except FileNotFoundError:
            return None
        return sha256 if len(sha256) == 64 else None

    def _prune_index(self, evicted: set[str]) -> None:
        for entry in os.scandir(self.index):
            with suppress(OSError):
                if Path(entry.path).read_text().strip() in evicted:
                    os.unlink(entry.path)


class PartialDownload:
    """A partial download open for appending, and the sha256 of the bytes it holds."""

    def __init__(self, path: Path, size: int, resumable: bool, syncer: Executor) -> None:
        """Open `path` to append; hash what it holds, unless not `resumable` or too long."""
        self.path = path
        self.syncer = syncer
        self.syncing: Future[None] | None = None
        self.synced = 0
        self.resumable = resumable
        self.hasher = hashlib.sha256()
        self.output = path.open("ab", buffering=CHUNK_BYTES)  # sources send small pieces
        self.length = path.stat().st_size
        if not resumable or self.length > size:
            self.restart()
        else:  # hash what an earlier attempt left, once
            with path.open("rb") as existing:
                while chunk := existing.read(CHUNK_BYTES):
                    self.hasher.update(chunk)

    def restart(self) -> int:
        """Drop every byte (returns how many there were)."""
        dropped = self.length
        self.output.truncate(0)
        self.hasher = hashlib.sha256()
        self.length = 0
        return dropped

    def append(self, chunk: bytes) -> None:
        """Write and hash `chunk`; every SYNC_BYTES, start flushing to disk in the background."""
        self.output.write(chunk)
        self.hasher.update(chunk)
        self.length += len(chunk)
        if self.length - self.synced >= SYNC_BYTES and (
            self.syncing is None or self.syncing.done()
        ):
            self.output.flush()
            self.synced = self.length
            self.syncing = self.syncer.submit(os.fdatasync, self.output.fileno())

    def make_durable(self) -> None:
        """Every byte on disk, so that a crash cannot leave a committed blob half-written."""
        self.output.flush()
        if self.syncing is not None:
            self.syncing.result()
        os.fdatasync(self.output.fileno())

    def __enter__(self) -> PartialDownload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.syncing is not None:
            wait([self.syncing])  # it uses our descriptor
        self.output.close()


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(descriptor)
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _modified_after(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime > cutoff
    except FileNotFoundError:
        return False
