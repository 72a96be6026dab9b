"""Reading signature-sized files with a bound, and writing files whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

from weightgate.errors import InputError
from weightgate.provenance.bundle import MAX_BUNDLE_BYTES
from weightgate.provenance.errors import MalformedBundle


def read_limited(path: Path, limit: int = MAX_BUNDLE_BYTES) -> bytes:
    """A signature or record file's bytes, refusing absurd sizes.

    Raises:
        InputError: Unreadable.
        MalformedBundle: Bigger than ``limit``.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise MalformedBundle(f"{path}: larger than {limit} bytes; not a signature")
    return data


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync, rename over ``path``.

    Readers see the old file or the new one, never a part; a crash leaves at most a
    ``.NAME.PID.tmp`` file behind.

    Raises:
        InputError: The file cannot be written.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
