"""What can go wrong between a model reference and verified bytes on disk.

Every error names the reference (and file) it concerns and says what to do about it. They
are :class:`~weightgate.errors.InputError` (the CLI exits 1: the gate could not run) except
:class:`DigestMismatch` and :class:`RevisionMoved`, which mean the bytes are not the ones that
were pinned: a verification failure, so the gate fails (exit 2, admission denied).
"""

from __future__ import annotations

from weightgate.errors import InputError, WeightgateError


class SourceError(InputError):
    """A model reference could not be resolved or fetched."""


class UnsupportedReference(SourceError):
    """The URI's scheme is unknown, or its form is not one the source accepts."""


class NotFound(SourceError):
    """The model, revision or file does not exist (HTTP 404, NoSuchKey, unknown version)."""


class Unauthorized(SourceError):
    """Credentials are missing or were refused (HTTP 401/403)."""


class SourceTimeout(SourceError):
    """The source did not answer in time, after every retry."""


class SourceUnavailable(SourceError):
    """The source answered with a server error or dropped the connection, after every retry."""


class TruncatedDownload(SourceError):
    """A download ended before the size the source announced, after every retry."""


class ModelTooLarge(SourceError):
    """The model is bigger than the configured maximum; nothing was downloaded."""


class VerificationFailed(WeightgateError):
    """The bytes are not the ones that were pinned. The gate fails (exit 2)."""


class DigestMismatch(VerificationFailed):
    """A downloaded file's sha256 differs from the digest the source or the pin declared."""


class RevisionMoved(VerificationFailed):
    """The pinned revision changed between resolve and fetch (ETag, version or size changed)."""
