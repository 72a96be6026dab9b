"""Retries with exponential backoff, for the failures that can pass.

Timeouts, dropped connections, server errors and truncated bodies are retried; refusals
(401/403/404) and verification failures are final at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import SourceTimeout, SourceUnavailable, TruncatedDownload

T = TypeVar("T")
RETRYABLE: tuple[type[Exception], ...] = (SourceTimeout, SourceUnavailable, TruncatedDownload)


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
    for remaining in range(settings.retries, -1, -1):
        try:
            return attempt()
        except RETRYABLE as error:
            if remaining == 0:
                if settings.retries:
                    error.args = (f"{error} (after {settings.retries + 1} attempts)",)
                raise
            sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
