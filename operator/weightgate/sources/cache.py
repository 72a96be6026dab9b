"""The content-addressed model cache: verified blobs by sha256, resumable partials, locks.

Layout under ``SourceSettings.cache_dir``::

    blobs/sha256/<hex>   verified content, read-only (0444). A blob appears only through an
                         os.replace of a file whose size and sha256 were checked, so a partial
                         file is never visible as complete. Its mtime is its last use
                         (least-recently-used eviction).
    unsynced/<boot>/<hex>
                         a blob committed during boot <boot> whose bytes may still be only in
                         the page cache (see below).
    partial/<boot>/<key> a download in progress or interrupted during boot <boot>; the next
                         fetch in the same boot hashes what is there and resumes from its
                         length.
    locks/<key>.lock     flock'ed by whoever downloads <key>; everyone else waits, then finds
                         the blob. Removed (while held) once the blob exists.
    index/<key>          the sha256 a key's download produced, for files whose source gave no
                         digest, so that waiters and later fetches find the blob.

A key names one remote file (see :func:`file_key`): its sha256 when the source vouches for
one, else the revision, path, size, ETag and locator.

Durability without waiting for the disk: an fdatasync of every blob before its commit (what
containerd's content store does) would hold each fetch to the disk's write speed, well below
the network's on loopback or a fast cluster network. Only a crash of the machine can lose
bytes that reached the page cache, and a crash changes the boot id
(``/proc/sys/kernel/random/boot_id``). So before a blob's name appears, an empty record
``unsynced/<boot>/<hex>`` is made durable (a file creation and a directory fsync, not the
data). Within the same boot the page cache is the truth and the blob is trusted. In any other
boot, the first lookup re-hashes the blob: the right bytes are synced and the record dropped,
wrong ones are deleted and downloaded again. Records of this boot old enough for the kernel
to have written the data back are synced (cheaply) and dropped by :meth:`ModelCache.sweep`.
Partials are resumed only in the boot that wrote them, for the same reason. Where the boot id
cannot be read, every blob is fdatasync'ed before its commit instead.

Housekeeping: after each commit, least-recently-used blobs are deleted while the blobs total
more than the limit (never those of the model being fetched); index entries and records of
deleted blobs go with them. Partials untouched for :data:`STALE_SECONDS` (a download that
nobody resumed), or written in another boot, are deleted with their lock files, under the
lock.

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
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from weightgate.sources.model import RemoteFile, ResolvedModel

CHUNK_BYTES = 1024 * 1024
WRITE_BYTES = 64 * 1024
"""Downloads reach the file in writes of this size. A 1 MiB write makes the page cache take
large folios (high-order free pages): in a VM that hands free memory back to its host (free
page reporting, as Firecracker does), those are the pages the host must fault in again, and the
OCI fetch spent up to twice the kernel time of curl, which writes 16 KiB at a time."""
STALE_SECONDS = 24 * 3600
"""Partials (and their lock files) untouched this long are deleted by :meth:`ModelCache.sweep`."""
SETTLED_SECONDS = 120
"""Records of this boot this old are synced and dropped by :meth:`ModelCache.sweep`: the
kernel writes dirty pages back within about 30 s, so the fdatasync finds little to do."""
UNKNOWN_BOOT = "unknown-boot"


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


def current_boot() -> str | None:
    """This machine's boot id (a new one after every boot), or None where there is none."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    return boot if boot and "/" not in boot and not boot.startswith(".") else None


@dataclass
class KeyLock:
    """An exclusive hold on one key; set `finished` once the blob exists (drops the lock file)."""

    path: Path
    finished: bool = False


