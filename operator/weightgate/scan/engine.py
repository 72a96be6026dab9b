"""Walk files, hash each one while scanning it, and collect the findings.

Files are processed by a small thread pool. Hashing runs in OpenSSL with the GIL released,
so with two jobs both cores hash while the Python scanners (which only parse headers for
tensor formats) take their share of one core. Every file is read once from disk: the hash
streams it through a fixed buffer, and the scanners parse the same pages through ``mmap``.
Then, unless ``settings.weight_stats`` is off, the model's safetensors and GGUF weights are
decoded once more, as numbers, for the weight statistics (:mod:`weightgate.scan.weights`).
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from weightgate.errors import InputError
from weightgate.formats.mapping import close_mapping
from weightgate.scan import dispatch
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import FileResult, ScanReport
from weightgate.scan.settings import ScanSettings

ProgressCallback = Callable[[FileResult, int, int], None]
"""Called after each file with (result, files done, files in total)."""


def scan_path(
    path: str | os.PathLike[str],
    settings: ScanSettings | None = None,
    progress: ProgressCallback | None = None,
) -> ScanReport:
    """Scan a file or every file under a directory.

    Args:
        path: A file or a directory.
        settings: Scan settings; defaults apply when omitted.
        progress: Optional callback after each file.

    Raises:
        InputError: ``path`` does not exist or cannot be listed.
    """
    settings = settings or ScanSettings()
    root = Path(path)
    report = ScanReport(root=str(path))
    if root.is_file():
        targets = [(root, root.name)]
    elif root.is_dir():
        targets = list(_walk(root, settings.limits.max_files))
    elif root.exists() or root.is_symlink():
        raise InputError(f"{path}: not a regular file or directory")
    else:
        raise InputError(f"{path}: no such file or directory")

    def run(target: tuple[Path, str]) -> FileResult | tuple[str, str]:
        file_path, display = target
        try:
            return scan_file(file_path, display, settings)
        except OSError as exc:
            return (display, exc.strerror or str(exc))

    done = 0
    with ThreadPoolExecutor(max_workers=settings.jobs) as pool:
        for outcome in pool.map(run, targets):
            done += 1
            if isinstance(outcome, FileResult):
                report.files.append(outcome)
                if progress is not None:
                    progress(outcome, done, len(targets))
            else:
                report.errors.append(outcome)
    if settings.weight_stats:
        dispatch.weight_check()(root, report, settings)
    return report


def scan_file(path: Path, display: str, settings: ScanSettings) -> FileResult:
    """Hash and scan one file on disk.

    Raises:
        OSError: The file could not be opened or read.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest = _sha256(handle, min(settings.chunk_bytes, max(size, 1)))
        result = FileResult(path=display, size=size, sha256=digest, format="empty")
        context = ScanContext(settings, display, result.findings)
        if size == 0:  # mmap cannot map nothing; a claimed format still gets its say
            context.scan(memoryview(b""), path.name)
            return result
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mapped)
        try:
            result.format = context.scan(view, path.name).value
        finally:
            close_mapping(mapped, view)
    return result


def _sha256(handle: object, chunk_bytes: int) -> str:
    # readinto a fixed buffer: constant memory whatever the file size, and both the read
    # and the hash update release the GIL.
    hasher = hashlib.sha256()
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    readinto = handle.readinto  # type: ignore[attr-defined]
    while True:
        count = readinto(buffer)
        if not count:
            break
        hasher.update(view[:count])
    return hasher.hexdigest()


def _walk(root: Path, max_files: int) -> Iterator[tuple[Path, str]]:
    count = 0
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            file_path = Path(directory, name)
            if not file_path.is_file():
                continue
            count += 1
            if count > max_files:
                raise InputError(f"{root}: more than {max_files} files (limits.max_files)")
            yield file_path, file_path.relative_to(root).as_posix()
