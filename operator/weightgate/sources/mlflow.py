"""`models:/` references: versions of models in an MLflow model registry, over its REST API.

requests (through :mod:`weightgate.sources.http`) does the HTTP; MLflow's own client is not
used because it would bring dozens of heavy dependencies into the gate for a handful of GET
requests. Our own code parses the reference as MLflow does (:mod:`.mlflow_server`), follows
alias -> version -> the place the tracking server serves that version's artifacts from, lists
them recursively, and streams them.

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

import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests

from weightgate.sources import http
from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    NotFound,
    SourceError,
    Unauthorized,
    UnsupportedReference,
)
from weightgate.sources.mlflow_server import (
    ArtifactTree,
    ModelSelector,
    TrackingServer,
    parse_reference,
)
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.paths import safe_relative_path
from weightgate.sources.retry import with_retries

CREDENTIALS = "set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
MAX_FILES = 100_000
MAX_DEPTH = 64
API = "api/2.0/mlflow"
Json = dict[str, Any]


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
            files=tuple(files),
        )
        self.settings.check_model_size(reference, resolved.total_size, len(files))
        return resolved

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        """Stream `file` from `offset`; RevisionMoved if the server now has another size."""
        what = f"{model.pinned}: {file.path}"
        server = TrackingServer.from_environment(model.reference)
        url = f"{server.url}/{file.locator}"
        with (
            Registry(server, self.settings) as registry,
            http.download(
                lambda headers: registry.session.get(url, headers=headers, stream=True),
                file,
                offset,
                what,
                _raise_for_error,
            ) as chunks,
        ):
            yield chunks


class Registry:
    """The registry and artifact endpoints of one tracking server, over one session."""

    def __init__(self, server: TrackingServer, settings: SourceSettings) -> None:
        """Connect to `server` with `settings`' timeouts and retries."""
        self.server = server
        self.settings = settings
        self.session = server.session(settings)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def get(self, what: str, endpoint: str, **params: str) -> Json:
        """GET `endpoint` (relative to the server) as JSON, with retries; errors name `what`."""

        def attempt() -> Json:
            with http.translated_errors(what):
                response = self.session.get(f"{self.server.url}/{endpoint}", params=params)
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
                    name = safe_relative_path(str(entry.get("path", "")), pinned)
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


def _raise_for_error(response: requests.Response, what: str) -> None:
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
    http.check_status(response, detail)