class ModelCache:
    """The cache directory: blobs, partials, locks and index (see the module docstring)."""

    def __init__(self, root: Path, boot: str | None = None) -> None:
        """Use (and create) the cache at `root`; `boot` defaults to :func:`current_boot`."""
        self.root = root
        self.boot = boot if boot is not None else current_boot()
        self.blobs = root / "blobs" / "sha256"
        self.partials = root / "partial"
        self.unsynced = root / "unsynced"
        self.locks = root / "locks"
        self.index = root / "index"
        for directory in (self.blobs, self.partials, self.unsynced, self.locks, self.index):
            _make_durable_directory(directory)

    def blob(self, sha256: str) -> Path:
        """Where the verified content with digest `sha256` lives (whether or not it exists)."""
        return self.blobs / sha256

    def partial(self, key: str) -> Path:
        """The partial download of `key` in this boot (its directory is created)."""
        directory = self.partials / (self.boot or UNKNOWN_BOOT)
        directory.mkdir(exist_ok=True)
        return directory / key

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
        is trusted when `trusted_since` is None or the entry is at least that recent. A blob
        committed in another boot and never synced is re-hashed first (module docstring).
        """
        sha256 = file.sha256 or self._indexed(key, trusted_since)
        if sha256 is None:
            return None
        blob = self.blob(sha256)
        try:
            if blob.stat().st_size != file.size or not self._survived_boots(sha256):
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
        if self.boot is None:
            _fdatasync(partial)
        else:
            self._record_unsynced(sha256)  # durable before the blob's name can be
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
                self._drop_records(name)
                total -= size
                evicted.append(name)
            if evicted:
                self._prune_index(set(evicted))
            return evicted

    def sweep(self, now: float | None = None) -> list[str]:
        """Housekeeping (module docstring); returns the keys of the partials deleted."""
        now = time.time() if now is None else now
        self._sync_settled_records(now - SETTLED_SECONDS)
        cutoff = now - STALE_SECONDS
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
        for boot in _subdirectories(self.partials):
            this_boot = boot.name == (self.boot or UNKNOWN_BOOT)
            for entry in os.scandir(boot):  # partials of other boots; those without a lock
                path = Path(entry.path)
                if this_boot and _modified_after(path, cutoff):
                    continue
                with self.locked(entry.name, blocking=False) as lock:
                    if lock is not None and (not this_boot or not _modified_after(path, cutoff)):
                        path.unlink(missing_ok=True)
                        lock.finished = True
                        swept.append(entry.name)
            if not this_boot:
                with suppress(OSError):  # not empty: another node's download (shared cache)
                    boot.rmdir()
        return swept

    def blob_bytes(self) -> int:
        """Total size of the blobs."""
        total = 0
        for entry in os.scandir(self.blobs):
            with suppress(FileNotFoundError):
                total += entry.stat().st_size
        return total

    def _record_unsynced(self, sha256: str) -> None:
        """A durable record that blob `sha256` may be only in this boot's page cache."""
        assert self.boot is not None
        directory = self.unsynced / self.boot
        _make_durable_directory(directory)
        (directory / sha256).touch()
        _fsync_directory(directory)

    def _survived_boots(self, sha256: str) -> bool:
        """False (and the blob deleted) when a blob written in another boot lost its bytes."""
        records = [
            boot / sha256
            for boot in _subdirectories(self.unsynced)
            if boot.name != self.boot and (boot / sha256).exists()
        ]
        if not records:
            return True
        blob = self.blob(sha256)
        if _sha256_of(blob) != sha256:  # the machine went down before the bytes were written
            blob.unlink(missing_ok=True)
            self._drop_records(sha256)
            return False
        _fdatasync(blob)
        for record in records:
            record.unlink(missing_ok=True)
        return True

    def _sync_settled_records(self, settled_before: float) -> None:
        """Sync the blobs of this boot's records older than `settled_before`; drop the records."""
        if self.boot is None or not (self.unsynced / self.boot).is_dir():
            return
        for entry in os.scandir(self.unsynced / self.boot):
            with suppress(FileNotFoundError):
                if entry.stat().st_mtime < settled_before:
                    _fdatasync(self.blob(entry.name))
                    os.unlink(entry.path)

    def _drop_records(self, sha256: str) -> None:
        for boot in _subdirectories(self.unsynced):
            (boot / sha256).unlink(missing_ok=True)

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

    def __init__(self, path: Path, size: int, resumable: bool) -> None:
        """Open `path` to append; hash what it holds, unless not `resumable` or too long."""
        self.path = path
        self.resumable = resumable
        self.hasher = hashlib.sha256()
        self.output = path.open("ab", buffering=0)  # no buffer: it would copy every chunk
        self.length = path.stat().st_size
        if not resumable or self.length > size:
            self.restart()
        else:  # hash what an earlier attempt left, once
            with path.open("rb") as existing:
                self.hasher = hashlib.file_digest(existing, "sha256")

    def restart(self) -> int:
        """Drop every byte (returns how many there were)."""
        dropped = self.length
        self.output.truncate(0)
        self.hasher = hashlib.sha256()
        self.length = 0
        return dropped

    def append(self, chunk: bytes) -> None:
        """Hash and write `chunk`, a piece of WRITE_BYTES at a time (hashed while cache-hot)."""
        view = memoryview(chunk)
        for start in range(0, len(view), WRITE_BYTES):
            piece = view[start : start + WRITE_BYTES]
            self.hasher.update(piece)
            while piece:
                piece = piece[self.output.write(piece) :]
        self.length += len(chunk)

    def __enter__(self) -> PartialDownload:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.output.close()


def _sha256_of(path: Path) -> str | None:
    try:
        with path.open("rb") as content:
            return hashlib.file_digest(content, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _fdatasync(path: Path) -> None:
    """Every byte of `path` on disk (any descriptor of the inode flushes its pages)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_durable_directory(directory: Path) -> None:
    """Create `directory` (and parents); a new one's entry is synced in its parent."""
    if directory.is_dir():
        return
    _make_durable_directory(directory.parent)
    with suppress(FileExistsError):
        directory.mkdir()
    _fsync_directory(directory.parent)


def _subdirectories(directory: Path) -> list[Path]:
    return [Path(entry.path) for entry in os.scandir(directory) if entry.is_dir()]


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
