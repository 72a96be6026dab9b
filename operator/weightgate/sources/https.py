"""`https://host/path/file[#sha256=<hex>]`: one file from a web server, fetched with httpx.

httpx does the HTTP and TLS (through :mod:`weightgate.sources.http`, which sets the timeout and
the CA bundle). Our own code is what a plain GET does not give:

* resolve asks for size and ETag without the body: ``HEAD``, else a one-byte ranged ``GET``
  (presigned URLs and some servers refuse ``HEAD``);
* a ``#sha256=`` pin is the file's digest and its revision (``sha256:<pin>``); without one the
  revision is None and the fetched content's digest names it;
* ``open`` asks for exactly the resolved file: ``If-Match`` with its strong ETag (412, or a
  different ETag in the answer, means it moved), ``Range`` from the resumed offset, and a server
  that ignores ``Range`` (200) has the bytes before the offset skipped;
* a connection closed mid-body is a truncated download (retried by resuming), and a TLS
  certificate that is not trusted is said so, once, without retries.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import httpx

from weightgate.sources import http
from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    ModelTooLarge,
    RevisionMoved,
    SourceError,
    SourceUnavailable,
    TruncatedDownload,
    UnsupportedReference,
)
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.retry import with_retries

_PIN = re.compile(r"sha256=([0-9a-f]{64})")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_HEAD_REFUSED = (400, 401, 403, 405, 501)  # then ask with a ranged GET before giving up
_HEADERS = {"Accept-Encoding": "identity"}  # the file's own bytes: what the digest covers


class _UntrustedCertificate(Exception):
    """Raised inside retried calls: not retryable, turned into SourceUnavailable once."""


def parse_reference(reference: str) -> tuple[str, str, str | None]:
    """Split `reference` into (URL without fragment, file name, sha256 pin or None)."""
    parts = urlsplit(reference)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise UnsupportedReference(f"{reference}: expected https://host/path/file")
    pin: str | None = None
    if parts.fragment:
        match = _PIN.fullmatch(parts.fragment.lower())
        if match is None:
            raise UnsupportedReference(
                f"{reference}: the fragment must be #sha256=<64 hex digits> (the file's digest)"
            )
        pin = match.group(1)
    name = unquote(parts.path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsupportedReference(f"{reference}: the URL must end in a file name")
    return parts._replace(fragment="").geturl(), name, pin


def _strong_etag(response: httpx.Response) -> str | None:
    etag = response.headers.get("ETag")
    return None if etag is None or etag.startswith("W/") else etag


def _is_untrusted_certificate(error: httpx.TransportError) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


class HttpsSource:
    """One file at an https:// URL, optionally pinned by `#sha256=`."""

    schemes: ClassVar[tuple[str, ...]] = ("https",)

    def __init__(self, settings: SourceSettings) -> None:
        """Use `settings`' timeout, CA bundle and size limit."""
        self.settings = settings
        self._client = http.http_client(settings, _HEADERS)

    def resolve(self, reference: str) -> ResolvedModel:
        """Size and ETag of the file; the pin, when given, is its digest and revision."""
        url, name, pin = parse_reference(reference)
        try:
            size, etag = with_retries(self.settings, lambda: self._probe(reference, url))
        except _UntrustedCertificate as error:
            raise SourceUnavailable(str(error)) from error.__cause__
        if size > self.settings.max_model_bytes:
            raise ModelTooLarge(
                f"{reference}: {size} bytes is more than the limit of "
                f"{self.settings.max_model_bytes} bytes; nothing was downloaded"
            )
        file = RemoteFile(path=name, size=size, sha256=pin, locator=url, etag=etag)
        return ResolvedModel(
            reference=reference,
            lineage=url,
            revision=f"sha256:{pin}" if pin else None,
            pinned=reference,
            files=(file,),
        )

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        """Stream the file from `offset`, refusing any other version of it."""
        what = f"{model.reference}"
        headers: dict[str, str] = {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        if file.etag:
            headers["If-Match"] = file.etag
        with (
            http.translated_errors(what),
            self._client.stream("GET", file.locator, headers=headers) as response,
        ):
            self._check_same_file(response, file, what)
            skip = 0
            if offset and response.status_code == 200:
                skip = offset  # the server ignored Range: drop what we already have
            elif offset:
                self._check_range(response, offset, what)
            yield self._body(response, skip, what)

    def _probe(self, reference: str, url: str) -> tuple[int, str | None]:
        with self._transport_errors(reference):
            response = self._client.head(url)
            self._check_https(response, reference)
            length = response.headers.get("Content-Length")
            if response.status_code == 200 and length is not None and length.isdigit():
                return int(length), _strong_etag(response)
            if response.status_code != 200 and response.status_code not in _HEAD_REFUSED:
                http.check_status(response, reference)
            with self._client.stream("GET", url, headers={"Range": "bytes=0-0"}) as ranged:
                self._check_https(ranged, reference)
                http.check_status(ranged, reference)
                return self._announced_size(ranged, reference), _strong_etag(ranged)

    @staticmethod
    def _announced_size(response: httpx.Response, reference: str) -> int:
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match and match.group(3) != "*":
                return int(match.group(3))
        length = response.headers.get("Content-Length", "")
        if response.status_code == 200 and length.isdigit():
            return int(length)
        raise SourceError(
            f"{reference}: the server does not announce the file's size "
            "(no Content-Length or Content-Range); weightgate needs it to verify the download"
        )

    @contextmanager
    def _transport_errors(self, reference: str) -> Iterator[None]:
        try:
            with http.translated_errors(reference):
                yield
        except SourceUnavailable as error:
            cause = error.__cause__
            if isinstance(cause, httpx.TransportError) and _is_untrusted_certificate(cause):
                raise _UntrustedCertificate(
                    f"{reference}: the server's TLS certificate is not trusted "
                    f"({cause}); trust its CA with the CA bundle setting "
                    f"(SourceSettings.ca_bundle, now {self.settings.ca_bundle or 'system store'})"
                ) from cause
            raise

    @staticmethod
    def _check_https(response: httpx.Response, reference: str) -> None:
        if response.url.scheme != "https":
            raise SourceError(
                f"{reference}: redirected to {response.url.copy_with(query=None)}, "
                "which is not https://; refusing to download in the clear"
            )

    @staticmethod
    def _check_same_file(response: httpx.Response, file: RemoteFile, what: str) -> None:
        HttpsSource._check_https(response, what)
        etag = _strong_etag(response)
        if response.status_code == 412 or (file.etag and etag and etag != file.etag):
            raise RevisionMoved(
                f"{what}: {file.path} changed on the server since it was resolved "
                f"(ETag {file.etag} -> {etag or 'precondition failed'}); resolve it again"
            )
        http.check_status(response, what)

    @staticmethod
    def _check_range(response: httpx.Response, offset: int, what: str) -> None:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if response.status_code != 206 or match is None or int(match.group(1)) != offset:
            raise SourceUnavailable(
                f"{what}: asked for bytes from {offset}, got HTTP {response.status_code} "
                f"with Content-Range {response.headers.get('Content-Range')!r}"
            )

    @staticmethod
    def _body(response: httpx.Response, skip: int, what: str) -> Iterator[bytes]:
        received = 0
        with http.translated_errors(what):
            try:
                for chunk in response.iter_bytes():  # as received: a cut keeps every byte
                    received += len(chunk)
                    if skip >= len(chunk):
                        skip -= len(chunk)
                        continue
                    yield chunk[skip:] if skip else chunk
                    skip = 0
            except httpx.RemoteProtocolError as error:
                raise TruncatedDownload(
                    f"{what}: the server closed the connection after {received} bytes "
                    f"of the body ({error})"
                ) from error
