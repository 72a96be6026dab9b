"""`oci://registry/repo:tag` and `oci://registry/repo@sha256:...`: ORAS model artifacts.

An ORAS model artifact (`oras push registry/repo:tag model.safetensors config.json`) is an OCI
image manifest with one layer per file: the layer's `org.opencontainers.image.title` is the
file's path, its digest (the registry's content address) the file's sha256. The revision is the
manifest's digest. KServe's `oci+fetch://` and `oci+native://` are the same references.

oras-py (0.2.43) does what it exposes: the Docker credential lookup (`auths`, `credHelpers`,
`credsStore`) and the bearer-token exchange of its `TokenAuth`, on our requests session. The
requests themselves are ours, on that session, because oras-py's request path does not fit a
gate: `do_request` has no timeout and retries every failure five times with sleeps up to 83 s,
`get_manifest` reads manifests of any size and reports refusals as bare `ValueError`, `get_blob`
has no Range (no resume). It also ignores `DOCKER_CONFIG`, so the config is read here.

Refused with a message saying what to do: image indexes (pin one manifest by digest), container
images such as KServe modelcars (no layer titles: extracting /models from tar layers is not
done), directories oras packed into one layer, and titles that are not safe relative paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any, ClassVar

import oras.auth
import oras.container
import requests
import urllib3.exceptions

from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    DigestMismatch,
    ModelTooLarge,
    NotFound,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    Unauthorized,
    UnsupportedReference,
)
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.retry import with_retries

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))
TITLE = "org.opencontainers.image.title"
ORAS_UNPACK = "io.deis.oras.content.unpack"  # a directory oras packed into a tar+gzip layer
MAX_LAYERS = 10_000
CHUNK_BYTES = 1024 * 1024

# The distribution spec's grammar (docker/distribution reference), restricted to sha256.
_REGISTRY = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")


@dataclass(frozen=True)
class ImageReference:
    """The parts of an `oci://` reference."""

    registry: str
    repository: str
    tag: str
    digest: str | None

    @property
    def lineage(self) -> str:
        """`oci://registry/repo`: the model across its tags and digests."""
        return f"oci://{self.registry}/{self.repository}"

    @property
    def api(self) -> str:
        """The repository's distribution API base URL."""
        host = "registry-1.docker.io" if self.registry == "docker.io" else self.registry
        return f"https://{host}/v2/{self.repository}"


def parse_reference(reference: str) -> ImageReference:
    """Split `oci://registry[:port]/repo[:tag][@sha256:...]` (tag defaults to `latest`)."""
    scheme, separator, rest = reference.partition("://")
    if scheme.lower() not in OciSource.schemes or not separator:
        raise UnsupportedReference(f"{reference}: not an oci:// reference")
    name, at, digest = rest.partition("@")
    registry, _, path = name.partition("/")
    repository, colon, tag = path.rpartition(":") if ":" in path else (path, "", "")
    if "/" in tag:  # the colon was not a tag separator
        repository, colon, tag = path, "", ""
    problem = None
    if not _REGISTRY.fullmatch(registry) or not (
        "." in registry or ":" in registry or registry == "localhost"
    ):
        problem = "name the registry host first: oci://registry.example.com/repo:tag"
    elif not _REPOSITORY.fullmatch(repository):
        problem = f"repository {repository!r} is not a valid OCI repository name"
    elif colon and not _TAG.fullmatch(tag):
        problem = f"tag {tag!r} is not a valid OCI tag"
    elif at and not _SHA256.fullmatch(digest):
        problem = f"digest {digest!r} is not sha256:<64 lower-case hex digits>"
    if problem:
        raise UnsupportedReference(f"{reference}: {problem}")
    return ImageReference(registry, repository, tag or "latest", digest or None)


