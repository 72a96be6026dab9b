"""The model_signing "files" manifest: one sha256 per file, in a fixed order, and a root digest.

The rules are OpenSSF model_signing's (v1.x, ``method: files``), so that both tools agree on
every byte they sign:

* every regular file under the model directory, named by its POSIX path relative to it;
* ``ignore_paths`` (relative to the model directory) drop a file or a whole subtree; by
  default the git paths ``.git``, ``.gitattributes``, ``.github``, ``.gitignore`` at the top;
* symbolic links and special files (sockets, FIFOs, devices) are refused, not skipped: a
  signature must never silently leave out something a loader could read;
* files are ordered by their path components (``sub/b`` before ``sub-c``, since ``sub`` <
  ``sub-c``), and the root digest is the sha256 of their raw digests concatenated in that order.

Files are hashed in parallel, one thread per usable core (hashlib releases the GIL), and
digests the caller already knows (from the scan pass or the fetch cache) are not recomputed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from weightgate.errors import InputError

GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
"""Ignored by default, as model_signing does (``--ignore-git-paths``)."""


@dataclass(frozen=True)
class FileDigest:
    """One file of a model: its POSIX path relative to the model directory and its sha256."""

    path: str
    sha256: str


@dataclass(frozen=True)
class ModelManifest:
    """What a model signature covers.

    Attributes:
        model_name: The model directory's name (model_signing's subject name).
        files: Every file, ordered by path components.
        ignore_paths: Paths left out, relative to the model directory, as recorded in the
            signature so a verifier leaves out the same ones.
    """

    model_name: str
    files: tuple[FileDigest, ...]
    ignore_paths: tuple[str, ...] = field(default=GIT_PATHS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(sorted(self.files, key=path_order)))

    def root_digest(self) -> str:
        """sha256 over the files' raw digests in manifest order (the statement's subject)."""
        return root_digest(item.sha256 for item in self.files)

    def serialization(self) -> dict[str, Any]:
        """The predicate's ``serialization`` member, as model_signing records it."""
        parameters: dict[str, Any] = {"method": "files", "hash_type": "sha256"}
        parameters["allow_symlinks"] = False
        if self.ignore_paths:
            parameters["ignore_paths"] = list(self.ignore_paths)
        return parameters

    def digests(self) -> dict[str, str]:
        """Each file's sha256 by path."""
        return {item.path: item.sha256 for item in self.files}


def root_digest(digests: Iterable[str]) -> str:
    """sha256 over the concatenated raw bytes of hex ``digests``, in the order given."""
    hasher = hashlib.sha256()
    for digest in digests:
        hasher.update(bytes.fromhex(digest))
    return hasher.hexdigest()


def path_order(item: FileDigest) -> tuple[str, ...]:
    """model_signing's order: PurePosixPath comparison, i.e. by path components."""
    return PurePosixPath(item.path).parts


def model_files(root: Path, ignore_paths: Iterable[str] = GIT_PATHS) -> list[str]:
    """The files a manifest of ``root`` covers, as POSIX paths relative to it.

    Raises:
        InputError: ``root`` is not a directory, or holds a symbolic link or a special file.
    """
    if root.is_symlink() or not root.is_dir():
        raise InputError(f"{root}: not a model directory")
    ignored = {relative_parts(path) for path in ignore_paths}
    found: list[str] = []

    def fail(error: OSError) -> None:
        raise InputError(f"{error.filename}: {error.strerror or error}")

    for directory, subdirs, files in os.walk(root, onerror=fail):
        base = Path(directory)
        relative_base = PurePosixPath(base.relative_to(root).as_posix())
        for name in [*subdirs, *files]:
            relative = relative_base / name if relative_base.parts else PurePosixPath(name)
            if _ignored(relative.parts, ignored):
                if name in subdirs:
                    subdirs.remove(name)
                continue
            mode = os.lstat(base / name).st_mode
            if stat.S_ISLNK(mode):
                raise InputError(
                    f"{base / name}: a symbolic link; model signatures cover regular files "
                    "only (replace it with the file, or ignore the path)"
                )
            if stat.S_ISREG(mode):
                found.append(relative.as_posix())
            elif not stat.S_ISDIR(mode):
                raise InputError(f"{base / name}: not a regular file or directory")
    return found


def hash_model(
    root: Path,
    ignore_paths: Iterable[str] = GIT_PATHS,
    known: Mapping[str, str] | None = None,
    jobs: int | None = None,
    *,
    only_known: bool = False,
) -> ModelManifest:
    """The manifest of the model directory ``root``.

    Args:
        root: The model directory.
        ignore_paths: Paths to leave out, relative to ``root``.
        known: path -> sha256 already computed for these exact bytes (by the scan pass);
            those files are not read again.
        jobs: Files hashed at once (default: the cores this process may use).
        only_known: Every file must be in ``known`` (the manifest must cover exactly the
            bytes a scan saw, so a file that appeared since is an error, not hashed).

    Raises:
        InputError: The directory cannot be walked, a file cannot be read, or (with
            ``only_known``) a file is not in ``known``.
    """
    ignore = tuple(dict.fromkeys(ignore_paths))
    paths = model_files(root, ignore)
    known = known or {}
    if only_known:
        unseen = [path for path in paths if path not in known]
        if unseen:
            raise InputError(
                f"{root / unseen[0]}: not among the scanned files (written after the scan?); "
                "nothing was signed or recorded"
            )
    # Largest first, so that no big file starts last and runs alone on one core.
    missing = sorted(
        (path for path in paths if path not in known),
        key=lambda path: _size(root / path),
        reverse=True,
    )
    workers = max(1, min(jobs or len(os.sched_getaffinity(0)), len(missing) or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        computed = dict(
            zip(missing, pool.map(lambda p: file_sha256(root / p), missing), strict=True)
        )
    items = [FileDigest(path, known.get(path) or computed[path]) for path in paths]
    return ModelManifest(_model_name(root), tuple(items), ignore)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes.

    Raises:
        InputError: The file cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc


def manifest_differences(expected: ModelManifest, actual: ModelManifest) -> list[str]:
    """One line per file that is extra, missing or changed in ``actual``."""
    want, have = expected.digests(), actual.digests()
    lines = [f"extra file (not signed): {path}" for path in sorted(have.keys() - want.keys())]
    lines += [f"missing file: {path}" for path in sorted(want.keys() - have.keys())]
    lines += [
        f"changed: {path} (signed sha256 {want[path]}, now {have[path]})"
        for path in sorted(want.keys() & have.keys())
        if want[path] != have[path]
    ]
    return lines


def relative_parts(path: str) -> tuple[str, ...]:
    """The components of a path relative to the model directory.

    Raises:
        InputError: Empty, absolute, or climbing out with ``..`` (it would ignore everything,
            or something outside the model).
    """
    pure = PurePosixPath(path)
    if not pure.parts or pure.is_absolute() or ".." in pure.parts:
        raise InputError(f"ignore path {path!r}: must be a path inside the model directory")
    return pure.parts


def _ignored(parts: tuple[str, ...], ignored: set[tuple[str, ...]]) -> bool:
    return any(parts[: len(prefix)] == prefix for prefix in ignored)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # file_sha256 reports it


def _model_name(root: Path) -> str:
    # model_signing names the model after its directory (the resolved one for "." or "..").
    name = root.name
    return name if name and name != ".." else root.resolve().name
