"""The HTTP client shared by the sources that speak plain HTTPS (https://, MLflow).

One place decides timeouts, TLS trust and what each status code means.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    NotFound,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    Unauthorized,
)

CHUNK_BYTES = 1024 * 1024


def http_client(settings: SourceSettings, headers: dict[str, str] | None = None) -> httpx.Client:
    """A client with the settings' timeout and CA bundle (the system store when unset)."""
    verify: str | bool = str(settings.ca_bundle) if settings.ca_bundle else True
    return httpx.Client(
        timeout=httpx.Timeout(settings.timeout),
        verify=verify,
        headers=headers or {},
        follow_redirects=True,
    )


def check_status(response: httpx.Response, what: str) -> None:
    """Raise the source error for a failed response; `what` names the reference/file."""
    status = response.status_code
    if status < 400:
        return
    detail = f"{what}: HTTP {status} from {response.request.url.copy_with(query=None)}"
    if status in (401, 403):
        raise Unauthorized(f"{detail}: credentials missing or refused")
    if status == 404:
        raise NotFound(f"{detail}: not found")
    if status in (408, 429) or status >= 500:
        raise SourceUnavailable(detail)
    raise SourceError(detail)


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn httpx's transport errors into source errors naming `what`."""
    try:
        yield
    except httpx.TimeoutException as error:
        raise SourceTimeout(f"{what}: timed out ({type(error).__name__})") from error
    except httpx.TransportError as error:
        raise SourceUnavailable(f"{what}: {type(error).__name__}: {error}") from error
