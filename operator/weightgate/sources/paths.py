"""The one rule for the file paths a source lists: they must stay inside the model directory.

Every path comes from somewhere else (a hub listing, an S3 key, a layer title, a directory
walk), and the cache lays each one out under a directory of its own, so one hostile name could
write anywhere. The rule, the same for every source: a relative POSIX path of UTF-8 text, no
empty, `.` or `..` segment, no backslash, no NUL or other control character, at most
:data:`MAX_PATH_BYTES`. A file list must also name each path once and never use a file's path as
a directory of another (`a` and `a/b`): no directory could hold both.
"""

from __future__ import annotations

from collections.abc import Iterable

from weightgate.sources.errors import SourceError

MAX_PATH_BYTES = 4096  # PATH_MAX on Linux


def path_problem(path: str) -> str | None:
    """Why `path` may not name a file of a model, or None when it may."""
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        return "not UTF-8 text"
    if not path:
        return "empty"
    if len(encoded) > MAX_PATH_BYTES:
        return f"longer than {MAX_PATH_BYTES} bytes"
    if path.startswith("/"):
        return "absolute"
    if "\\" in path:
        return "a backslash"
    if any(ord(char) < 32 or char == "\x7f" for char in path):
        return "a control character"
    if any(segment in ("", ".", "..") for segment in path.split("/")):
        return "an empty, '.' or '..' segment"
    return None


def safe_relative_path(path: str, what: str) -> str:
    """`path` when it may name a file of a model; else a SourceError naming `what`."""
    problem = path_problem(path)
    if problem is not None:
        raise SourceError(
            f"{what}: refusing the file path {path!r} ({problem}): a model's files must stay "
            "inside its directory"
        )
    return path


def check_file_tree(paths: Iterable[str], what: str) -> None:
    """Refuse a path listed twice, or one that is also a directory of another (`a`, `a/b`)."""
    seen: set[str] = set()
    for path in paths:
        if path in seen:
            raise SourceError(f"{what}: the file {path!r} is listed twice")
        seen.add(path)
    for path in seen:
        parent = path.rpartition("/")[0]
        while parent:
            if parent in seen:
                raise SourceError(
                    f"{what}: {parent!r} is both a file and the directory of {path!r}"
                )
            parent = parent.rpartition("/")[0]
