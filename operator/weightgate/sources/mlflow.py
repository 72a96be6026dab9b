"""`models:/` references: versions of models in an MLflow model registry, over its REST API.

httpx (:mod:`weightgate.sources.http`) does the HTTP; MLflow's own client is not used because
it would bring dozens of heavy dependencies into the gate for a handful of GET requests. Our
own code parses the reference as MLflow does, follows alias -> version -> the place the
tracking server serves that version's artifacts from, lists them recursively, and streams them.

References: `models:/name/<version>`, `models:/name@<alias>` and `models:/name/latest` (the
highest version, as MLflow's client reads it; resolved to that concrete version). Stages
(`models:/name/Production`) are refused: MLflow deprecated them; use an alias. The tracking
server is `MLFLOW_TRACKING_URI` (http or https only); credentials `MLFLOW_TRACKING_USERNAME` +
`MLFLOW_TRACKING_PASSWORD` (basic) else `MLFLOW_TRACKING_TOKEN` (Bearer), MLflow's own order;
TLS trust `MLFLOW_TRACKING_SERVER_CERT_PATH` or `MLFLOW_TRACKING_INSECURE_TLS=true`, else
`SourceSettings.ca_bundle`.

A version's artifacts are read where the tracking server serves them: `mlflow-artifacts:`
sources through the artifact proxy, `runs:/` sources and sources under their run's artifact
root through the run artifact API, `models:/m-...` sources (MLflow 3 logged models) through
the logged-model artifact API. Any other source (a bucket the server does not proxy) is
refused with the location, so it can be fetched from there directly.

What is immutable: the revision `models:/name/<version>`. The registry never changes a
version's source or run and never reuses a version number while the registered model exists
(deleted versions keep theirs). What is not: the artifact bytes (anyone with write access to
the store can overwrite them), and a name reused after its registered model was deleted or
renamed (its version 1 is another model). MLflow publishes no digests, so every `sha256` is
None and the fetched content digest names the content. A rewrite between resolve and download
is caught by size: `open` raises RevisionMoved when the server announces another size
(Content-Length, Content-Range) or sends more bytes than resolve listed.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

import httpx

from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    ModelTooLarge,
    NotFound,
    RevisionMoved,
    SourceError,
    SourceTimeout,
    TruncatedDownload,
    Unauthorized,
    UnsupportedReference,
)
from weightgate.sources.http import CHUNK_BYTES, check_status, http_client, translated_errors
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.retry import with_retries

CREDENTIALS = "set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
MAX_FILES = 100_000
MAX_DEPTH = 64
API = "api/2.0/mlflow"
Json = dict[str, Any]


@dataclass(frozen=True)
class ModelSelector:
    """A parsed `models:/` reference: a version, an alias, or neither (the latest version)."""

    name: str
    version: str | None = None
    alias: str | None = None


def parse_reference(reference: str) -> ModelSelector:
    """Split `models:/name/<version>`, `models:/name@<alias>` or `models:/name/latest`."""
    scheme, _, path = reference.partition(":")
    if scheme.lower() != "models" or not path.startswith("/") or path.startswith("//"):
        raise UnsupportedReference(
            f"{reference}: expected models:/name/<version> or models:/name@<alias> "
            "(the registry is the server in MLFLOW_TRACKING_URI)"
        )
    parts = path[1:].split("/")
    if len(parts) == 2 and parts[0] and parts[1].isdigit():
        return ModelSelector(parts[0], version=parts[1])
    if len(parts) == 2 and parts[0] and parts[1].lower() == "latest":
        return ModelSelector(parts[0])
    if len(parts) == 2 and parts[0] and parts[1]:
        raise UnsupportedReference(
            f"{reference}: {parts[1]!r} is not a version; stages are deprecated in MLflow, "
            f"use an alias (models:/{parts[0]}@<alias>) or a version number"
        )
    name, at, alias = parts[0].rpartition("@")
    if len(parts) == 1 and at and name and alias:
        return ModelSelector(name, alias=alias)
    raise UnsupportedReference(
        f"{reference}: expected models:/name/<version>, models:/name@<alias> or "
        "models:/name/latest (a logged model id must be registered as a version first)"
    )


@dataclass(frozen=True)
class TrackingServer:
    """The MLflow server of `MLFLOW_TRACKING_URI`, with credentials and TLS trust."""

    url: str
    headers: dict[str, str]
    auth: tuple[str, str] | None
    ca_bundle: Path | None
    insecure: bool

    @classmethod
    def from_environment(cls, reference: str) -> TrackingServer:
        """Read MLflow's environment variables; raise SourceError naming what to set."""
        uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if not uri:
            raise SourceError(
                f"{reference}: set MLFLOW_TRACKING_URI to the MLflow tracking server "
                "(https://host:port) that holds the model registry"
            )
        if urlsplit(uri).scheme not in ("http", "https") or not urlsplit(uri).netloc:
            raise UnsupportedReference(
                f"{reference}: MLFLOW_TRACKING_URI={uri} is not an http(s) tracking server; "
                "weightgate reads models:/ only from an MLflow server's REST API"
            )
        env = os.environ.get
        user, password, token = (
            env(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD", "TOKEN")
        )
        cert = env("MLFLOW_TRACKING_SERVER_CERT_PATH")
        insecure = env("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true"
        if cert and insecure:
            raise SourceError(
                f"{reference}: MLFLOW_TRACKING_SERVER_CERT_PATH and "
                "MLFLOW_TRACKING_INSECURE_TLS are mutually exclusive; unset one"
            )
        headers = {} if (user and password) or not token else {"Authorization": f"Bearer {token}"}
        auth = (user, password) if user and password else None
        return cls(uri.rstrip("/"), headers, auth, Path(cert) if cert else None, insecure)

    def client(self, settings: SourceSettings) -> httpx.Client:
        """An httpx client for this server (timeouts and retries from `settings`)."""
        if self.insecure:
            timeout = httpx.Timeout(settings.timeout)
            client = httpx.Client(timeout=timeout, verify=False, follow_redirects=True)
        else:
            trusted = replace(settings, ca_bundle=self.ca_bundle or settings.ca_bundle)
            client = http_client(trusted)
        client.headers.update(self.headers)
        client.headers["Accept-Encoding"] = "identity"  # sizes are checked on the wire
        if self.auth:
            client.auth = httpx.BasicAuth(*self.auth)
        return client


@dataclass(frozen=True)
class ArtifactTree:
    """Where the tracking server lists and serves one version's artifacts.

    Attributes:
        kind: `proxy` (mlflow-artifacts), `run` (run artifacts) or `logged` (logged model).
        key: The run id or logged model id (empty for the proxy).
        root: The version's directory, relative to the proxy, run or logged model root.
    """

    kind: str
    key: str
    root: str

    def listing(self, directory: str) -> tuple[str, dict[str, str]]:
        """The endpoint and query that list `directory` (relative to the tree's root)."""
        if self.kind == "proxy":
            return "api/2.0/mlflow-artifacts/artifacts", {"path": directory}
        if self.kind == "run":
            return "api/2.0/mlflow/artifacts/list", {"run_id": self.key, "path": directory}
        path = f"api/2.0/mlflow/logged-models/{quote(self.key, safe='')}/artifacts/directories"
        return path, {"artifact_directory_path": directory} if directory else {}

    def locator(self, path: str) -> str:
        """The URL, relative to the tracking server, that downloads `path`."""
        if self.kind == "proxy":
            return f"api/2.0/mlflow-artifacts/artifacts/{quote(path)}"
        if self.kind == "run":
            return "get-artifact?" + urlencode({"run_id": self.key, "path": path})
        endpoint = f"ajax-api/2.0/mlflow/logged-models/{quote(self.key, safe='')}/artifacts/files"
        return f"{endpoint}?{urlencode({'artifact_file_path': path})}"


def _safe_path(path: str, reference: str) -> str:
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise SourceError(f"{reference}: the tracking server listed an unsafe path {path!r}")
    return path


def _relative(uri: str, base: str) -> str | None:
    """`uri` relative to `base` (`""` when equal), or None when it is not under `base`."""
    uri, base = uri.rstrip("/"), base.rstrip("/")
    if uri == base:
        return ""
    return uri[len(base) + 1 :] if uri.startswith(base + "/") else None


class MlflowSource:
    """Resolves `models:/` references against the MLflow tracking server's model registry."""

    schemes: ClassVar[tuple[str, ...]] = ("models",)

    def __init__(self, settings: SourceSettings) -> None:
        """Use `settings`' timeouts, retries, size limit and CA bundle."""
        self.settings = settings

    def resolve(self, reference: str) -> ResolvedModel:
        """Pin the reference to a version and list its artifacts with their sizes."""
        selector = parse_reference(reference)
        with Registry(TrackingServer.from_environment(reference), self.settings) as registry:
            version = registry.version(selector, reference)
            pinned = f"models:/{selector.name}/{version['version']}"
            if version.get("status", "READY") != "READY":
                raise SourceError(f"{reference}: {pinned} is {version.get('status')}; retry later")
            files = registry.files(registry.tree(version, pinned), pinned)
        if not files:
            raise NotFound(f"{reference}: {pinned} has no artifacts at {version.get('source')}")
        resolved = ResolvedModel(
            reference=reference,
            lineage=f"models:/{selector.name}",
            revision=pinned,
            pinned=pinned,
            files=tuple(sorted(files, key=lambda file: file.path)),
        )
        if resolved.total_size > self.settings.max_model_bytes:
            raise ModelTooLarge(
                f"{reference}: {resolved.total_size} bytes exceeds the limit of "
                f"{self.settings.max_model_bytes} bytes; nothing was downloaded"
            )
        return resolved

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        """Stream `file` from `offset` (a Range request; skipped locally if Range is ignored)."""
        what = f"{model.pinned}: {file.path}"
        if not 0 <= offset <= file.size:
            raise SourceError(f"{what}: offset {offset} outside the file's {file.size} bytes")
        if offset == file.size:  # nothing left to send (a Range there would be refused)
            yield iter(())
            return
        server = TrackingServer.from_environment(model.reference)
        with Registry(server, self.settings) as registry:
            response = with_retries(self.settings, lambda: registry.download(file, offset, what))
            try:
                skip = offset if response.status_code == 200 else 0
                yield _chunks(response, skip, file.size - offset, what)
            finally:
                response.close()


class Registry:
    """The registry and artifact endpoints of one tracking server, over one httpx client."""

    def __init__(self, server: TrackingServer, settings: SourceSettings) -> None:
        """Connect to `server` with `settings`' timeouts and retries."""
        self.server = server
        self.settings = settings
        self.client = server.client(settings)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()

    def get(self, what: str, endpoint: str, **params: str) -> Json:
        """GET `endpoint` (relative to the server) as JSON, with retries; errors name `what`."""

        def attempt() -> Json:
            with translated_errors(what):
                response = self.client.get(f"{self.server.url}/{endpoint}", params=params)
            _raise_for_error(response, what)
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise SourceError(f"{what}: {self.server.url} did not answer with a JSON object")
            return body

        return with_retries(self.settings, attempt)

    def version(self, selector: ModelSelector, reference: str) -> Json:
        """The model version `selector` names (for an alias or `latest`: where it points now)."""
        name = selector.name
        if selector.alias is not None:
            body = self.get(
                reference, f"{API}/registered-models/alias", name=name, alias=selector.alias
            )
        elif selector.version is not None:
            body = self.get(
                reference, f"{API}/model-versions/get", name=name, version=selector.version
            )
        else:
            body = self.get(reference, f"{API}/registered-models/get-latest-versions", name=name)
            numbered = [
                v for v in body.get("model_versions", []) if str(v.get("version")).isdigit()
            ]
            if not numbered:
                raise NotFound(f"{reference}: registered model {name!r} has no versions")
            body = {"model_version": max(numbered, key=lambda v: int(v["version"]))}
        version = body.get("model_version")
        if not isinstance(version, dict) or not str(version.get("version")).isdigit():
            raise SourceError(f"{reference}: the registry answered without a version number")
        return version

    def tree(self, version: Json, pinned: str) -> ArtifactTree:
        """Where the server lists and serves `version`'s artifacts."""
        source, run_id = str(version.get("source", "")), str(version.get("run_id") or "")
        parts = urlsplit(source)
        if parts.scheme == "mlflow-artifacts" and parts.netloc in (
            "",
            urlsplit(self.server.url).netloc,
        ):
            return ArtifactTree("proxy", "", parts.path.strip("/"))
        if parts.scheme == "models" and parts.path.lstrip("/").startswith("m-"):
            return ArtifactTree("logged", parts.path.strip("/"), "")
        if parts.scheme == "runs":
            run_id, _, root = f"{parts.netloc}{parts.path}".strip("/").partition("/")
            return ArtifactTree("run", run_id, root)
        if run_id:  # a source under its run's artifact root (s3://..., file://...)
            run = self.get(pinned, f"{API}/runs/get", run_id=run_id)
            root_uri = str(run.get("run", {}).get("info", {}).get("artifact_uri", ""))
            under_root = _relative(source, root_uri) if root_uri else None
            if under_root is not None:
                return ArtifactTree("run", run_id, under_root)
        raise UnsupportedReference(
            f"{pinned}: its artifacts are at {source}, which the tracking server does not "
            "serve (it serves mlflow-artifacts:/, run and logged-model artifacts); fetch "
            "them from that location directly"
        )

    def files(self, tree: ArtifactTree, pinned: str) -> list[RemoteFile]:
        """Every file under the tree's root, recursively, with the sizes the server lists."""
        files: list[RemoteFile] = []
        pending, pages = [(tree.root, 0)], 0
        while pending:
            directory, depth = pending.pop()
            endpoint, params = tree.listing(directory)
            page: Json = {"next_page_token": ""}
            while "next_page_token" in page:  # only the run artifact API pages
                pages += 1
                if depth > MAX_DEPTH or pages + len(files) > MAX_FILES:
                    raise SourceError(f"{pinned}: more than {MAX_FILES} artifacts or pages")
                if page["next_page_token"]:
                    params["page_token"] = str(page["next_page_token"])
                page = self.get(pinned, endpoint, **params)
                for entry in page.get("files", []):
                    name = _safe_path(str(entry.get("path", "")), pinned)
                    if tree.kind == "proxy":  # the proxy lists base names, the others full paths
                        name = posixpath.join(directory, name)
                    path = _relative(name, tree.root) if tree.root else name
                    if not path:
                        raise SourceError(f"{pinned}: the server listed {name!r} outside the model")
                    size = int(entry.get("file_size", -1))
                    if entry.get("is_dir"):
                        pending.append((name, depth + 1))
                    elif size < 0:
                        raise SourceError(f"{pinned}: the server listed {path} without a size")
                    else:
                        files.append(RemoteFile(path=path, size=size, locator=tree.locator(name)))
        return files

    def download(self, file: RemoteFile, offset: int, what: str) -> httpx.Response:
        """Start streaming `file` from `offset`; RevisionMoved if its size changed."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        request = self.client.build_request(
            "GET", f"{self.server.url}/{file.locator}", headers=headers
        )
        with translated_errors(what):
            response = self.client.send(request, stream=True)
        if response.status_code >= 400:
            with translated_errors(what):
                response.read()
            _raise_for_error(response, what)
        size = response.headers.get("Content-Length", "")
        if response.status_code == 206:
            unit, _, span = response.headers.get("Content-Range", "").partition(" ")
            first, size = span.partition("-")[0], span.rpartition("/")[2]
            if unit != "bytes" or first != str(offset):
                response.close()
                raise SourceError(f"{what}: the server sent another range than bytes {offset}-")
        if size.isdigit() and int(size) != file.size:
            response.close()
            raise RevisionMoved(
                f"{what}: the server now has {size} bytes where resolve listed {file.size}: "
                "the artifact was overwritten; resolve the reference again"
            )
        return response


def _chunks(response: httpx.Response, skip: int, expected: int, what: str) -> Iterator[bytes]:
    received = 0
    try:
        for data in response.iter_raw(CHUNK_BYTES):
            chunk = data[skip:]  # the server ignored Range: drop what the caller already has
            skip -= len(data) - len(chunk)
            received += len(chunk)
            if received > expected:
                raise RevisionMoved(f"{what}: more bytes than the size listed at resolve")
            if chunk:
                yield chunk
    except httpx.TimeoutException as error:
        raise SourceTimeout(f"{what}: timed out while downloading") from error
    except httpx.TransportError as error:
        raise TruncatedDownload(f"{what}: connection lost after {received} bytes") from error
    if received < expected:
        raise TruncatedDownload(f"{what}: {received} of {expected} bytes arrived")


def _raise_for_error(response: httpx.Response, what: str) -> None:
    """Raise the source error for an MLflow error response, with the server's message."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    code, message = str(body.get("error_code", "")), str(body.get("message", ""))
    detail = f"{what}: {message or f'HTTP {response.status_code}'}"
    if response.status_code in (401, 403):
        raise Unauthorized(f"{detail}: credentials missing or refused; {CREDENTIALS}")
    if code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in message.lower()
    ):
        raise NotFound(detail)
    check_status(response, detail)
