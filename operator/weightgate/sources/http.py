"""The HTTP client of the sources that speak HTTP themselves (https://, MLflow, OCI registries).

requests (on urllib3) does the HTTP and TLS. It is already here through oras, and it is the
faster client for big bodies: over loopback TLS, hashing in the same loop, urllib3 read 1 GB
at ~690 MB/s where httpx managed ~315 MB/s (h11 parses each 16 KiB TLS record in Python).

Own code is what every such source needs the same way, so it is written once:

* :func:`http_session`: the settings' timeout on every request and TLS trust from
  `SourceSettings.ca_bundle`, passed with each request so that `REQUESTS_CA_BUNDLE` cannot
  override what the settings say;
* :func:`check_status` and :func:`translated_errors`: what a status code or a requests/urllib3
  exception means, as a source error naming the reference (an untrusted certificate says how to
  trust it, and is not retried);
* :func:`download`: one file from an offset, as the file's own bytes (no content decoding,
  1 MiB reads from the raw urllib3 response), checked against the size resolve listed, with the
  leading bytes skipped when the server ignores ``Range`` (200 instead of 206).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    UntrustedCertificate,
    for_http_status,
    not_the_file,
)
from weightgate.sources.model import RemoteFile

CHUNK_BYTES = 1024 * 1024
IDENTITY = {"Accept-Encoding": "identity"}  # the file's own bytes: what sizes and digests cover
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

Verify = bool | str | Path
StatusCheck = Callable[[requests.Response, str], None]


class Session(requests.Session):
    """A session whose every request, oras-py's token requests too, has our timeout and trust."""

    def __init__(self, timeout: float, verify: Verify) -> None:
        """Apply `timeout` (connect and each read) and `verify` to every request."""
        super().__init__()
        self.timeout = timeout
        self.verify = str(verify) if isinstance(verify, Path) else verify

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        """Send with our timeout and `verify` unless the call gives its own."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self.verify)
        return super().request(*args, **kwargs)


def http_session(
    settings: SourceSettings,
    headers: dict[str, str] | None = None,
    verify: Verify | None = None,
) -> Session:
    """A session with `settings`' timeout; TLS trust is `verify`, else the settings' CA bundle.

    Without either, the system store (or `REQUESTS_CA_BUNDLE`, as requests reads it).
    """
    if verify is None:
        verify = settings.ca_bundle or True
    session = Session(settings.timeout, verify)
    session.headers.update(headers or {})
    return session


def check_status(response: requests.Response, what: str) -> None:
    """Raise the source error for a failed response; `what` names the reference/file."""
    status = response.status_code
    if status < 400:
        return
    url = urlsplit(response.url)._replace(query="").geturl()
    raise for_http_status(status, f"{what}: HTTP {status} from {url}")


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn requests' and urllib3's exceptions into source errors naming `what`."""
    try:
        yield
    except requests.exceptions.SSLError as error:
        raise _tls_error(what, error) from error
    except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError) as error:
        raise SourceTimeout(f"{what}: timed out ({type(error).__name__})") from error
    except requests.exceptions.ConnectionError as error:
        if error.args and isinstance(error.args[0], urllib3.exceptions.ReadTimeoutError):
            raise SourceTimeout(f"{what}: timed out in the body ({error})") from error
        raise SourceUnavailable(f"{what}: {type(error).__name__}: {error}") from error
    except (
        requests.exceptions.ChunkedEncodingError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.SSLError,  # a broken record mid-body
    ) as error:
        raise TruncatedDownload(f"{what}: the connection broke mid-body ({error})") from error
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as error:
        raise SourceError(f"{what}: {type(error).__name__}: {error}") from error


def _tls_error(what: str, error: requests.exceptions.SSLError) -> SourceUnavailable:
    verification = next(
        (cause for cause in _causes(error) if isinstance(cause, ssl.SSLCertVerificationError)),
        None,
    )
    if verification is None:
        return SourceUnavailable(f"{what}: TLS failed: {error}")
    return UntrustedCertificate(
        f"{what}: the server's TLS certificate is not trusted ({verification.reason}: "
        f"{verification.verify_message}); trust its CA with the CA bundle setting "
        "(SourceSettings.ca_bundle, `--ca-bundle PEM`)"
    )


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and what it wraps: requests and urllib3 keep causes in `args` and `reason`."""
    pending, seen = [error], set[int]()
    while pending and len(seen) < 32:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        related = [*current.args, getattr(current, "reason", None)]
        related += [current.__cause__, current.__context__]
        pending.extend(item for item in related if isinstance(item, BaseException))


@contextmanager
def download(
    get: Callable[[dict[str, str]], requests.Response],
    file: RemoteFile,
    offset: int,
    what: str,
    check: StatusCheck = check_status,
) -> Iterator[Iterator[bytes]]:
    """Stream `file` from `offset`: `get(headers)` sends the GET (``stream=True``).

    The request asks for identity encoding and, past 0, ``Range: bytes=<offset>-``. `check`
    judges the status (the source's own error bodies); then the announced size must be the
    listed one, a 206 must start at `offset`, a 200 has its first `offset` bytes skipped, and
    the body must end at the listed size: longer is :func:`.errors.not_the_file`, shorter is a
    TruncatedDownload. The response is closed on leaving.
    """
    if offset >= file.size:
        yield iter(())
        return
    headers = IDENTITY | ({"Range": f"bytes={offset}-"} if offset else {})
    with translated_errors(what):
        response = get(headers)
    try:
        check(response, what)
        skip = _bytes_to_skip(response, file, offset, what)
        yield _body(response, skip, file.size - offset, file, what)
    finally:
        response.close()


def _bytes_to_skip(response: requests.Response, file: RemoteFile, offset: int, what: str) -> int:
    """How many leading body bytes the caller already has; refuses another size or range."""
    announced = response.headers.get("Content-Length", "")
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != offset:
            raise SourceError(
                f"{what}: asked for bytes from {offset}, got the range "
                f"{response.headers.get('Content-Range')!r}"
            )
        announced = match.group(3)
    elif response.status_code != 200:
        raise SourceError(f"{what}: unexpected HTTP {response.status_code} for a download")
    if announced.isdigit() and int(announced) != file.size:
        raise not_the_file(
            what, file.sha256, f"the server announces {announced} bytes, not {file.size}"
        )
    return offset if response.status_code == 200 else 0


def _body(
    response: requests.Response, skip: int, expected: int, file: RemoteFile, what: str
) -> Iterator[bytes]:
    received = 0
    with translated_errors(what):
        try:
            while data := response.raw.read(CHUNK_BYTES, decode_content=False):
                dropped = min(skip, len(data))
                chunk, skip = data[dropped:] if dropped else data, skip - dropped
                received += len(chunk)
                if received > expected:
                    raise not_the_file(
                        what, file.sha256, f"the server sent more than {file.size} bytes"
                    )
                if chunk:
                    yield chunk
        except (urllib3.exceptions.ProtocolError, urllib3.exceptions.SSLError) as error:
            raise TruncatedDownload(
                f"{what}: the server closed the connection after {received} of {expected} "
                f"bytes of the body ({type(error).__name__})"
            ) from error
    if received < expected:
        raise TruncatedDownload(f"{what}: the body ended after {received} of {expected} bytes")
