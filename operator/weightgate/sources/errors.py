"""What can go wrong between a model reference and verified bytes on disk.

Every error names the reference (and file) it concerns and says what to do about it. They
are :class:`~weightgate.errors.InputError` (the CLI exits 1: the gate could not run) except
:class:`DigestMismatch` and :class:`RevisionMoved`, which mean the bytes are not the ones that
were pinned: a verification failure, so the gate fails (exit 2, admission denied).
"""

from __future__ import annotations

from weightgate.errors import InputError, VerificationFailed


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


class UntrustedCertificate(SourceUnavailable):
    """The server's TLS certificate does not chain to a trusted CA. Not retried: trust the CA."""


class TruncatedDownload(SourceError):
    """A download ended before the size the source announced, after every retry."""


class ModelTooLarge(SourceError):
    """The model is bigger than the configured maximum; nothing was downloaded."""


class DigestMismatch(VerificationFailed):
    """A downloaded file's sha256 differs from the digest the source or the pin declared."""


class RevisionMoved(VerificationFailed):
    """The pinned revision changed between resolve and fetch (ETag, version or size changed)."""


def not_the_file(what: str, sha256: str | None, detail: str) -> DigestMismatch | RevisionMoved:
    """The error for bytes that cannot be a listed file's: its pinned digest fails, else it moved.

    `detail` says what showed it (another size announced, more bytes than listed).
    """
    if sha256:
        return DigestMismatch(f"{what}: {detail}, so it cannot match the pinned sha256 {sha256}")
    return RevisionMoved(
        f"{what}: {detail}: the file changed since it was resolved; resolve it again"
    )


def for_http_status(
    status: int,
    detail: str,
    refused: str = "credentials missing or refused",
    missing: str = "not found",
) -> SourceError:
    """What an HTTP error status means, for every source that sees one.

    `detail` names the reference and the answer; `refused` (401/403) says which credentials
    to set, `missing` (404) what is missing. 408, 429 and 5xx are retryable.
    """
    if status in (401, 403):
        return Unauthorized(f"{detail}: {refused}")
    if status == 404:
        return NotFound(f"{detail}: {missing}")
    if status in (408, 429) or status >= 500:
        return SourceUnavailable(detail)
    return SourceError(detail)
