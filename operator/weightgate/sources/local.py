"""`file://` and `pvc://` references: a file or a directory on a local filesystem.

No client library: the standard library lists and reads the files. Our own code exists to keep
the model root closed: a symlink that leaves the root, a FIFO or a device would let the
scan read something other than what a serving pod mounts (or hang), so they are refused.

In the cluster the scan Job mounts each PersistentVolumeClaim at `<pvc root>/<claim>`
(`WEIGHTGATE_PVC_ROOT`, default `/mnt/pvc`), so `pvc://claim/path` is that directory's `path`.

Local paths have no revision: `revision` is None and the fetched content digest names the
content; `lineage` and `pinned` are the reference itself. Each file's `etag` records the
device, inode, modification and change times seen by resolve; `open` refuses a changed file.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, ClassVar
from urllib.parse import SplitResult, unquote, urlsplit

from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    ModelTooLarge,
    NotFound,
    RevisionMoved,
    SourceError,
    UnsupportedReference,
)
from weightgate.sources.model import RemoteFile, ResolvedModel

PVC_ROOT_VARIABLE = "WEIGHTGATE_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"
CHUNK_BYTES = 1024 * 1024
MAX_ENTRIES = 100_000  # bounds a listing made huge by symlinked directories
# Kubernetes object names (RFC 1123 subdomain), which is what a claim name must be.
_CLAIM_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _etag(status: os.stat_result) -> str:
    return f"{status.st_dev}:{status.st_ino}:{status.st_mtime_ns}:{status.st_ctime_ns}"


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


class LocalSource:
    """Resolves `file:///abs/path` and `pvc://claim/path` to the regular files under them."""

    schemes: ClassVar[tuple[str, ...]] = ("file", "pvc")

    def __init__(self, settings: SourceSettings) -> None:
        """Use `settings`' size limit; PVC mounts are looked up under `WEIGHTGATE_PVC_ROOT`."""
        self.settings = settings
        self.pvc_root = Path(os.environ.get(PVC_ROOT_VARIABLE) or DEFAULT_PVC_ROOT)

    def resolve(self, reference: str) -> ResolvedModel:
        """List the regular files under the reference's path, with their sizes."""
        root, volume = self._path_of(reference)
        try:
            real_root = root.resolve(strict=True)
            root_status = real_root.stat()
        except FileNotFoundError as error:
            raise NotFound(f"{reference}: no such file or directory ({root})") from error
        except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop
            raise SourceError(f"{reference}: {root}: {error}") from error
        if volume is not None and not real_root.is_relative_to(volume.resolve()):
            raise UnsupportedReference(
                f"{reference}: {root} is a symlink to {real_root}, outside the volume; "
                "a serving pod would not see the same files"
            )
        if stat.S_ISREG(root_status.st_mode):
            files = [self._file(reference, real_root, root.name)]
        elif stat.S_ISDIR(root_status.st_mode):
            files = list(self._walk(reference, real_root))
            if not files:
                raise NotFound(f"{reference}: {root} holds no files")
        else:
            raise UnsupportedReference(
                f"{reference}: {root} is {_kind(root_status.st_mode)}; "
                "only regular files and directories can be scanned"
            )
        self.settings.check_model_size(reference, sum(f.size for f in files), len(files))
        return ResolvedModel(
            reference=reference,
            lineage=reference,
            revision=None,
            pinned=reference,
            files=tuple(files),
        )

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        """Stream the file from `offset`; RevisionMoved if it changed since resolve."""
        what = f"{model.reference}: {file.path}"
        try:
            # O_NOFOLLOW: a symlink swapped in after resolve is not followed; O_NONBLOCK: a
            # FIFO swapped in does not block the open (fstat below then refuses it).
            descriptor = os.open(file.locator, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError as error:
            raise RevisionMoved(f"{what}: removed since it was resolved") from error
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise RevisionMoved(
                    f"{what}: replaced by a symlink since it was resolved"
                ) from error
            raise SourceError(f"{what}: {error.strerror or error}") from error
        with os.fdopen(descriptor, "rb") as stream:
            status = os.fstat(stream.fileno())
            if not stat.S_ISREG(status.st_mode) or status.st_size != file.size:
                raise RevisionMoved(
                    f"{what}: changed since it was resolved ({file.size} bytes then, "
                    f"{status.st_size} now); scan again once it is no longer being written"
                )
            if file.etag is not None and _etag(status) != file.etag:
                raise RevisionMoved(
                    f"{what}: replaced or modified since it was resolved; "
                    "scan again once it is no longer being written"
                )
            yield _chunks(stream, offset, file.size, what)

    def _path_of(self, reference: str) -> tuple[Path, Path | None]:
        """The path a reference names, and the volume it must stay in (pvc:// only)."""
        parts = urlsplit(reference)
        if parts.query or parts.fragment:
            raise UnsupportedReference(
                f"{reference}: {parts.scheme}:// references take no query or fragment"
            )
        if parts.scheme == "file":
            return self._file_path(reference, parts), None
        if parts.scheme == "pvc":
            mount = self._pvc_mount(reference, parts.netloc)
            segments = [segment for segment in parts.path.split("/") if segment]
            if any(segment in (".", "..") for segment in segments):
                raise UnsupportedReference(f"{reference}: '.' and '..' are not allowed in the path")
            return mount.joinpath(*segments), mount
        raise UnsupportedReference(f"{reference}: not a file:// or pvc:// reference")

    @staticmethod
    def _file_path(reference: str, parts: SplitResult) -> Path:
        if parts.netloc not in ("", "localhost"):
            raise UnsupportedReference(
                f"{reference}: file:// on another host ({parts.netloc}) is not supported; "
                "use file:///absolute/path"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise UnsupportedReference(f"{reference}: expected file:///absolute/path")
        return Path(path)

    def _pvc_mount(self, reference: str, claim: str) -> Path:
        if not _CLAIM_NAME.fullmatch(claim):
            raise UnsupportedReference(
                f"{reference}: {claim!r} is not a PersistentVolumeClaim name; "
                "expected pvc://claim-name/path/in/volume"
            )
        mount = self.pvc_root / claim
        if not mount.is_dir():
            raise NotFound(
                f"{reference}: the claim is not mounted at {mount}. PVCs are mounted by the "
                f"in-cluster scan Job under {DEFAULT_PVC_ROOT}; to scan one elsewhere, mount "
                f"or copy it to <dir>/{claim} and set {PVC_ROOT_VARIABLE}=<dir>"
            )
        return mount

    def _walk(self, reference: str, real_root: Path) -> Iterator[RemoteFile]:
        """Every regular file under `real_root`, following symlinks that stay inside it."""
        count = 0
        # (directory to list, its path relative to the root, real directories above it)
        pending: list[tuple[Path, str, frozenset[Path]]] = [(real_root, "", frozenset())]
        while pending:
            directory, relative, ancestors = pending.pop()
            ancestors = ancestors | {directory}
            try:
                entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
            except OSError as error:
                raise SourceError(
                    f"{reference}: cannot list {directory}: {error.strerror or error}"
                ) from error
            count += len(entries)
            if count > MAX_ENTRIES:
                raise ModelTooLarge(f"{reference}: more than {MAX_ENTRIES} files and directories")
            for entry in entries:
                path = f"{relative}{entry.name}"
                target = self._inside(reference, real_root, Path(entry.path), path)
                if target.is_dir():
                    if target in ancestors:
                        raise UnsupportedReference(
                            f"{reference}: {path} is a symlink loop; remove it"
                        )
                    pending.append((target, f"{path}/", ancestors))
                    continue
                yield self._file(reference, target, path)

    @staticmethod
    def _inside(reference: str, real_root: Path, entry: Path, path: str) -> Path:
        """The real path of `entry`, refusing symlinks that leave the root or dangle."""
        if not entry.is_symlink():
            return entry
        try:
            target = entry.resolve(strict=True)
        except (OSError, RuntimeError) as error:
            raise UnsupportedReference(
                f"{reference}: {path} is a symlink to a missing file; remove it"
            ) from error
        if not target.is_relative_to(real_root):
            raise UnsupportedReference(
                f"{reference}: {path} is a symlink to {target}, outside the model root; "
                "a serving pod would not see the same file. Copy the model with its files "
                "dereferenced (cp -rL) and scan the copy"
            )
        return target

    @staticmethod
    def _file(reference: str, real_path: Path, path: str) -> RemoteFile:
        try:
            status = real_path.lstat()
        except OSError as error:
            raise SourceError(f"{reference}: {path}: {error.strerror or error}") from error
        if not stat.S_ISREG(status.st_mode):
            raise UnsupportedReference(
                f"{reference}: {path} is {_kind(status.st_mode)}; a model holds only regular "
                "files (remove it, or scan a directory without it)"
            )
        if not os.access(real_path, os.R_OK):
            raise SourceError(f"{reference}: {path}: permission denied")
        return RemoteFile(
            path=path, size=status.st_size, locator=str(real_path), etag=_etag(status)
        )


def _chunks(stream: BinaryIO, offset: int, size: int, what: str) -> Iterator[bytes]:
    """Read from `offset` up to `size` (what resolve saw) in chunks; I/O errors name `what`."""
    remaining = size - offset
    try:
        stream.seek(offset)
        while remaining > 0:
            chunk = stream.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                return  # shorter than announced: the fetcher reports the truncation
            remaining -= len(chunk)
            yield chunk
    except OSError as error:
        raise SourceError(f"{what}: read failed: {error.strerror or error}") from error
