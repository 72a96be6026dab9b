"""Retries with exponential backoff, for the failures that can pass.

Timeouts, dropped connections, server errors and truncated bodies are retried; refusals
(401/403/404), an untrusted certificate and verification failures are final at once.

One level only: a resolve call is retried by its source, a download (open and stream) by the
fetcher; a source never retries inside `open`, so attempts never multiply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    UntrustedCertificate,
)

T = TypeVar("T")
RETRYABLE: tuple[type[Exception], ...] = (SourceTimeout, SourceUnavailable, TruncatedDownload)
FINAL: tuple[type[Exception], ...] = (UntrustedCertificate,)  # retryable kinds waiting cannot fix


def with_retries(
    settings: SourceSettings,
    attempt: Callable[[], T],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `attempt` until it succeeds or raises a non-retryable error.

    After `settings.retries` further failures, re-raise the last one (its message gains the
    number of attempts).
    """
    delay = settings.backoff
    for attempts in range(1, settings.retries + 2):
        try:
            return attempt()
        except RETRYABLE as error:
            if attempts > settings.retries or isinstance(error, FINAL):
                if attempts > 1:
                    error.args = (f"{error} (after {attempts} attempts)",)
                raise
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
