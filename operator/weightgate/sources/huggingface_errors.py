"""What huggingface_hub's and httpx2's exceptions mean, as weightgate's source errors.

huggingface_hub maps the hub's `X-Error-Code` answers to its own exceptions; this module says
what each means for a gate and what to do about it (set HF_TOKEN, accept a gated repository's
conditions, unset HF_HUB_OFFLINE). httpx2 is huggingface_hub's HTTP client, so its transport
errors are translated here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx2
from huggingface_hub.errors import (
    DisabledRepoError,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from weightgate.sources.errors import (
    DigestMismatch,
    NotFound,
    RevisionMoved,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    Unauthorized,
    UnsupportedReference,
    for_http_status,
)

SET_TOKEN = "set HF_TOKEN (or run `hf auth login`) to a token that can read it"


@dataclass(frozen=True)
class Hub:
    """What an error message says about the hub: where it is, whether a token was sent."""

    endpoint: str
    has_token: bool
    timeout: float


@contextmanager
def translated_errors(hub: Hub, what: str, streaming: bool = False) -> Iterator[None]:
    """Turn huggingface_hub's and httpx2's exceptions into source errors naming `what`.

    With `streaming`, a connection that breaks is a truncated download (resumed by a retry).
    """
    try:
        yield
    except (SourceError, DigestMismatch, RevisionMoved):
        raise
    except GatedRepoError as error:
        raise Unauthorized(
            f"{what}: the repository is gated: accept its conditions on its page on "
            f"{hub.endpoint}, then set HF_TOKEN to that account's token"
            f"{_server_says(error)}"
        ) from error
    except RepositoryNotFoundError as error:
        raise _repository_error(hub, what, error) from error
    except RevisionNotFoundError as error:
        raise NotFound(f"{what}: no such revision{_server_says(error)}") from error
    except EntryNotFoundError as error:
        raise NotFound(f"{what}: no such file in the commit") from error
    except DisabledRepoError as error:
        raise SourceError(f"{what}: the repository is disabled on the hub") from error
    except HfHubHTTPError as error:
        raise _http_error(hub, what, error) from error
    except OfflineModeIsEnabled as error:
        raise SourceError(f"{what}: HF_HUB_OFFLINE is set; unset it to reach the hub") from error
    except httpx2.TimeoutException as error:
        raise SourceTimeout(
            f"{what}: no answer within {hub.timeout} s ({type(error).__name__})"
        ) from error
    except httpx2.RemoteProtocolError as error:
        if streaming:
            raise TruncatedDownload(f"{what}: the download stopped early: {error}") from error
        raise SourceUnavailable(f"{what}: {error}") from error
    except httpx2.TransportError as error:
        raise SourceUnavailable(f"{what}: {type(error).__name__}: {error}") from error
    except httpx2.HTTPError as error:  # too many redirects, and the like
        raise SourceError(f"{what}: {type(error).__name__}: {error}") from error
    except HFValidationError as error:
        raise UnsupportedReference(f"{what}: {error}") from error
    except (ValueError, KeyError, TypeError) as error:  # malformed JSON from the hub
        raise SourceError(f"{what}: unexpected answer from {hub.endpoint}: {error!r}") from error


def _repository_error(hub: Hub, what: str, error: RepositoryNotFoundError) -> SourceError:
    if _status(error) == 401:  # the hub's answer to anonymous requests for private repos
        if hub.has_token:
            return Unauthorized(f"{what}: the hub refused HF_TOKEN{_server_says(error)}")
        return Unauthorized(
            f"{what}: the hub knows no such repository for an anonymous request: it does "
            f"not exist, or it is private or gated: {SET_TOKEN}"
        )
    hint = ", or HF_TOKEN's account cannot read it" if hub.has_token else ""
    return NotFound(f"{what}: no such repository on {hub.endpoint}{hint}")


def _http_error(hub: Hub, what: str, error: HfHubHTTPError) -> SourceError:
    status = _status(error)
    detail = f"{what}: HTTP {status} from {hub.endpoint}{_server_says(error)}"
    return for_http_status(
        status, detail, "the hub refused HF_TOKEN" if hub.has_token else SET_TOKEN
    )


def _status(error: HfHubHTTPError) -> int:
    return int(error.response.status_code) if error.response is not None else 0


def _server_says(error: HfHubHTTPError) -> str:
    return f" (hub: {error.server_message})" if error.server_message else ""