def docker_config() -> dict[str, Any]:
    """The Docker client's config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).

    `auths` keys are reduced to `host[:port]`, as the Docker client matches them.
    """
    directory = os.environ.get("DOCKER_CONFIG")
    path = Path(directory) / "config.json" if directory else Path.home() / ".docker/config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raw = {}
    except (OSError, ValueError) as error:
        raise SourceError(f"cannot read the Docker config {path}: {error}") from error
    raw = raw if isinstance(raw, dict) else {}
    auths = raw.get("auths")
    auths = {
        key.split("://", 1)[-1].split("/", 1)[0]: entry
        for key, entry in (auths if isinstance(auths, dict) else {}).items()
    }
    return {
        "auths": auths,
        "credsStore": raw.get("credsStore"),
        "credHelpers": raw.get("credHelpers") or {},
    }


def is_safe_path(path: str) -> bool:
    """True for a relative POSIX path without `.`/`..`/empty segments or control characters."""
    return (
        0 < len(path) <= 4096
        and not path.startswith("/")
        and all(part not in ("", ".", "..") for part in path.split("/"))
        and not any(ord(char) < 32 or char in "\\\x7f" for char in path)
    )


def files_of_manifest(
    reference: str, manifest: Any, content_type: str, blobs_url: str
) -> tuple[RemoteFile, ...]:
    """The files of an ORAS artifact manifest, sorted by path; refuse anything else."""
    if not isinstance(manifest, dict):
        raise SourceError(f"{reference}: the manifest is not a JSON object")
    media_type = manifest.get("mediaType") or content_type.split(";", 1)[0].strip()
    if "manifests" in manifest or media_type in (OCI_INDEX, DOCKER_LIST):
        listed = manifest.get("manifests")
        children = [
            str(child.get("digest"))
            for child in (listed if isinstance(listed, list) else [])
            if isinstance(child, dict)
        ]
        raise UnsupportedReference(
            f"{reference}: an image index (of {', '.join(children[:5]) or 'no manifests'}); "
            "pin one manifest by digest: oci://registry/repo@sha256:..."
        )
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise UnsupportedReference(
            f"{reference}: manifest media type {media_type!r} is not understood "
            f"(expected {OCI_MANIFEST} or {DOCKER_MANIFEST})"
        )
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers or len(layers) > MAX_LAYERS:
        raise SourceError(f"{reference}: the manifest lists no layers, or more than {MAX_LAYERS}")
    titled = [layer for layer in layers if isinstance(layer, dict) and _title(layer)]
    if not titled:
        raise UnsupportedReference(
            f"{reference}: a container image (no layer has an {TITLE} annotation), such as a "
            "KServe modelcar; reading models out of image layers is not supported: push the "
            "model files as an ORAS artifact (oras push REGISTRY/REPO:TAG model.safetensors ...)"
        )
    files: dict[str, RemoteFile] = {}
    for layer in layers:
        title = _title(layer) if isinstance(layer, dict) else None
        if not isinstance(layer, dict) or title is None:
            raise SourceError(f"{reference}: a layer without an {TITLE} annotation")
        digest, size = layer.get("digest"), layer.get("size")
        what = f"{reference}: layer {title!r}"
        if not is_safe_path(title):
            raise SourceError(f"{what}: not a safe relative path; refusing the artifact")
        if (layer.get("annotations") or {}).get(ORAS_UNPACK):
            raise UnsupportedReference(f"{what}: a directory packed by oras; push its files")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise SourceError(f"{what}: digest {digest!r} is not sha256:<hex>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise SourceError(f"{what}: size {size!r} is not a byte count")
        if title in files:
            raise SourceError(f"{what}: two layers have this title")
        files[title] = RemoteFile(title, size, digest.removeprefix("sha256:"), blobs_url + digest)
    for path in files:
        parents = path.split("/")[:-1]
        if any("/".join(parents[: end + 1]) in files for end in range(len(parents))):
            raise SourceError(f"{reference}: {path!r} lies under another file's path")
    return tuple(files[path] for path in sorted(files))


def _title(layer: dict[str, Any]) -> str | None:
    annotations = layer.get("annotations")
    title = annotations.get(TITLE) if isinstance(annotations, dict) else None
    return title if isinstance(title, str) else None


class _TimeoutSession(requests.Session):
    """A session whose every request (oras-py's token requests too) has our timeout and TLS trust.

    `verify` goes with each request: requests lets REQUESTS_CA_BUNDLE override the session's.
    """

    def __init__(self, timeout: float, verify: str | bool) -> None:
        super().__init__()
        self.timeout = timeout
        self.verify = verify

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self.verify)
        return super().request(*args, **kwargs)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn requests' exceptions into source errors naming `what`."""
    try:
        yield
    except requests.exceptions.SSLError as error:
        raise SourceError(
            f"{what}: TLS failed ({error}); trust the registry's CA with the CA bundle setting"
        ) from error
    except requests.exceptions.Timeout as error:
        raise SourceTimeout(f"{what}: timed out ({type(error).__name__})") from error
    except requests.exceptions.ChunkedEncodingError as error:
        raise TruncatedDownload(f"{what}: the response ended early ({error})") from error
    except requests.exceptions.ConnectionError as error:
        if error.args and isinstance(error.args[0], urllib3.exceptions.ReadTimeoutError):
            raise SourceTimeout(f"{what}: timed out in the body ({error})") from error  # mid-body
        raise SourceUnavailable(f"{what}: {type(error).__name__}: {error}") from error
    except requests.exceptions.RequestException as error:
        raise SourceError(f"{what}: {type(error).__name__}: {error}") from error


