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

Container images whose layers carry no titles are KServe modelcars: the model is /models
inside the layers, read by :mod:`weightgate.sources.oci_image` while resolving.

An image index (a multi-platform image) is pinned by its own digest; every Linux platform's
manifest is read and they must carry the same files, since each node runs its own platform's.

Refused with a message saying what to do: indexes whose platforms differ, nested indexes,
directories oras packed into one layer, and titles that are not safe relative paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any, ClassVar

import oras.auth
import oras.container
import requests

from weightgate.sources import http
from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import DigestMismatch, SourceError, for_http_status
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.oci_image import ModelcarUnpacking, member_chunks, parse_member_locator
from weightgate.sources.oci_manifest import (
    ACCEPT,
    SCHEMES,
    ImageReference,
    IndexEntry,
    is_index,
    parse_reference,
    read_index,
    read_manifest,
)
from weightgate.sources.retry import with_retries


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


class OciSource:
    """Resolves `oci://` tags to manifest digests and streams layers by digest."""

    schemes: ClassVar[tuple[str, ...]] = SCHEMES
    max_manifest_bytes: int = 4 * 1024**2  # what the distribution spec has registries accept

    def __init__(self, settings: SourceSettings) -> None:
        """Use `settings`' timeout, retries, size limit and CA bundle."""
        self._settings = settings
        self._session = http.http_session(settings)
        # As oras-py does: some registries treat a client that keeps cookies as a browser.
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self._auth_backends: dict[str, Any] = {}  # registry -> oras TokenAuth
        self._authorization: dict[tuple[str, str], str] = {}  # (registry, repo) -> header

    def resolve(self, reference: str) -> ResolvedModel:
        """Pin the tag to its manifest digest and list the model's files.

        An artifact's files are listed from the manifest (no content); a modelcar image's only
        by reading its layers, which also puts every file into the cache (see `oci_image`).
        """
        image = parse_reference(reference)
        manifest, digest, content_type = self._manifest_json(reference, image)
        if is_index(manifest, content_type):
            files = self._files_of_platforms(reference, image, read_index(reference, manifest))
        else:
            files = self._files(reference, image, digest, manifest, content_type)
        self._settings.check_model_size(reference, sum(f.size for f in files), len(files))
        return ResolvedModel(
            reference=reference,
            lineage=image.lineage,
            revision=digest,
            pinned=f"{image.lineage}@{digest}",
            files=files,
        )

    def _files(
        self, reference: str, image: ImageReference, digest: str, manifest: Any, content_type: str
    ) -> tuple[RemoteFile, ...]:
        """The model's files of one (non-index) manifest: an artifact's, or a modelcar's."""
        content = read_manifest(reference, manifest, content_type, f"{image.api}/blobs/")
        if not content.image:
            return content.files
        unpacking = ModelcarUnpacking(
            reference, digest, self._settings, lambda layer: self._blob(image, layer)
        )
        return unpacking.files(content.files)

    def _files_of_platforms(
        self, reference: str, image: ImageReference, platforms: tuple[IndexEntry, ...]
    ) -> tuple[RemoteFile, ...]:
        """The files every platform's manifest of an index carries: they must be the same.

        A node runs the manifest of its own platform, so the gate must not pass one model and
        let another platform's be served: different files per platform refuse the index.
        """
        listings: list[tuple[IndexEntry, tuple[RemoteFile, ...]]] = []
        for platform in platforms:
            pinned = dataclasses.replace(image, digest=platform.digest)
            what = f"{reference} ({platform.platform}, {platform.digest})"
            manifest, digest, content_type = self._manifest_json(what, pinned)
            listings.append((platform, self._files(what, pinned, digest, manifest, content_type)))
        first, files = listings[0]
        for other, other_files in listings[1:]:
            if _contents(other_files) != _contents(files):
                raise SourceError(
                    f"{reference}: the index's platforms carry different models ({first.platform}"
                    f" and {other.platform} differ): the gate cannot tell which one a node will "
                    "run; push one model for all platforms, or pin one manifest by digest"
                )
        return files

    def _manifest_json(self, what: str, image: ImageReference) -> tuple[Any, str, str]:
        """The manifest parsed, its digest (checked against a pinned one), its content type."""
        body, digest, content_type = with_retries(
            self._settings, lambda: self._manifest(what, image)
        )
        try:
            return json.loads(body), digest, content_type
        except (ValueError, RecursionError) as error:  # RecursionError: hostile nesting
            raise SourceError(f"{what}: the manifest is not JSON: {error}") from error

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        """Stream the layer's blob (named by digest: always the pinned bytes) from `offset`.

        A modelcar's file streams its layer again up to the file (it was evicted from the
        cache since the resolve put it there); the fetcher checks its sha256 as for any file.
        """
        image = parse_reference(model.pinned)
        what = f"{model.reference}: {file.path}"
        member = parse_member_locator(file.locator)
        if member is None:
            with self._blob(image, file, offset, what) as chunks:
                yield chunks
            return
        layer, member_name = member
        with self._blob(image, layer, 0, what) as chunks:
            yield _skip(member_chunks(chunks, member_name, what), offset)

    def _blob(
        self, image: ImageReference, file: RemoteFile, offset: int = 0, what: str = ""
    ) -> AbstractContextManager[Iterator[bytes]]:
        """Stream a blob by digest (its locator is the blob URL), size checked."""
        return http.download(
            lambda headers: self._get(image, file.locator, headers),
            file,
            offset,
            what or f"{image.lineage}: blob sha256:{file.sha256}",
            lambda response, what: self._check(response, what, image),
        )

    def _manifest(self, reference: str, image: ImageReference) -> tuple[bytes, str, str]:
        """The manifest's bytes, their digest (checked against a pinned one), content type."""
        limit = self.max_manifest_bytes
        url = f"{image.api}/manifests/{image.digest or image.tag}"
        body = bytearray()
        with (
            http.translated_errors(reference),
            self._get(image, url, {"Accept": ACCEPT}) as response,
        ):
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
            verify = self._session.verify
            backend = oras.auth.get_auth_backend("token", self._session, tls_verify=verify)
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
        refused = (
            f"credentials missing or refused; run `docker login {image.registry}` (or `oras "
            "login`), or set DOCKER_CONFIG to a directory whose config.json has credentials for it"
        )
        raise for_http_status(status, detail, refused, "no such repository, tag or blob")


def _contents(files: tuple[RemoteFile, ...]) -> set[tuple[str, int, str | None]]:
    return {(file.path, file.size, file.sha256) for file in files}


def _skip(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    """`chunks` without their first `count` bytes (a resumed download of a layer member)."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:] if count else chunk
        count = 0


def _authorization(value: str | None) -> dict[str, str]:
    return {"Authorization": value} if value else {}


def _error_codes(response: requests.Response) -> str:
    """The distribution API's error codes (`MANIFEST_UNKNOWN`, ...) from a small error body."""
    try:
        errors = json.loads(next(response.iter_content(64 * 1024), b"")).get("errors") or []
        return ", ".join(str(error.get("code")) for error in errors if isinstance(error, dict))
    except (ValueError, AttributeError, requests.exceptions.RequestException):
        return ""
