"""Reading small files with a bound, and writing files whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from weightgate.errors import InputError


def read_limited(
    path: Path, limit: int, error: type[InputError] = InputError, what: str = "what was expected"
) -> bytes:
    """A small file's bytes, refusing absurd sizes before reading them.

    Raises:
        error: Unreadable, or bigger than ``limit`` (then it is not ``what``).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise error(f"{path}: larger than {limit} bytes; not {what}")
    return data


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync, rename over ``path``.

    Readers see the old file or the new one, never a part; a crash leaves at most a
    ``.NAME.*.tmp`` file behind.

    Raises:
        InputError: The file cannot be written.
    """
    try:
        descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; these files are meant to be read
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