class OciSource:
    """Resolves `oci://` tags to manifest digests and streams layers by digest."""

    schemes: ClassVar[tuple[str, ...]] = ("oci", "oci+fetch", "oci+native")
    max_manifest_bytes: int = 4 * 1024**2  # what the distribution spec has registries accept

    def __init__(self, settings: SourceSettings) -> None:
        self._settings = settings
        self._verify: str | bool = str(settings.ca_bundle) if settings.ca_bundle else True
        self._session = _TimeoutSession(settings.timeout, self._verify)
        # As oras-py does: some registries treat a client that keeps cookies as a browser.
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self._auth_backends: dict[str, Any] = {}  # registry -> oras TokenAuth
        self._authorization: dict[tuple[str, str], str] = {}  # (registry, repo) -> header

    def resolve(self, reference: str) -> ResolvedModel:
        """Pin the tag to its manifest digest and list the artifact's files (no content)."""
        image = parse_reference(reference)
        body, digest, content_type = with_retries(
            self._settings, lambda: self._manifest(reference, image)
        )
        try:
            manifest = json.loads(body)
        except (ValueError, RecursionError) as error:  # RecursionError: hostile nesting
            raise SourceError(f"{reference}: the manifest is not JSON: {error}") from error
        files = files_of_manifest(reference, manifest, content_type, f"{image.api}/blobs/")
        total = sum(file.size for file in files)
        if total > self._settings.max_model_bytes:
            raise ModelTooLarge(
                f"{reference}: {total} bytes in {len(files)} files, over the limit of "
                f"{self._settings.max_model_bytes} bytes"
            )
        return ResolvedModel(
            reference=reference,
            lineage=image.lineage,
            revision=digest,
            pinned=f"{image.lineage}@{digest}",
            files=files,
        )

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        """Stream the layer's blob (named by digest: always the pinned bytes) from `offset`."""
        image = parse_reference(model.pinned)
        what = f"{model.reference}: {file.path}"
        if offset >= file.size:
            yield iter(())
            return
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"

        def attempt() -> requests.Response:
            with _translated(what):
                response = self._get(image, file.locator, headers)
            try:
                self._check(response, what, image)
            except SourceError:
                response.close()
                raise
            return response

        response = with_retries(self._settings, attempt)
        try:
            ranged = response.status_code == 206
            if ranged and not response.headers.get("Content-Range", "").startswith(
                f"bytes {offset}-"
            ):
                raise SourceError(f"{what}: the registry answered another range than asked")
            yield self._body(response, what, 0 if ranged else offset, file.size - offset)
        finally:
            response.close()

    def _manifest(self, reference: str, image: ImageReference) -> tuple[bytes, str, str]:
        """The manifest's bytes, their digest (checked against a pinned one), content type."""
        limit = self.max_manifest_bytes
        url = f"{image.api}/manifests/{image.digest or image.tag}"
        body = bytearray()
        with _translated(reference), self._get(image, url, {"Accept": ACCEPT}) as response:
            self._check(response, reference, image)
            if int(response.headers.get("Content-Length") or 0) > limit:
                raise SourceError(f"{reference}: the manifest is over {limit} bytes")
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > limit:
                    raise SourceError(f"{reference}: the manifest is over {limit} bytes")
            content_type = response.headers.get("Content-Type", "")
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if image.digest and digest != image.digest:
            raise DigestMismatch(
                f"{reference}: the registry sent a manifest whose digest is {digest}"
            )
        return bytes(body), digest, content_type

    def _body(
        self, response: requests.Response, what: str, skip: int, expected: int
    ) -> Iterator[bytes]:
        received = 0
        with _translated(what):
            for data in response.iter_content(CHUNK_BYTES):
                dropped = min(skip, len(data))  # the registry ignored Range: drop what was had
                chunk, skip = data[dropped:], skip - dropped
                received += len(chunk)
                if received > expected:
                    raise DigestMismatch(f"{what}: the blob is longer than the manifest says")
                if chunk:
                    yield chunk
        if received < expected:
            raise TruncatedDownload(f"{what}: {received} of {expected} bytes, then the blob ended")

    def _get(self, image: ImageReference, url: str, headers: dict[str, str]) -> requests.Response:
        """GET with the repository's authorization, negotiated once on a 401 challenge."""
        key = (image.registry, image.repository)
        known = self._authorization.get(key)
        response = self._session.get(url, headers=headers | _authorization(known), stream=True)
        if response.status_code != 401:
            return response
        value = self._negotiate(image, response)
        if value is None:
            return response
        response.close()
        self._authorization[key] = value
        return self._session.get(url, headers=headers | _authorization(value), stream=True)

    def _negotiate(self, image: ImageReference, challenge: requests.Response) -> str | None:
        """The Authorization header answering a 401's challenge (Basic, or oras' token flow)."""
        backend = self._auth_backends.get(image.registry)
        if backend is None:
            backend = oras.auth.get_auth_backend("token", self._session, tls_verify=self._verify)
            backend._auth_config = docker_config()  # oras-py would ignore DOCKER_CONFIG
            container = oras.container.Container(f"{image.registry}/{image.repository}")
            container.registry = image.registry
            backend.load_configs(container)  # auths, credHelpers, credsStore for this host
            self._auth_backends[image.registry] = backend
        scheme = challenge.headers.get("WWW-Authenticate", "").split(" ", 1)[0].lower()
        if scheme == "basic":
            basic = getattr(backend, "_basic_auth", None)
            return f"Basic {basic}" if basic else None
        if scheme != "bearer":
            return None
        try:  # a broken challenge or token reply raises any of these inside oras-py
            headers, changed = backend.authenticate_request(challenge, {}, refresh=True)
        except (ValueError, AttributeError, TypeError) as error:
            raise SourceError(f"{image.lineage}: the token endpoint failed: {error}") from error
        value = headers.get("Authorization") if changed else None
        return value if isinstance(value, str) else None

    def _check(self, response: requests.Response, what: str, image: ImageReference) -> None:
        status = response.status_code
        if status < 300:
            return
        codes = _error_codes(response)
        detail = f"{what}: HTTP {status} from {image.registry}" + (f" ({codes})" if codes else "")
        if status in (401, 403):
            raise Unauthorized(
                f"{detail}: credentials missing or refused; run `docker login {image.registry}` "
                "(or `oras login`), or set DOCKER_CONFIG to a directory whose config.json has "
                "credentials for it"
            )
        if status == 404:
            raise NotFound(f"{detail}: no such repository, tag or blob")
        if status in (408, 429) or status >= 500:
            raise SourceUnavailable(detail)
        raise SourceError(detail)


def _authorization(value: str | None) -> dict[str, str]:
    return {"Authorization": value} if value else {}


def _error_codes(response: requests.Response) -> str:
    """The distribution API's error codes (`MANIFEST_UNKNOWN`, ...) from a small error body."""
    try:
        errors = json.loads(next(response.iter_content(64 * 1024), b"")).get("errors") or []
        return ", ".join(str(error.get("code")) for error in errors if isinstance(error, dict))
    except (ValueError, AttributeError, requests.exceptions.RequestException):
        return ""
