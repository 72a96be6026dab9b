"""The MLflow tracking server as weightgate addresses it, without talking to it yet.

`models:/` references parsed as MLflow's client reads them (:func:`parse_reference`), the
server with its credentials and TLS trust from MLflow's own environment variables
(:class:`TrackingServer`), and the REST endpoints that list and serve one version's artifacts
(:class:`ArtifactTree`). :mod:`weightgate.sources.mlflow` does the talking.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

from weightgate.sources import http
from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import SourceError, UnsupportedReference


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

    def session(self, settings: SourceSettings) -> http.Session:
        """A requests session for this server: `settings`' timeout, MLflow's TLS trust."""
        verify = False if self.insecure else (self.ca_bundle or settings.ca_bundle or True)
        session = http.http_session(settings, self.headers | http.IDENTITY, verify=verify)
        session.auth = self.auth
        return session


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
