"""`https://host/path/file[#sha256=<hex>]`: one file from a web server, fetched with requests.

requests does the HTTP and TLS, and :mod:`weightgate.sources.http` what every HTTP source
shares (timeout, CA bundle, error translation, streaming from an offset with its checks). Our
own code here is what a plain GET does not give:

* resolve asks for size and ETag without the body: ``HEAD``, else a one-byte ranged ``GET``
  (presigned URLs and some servers refuse ``HEAD``);
* a ``#sha256=`` pin is the file's digest and its revision (``sha256:<pin>``); without one the
  revision is None and the fetched content's digest names it;
* ``open`` asks for exactly the resolved file: ``If-Match`` with its strong ETag (412, or a
  different ETag in the answer, means it moved);
* every answer, after redirects, must still come over https://.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import requests

from weightgate.sources import http
from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    RevisionMoved,
    SourceError,
    UnsupportedReference,
)
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.retry import with_retries

_PIN = re.compile(r"sha256=([0-9a-f]{64})")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_HEAD_REFUSED = (400, 401, 403, 405, 501)  # then ask with a ranged GET before giving up


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


def _strong_etag(response: requests.Response) -> str | None:
    etag = response.headers.get("ETag")
    return None if etag is None or etag.startswith("W/") else etag


class HttpsSource:
    """One file at an https:// URL, optionally pinned by `#sha256=`."""

    schemes: ClassVar[tuple[str, ...]] = ("https",)

    def __init__(self, settings: SourceSettings) -> None:
        """Use `settings`' timeout, CA bundle and size limit."""
        self.settings = settings
        self._session = http.http_session(settings, http.IDENTITY)

    def resolve(self, reference: str) -> ResolvedModel:
        """Size and ETag of the file; the pin, when given, is its digest and revision."""
        url, name, pin = parse_reference(reference)
        size, etag = with_retries(self.settings, lambda: self._probe(reference, url))
        self.settings.check_model_size(reference, size, 1)
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

        def get(headers: dict[str, str]) -> requests.Response:
            if file.etag:
                headers["If-Match"] = file.etag
            return self._session.get(file.locator, headers=headers, stream=True)

        def check(response: requests.Response, what: str) -> None:
            _check_https(response, what)
            etag = _strong_etag(response)
            if response.status_code == 412 or (file.etag and etag and etag != file.etag):
                raise RevisionMoved(
                    f"{what}: {file.path} changed on the server since it was resolved "
                    f"(ETag {file.etag} -> {etag or 'precondition failed'}); resolve it again"
                )
            http.check_status(response, what)

        with http.download(get, file, offset, model.reference, check) as chunks:
            yield chunks

    def _probe(self, reference: str, url: str) -> tuple[int, str | None]:
        with http.translated_errors(reference):
            with self._session.head(url, allow_redirects=True) as response:
                _check_https(response, reference)
                length = response.headers.get("Content-Length", "")
                if response.status_code == 200 and length.isdigit():
                    return int(length), _strong_etag(response)
                if response.status_code != 200 and response.status_code not in _HEAD_REFUSED:
                    http.check_status(response, reference)
            with self._session.get(url, headers={"Range": "bytes=0-0"}, stream=True) as ranged:
                _check_https(ranged, reference)
                http.check_status(ranged, reference)
                return _announced_size(ranged, reference), _strong_etag(ranged)


def _announced_size(response: requests.Response, reference: str) -> int:
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


def _check_https(response: requests.Response, what: str) -> None:
    if urlsplit(response.url).scheme != "https":
        raise SourceError(
            f"{what}: redirected to {urlsplit(response.url)._replace(query='').geturl()}, "
            "which is not https://; refusing to download in the clear"
        )
