"""Fixtures: a real `mlflow server` on loopback, and a front for it that can misbehave.

`mlflow_server` installs MLflow in its own venv (scripts/install-mlflow, cached), starts it once
per session with a sqlite store and proxied artifacts in a temporary directory, and offers
helpers that register models the way MLflow's client does, through the REST API only: create a
run, upload its artifacts through the artifact proxy, create a model version from them, set an
alias. `mlflow_gateway` forwards to that server and can demand credentials, answer with an
error, ignore Range headers, or replace a response: the failures a real deployment shows.
`running_mlflow_server` starts one outside pytest (the fetch benchmark does); the fixture wraps it.
"""

from __future__ import annotations

import itertools
import json
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.controlplane.pki import CertificateAuthority
from tests.controlplane.processes import ServerProcess, free_port
from tests.servers.loopback import server_directory
from tests.tools.install import ToolInstallFailed, install_tool

Json = dict[str, Any]
Content = bytes | Path
_names = itertools.count(1)


class MlflowServer:
    """A running mlflow server and REST helpers to fill its model registry."""

    def __init__(self, url: str, artifacts: Path) -> None:
        self.url = url
        self.artifacts = artifacts  # the proxy's destination: where uploaded files land
        self.client = httpx.Client(base_url=url, timeout=60)
        self._experiment_id: str | None = None

    def call(self, method: str, endpoint: str, body: Json | None = None) -> Json:
        response = self.client.request(method, f"/api/2.0/mlflow/{endpoint}", json=body)
        response.raise_for_status()
        result: Json = response.json() if response.content else {}
        return result

    def unique_name(self, prefix: str) -> str:
        return f"{prefix}-{next(_names)}"

    def create_model(self, name: str) -> None:
        self.call("POST", "registered-models/create", {"name": name})

    def create_run(self) -> tuple[str, str]:
        """A new run: (run id, artifact root URI, `mlflow-artifacts:/...`)."""
        if self._experiment_id is None:
            created = self.call("POST", "experiments/create", {"name": "weightgate-tests"})
            self._experiment_id = str(created["experiment_id"])
        info = self.call("POST", "runs/create", {"experiment_id": self._experiment_id})["run"][
            "info"
        ]
        return str(info["run_id"]), str(info["artifact_uri"])

    def upload(self, artifact_uri: str, files: Mapping[str, Content]) -> None:
        """PUT each file under `artifact_uri` (an `mlflow-artifacts:/` URI) through the proxy."""
        root = artifact_uri.removeprefix("mlflow-artifacts:").strip("/")
        for path, content in files.items():
            if isinstance(content, Path):
                with content.open("rb") as stream:
                    response = self.client.put(
                        f"/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", content=stream
                    )
            else:
                response = self.client.put(
                    f"/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", content=content
                )
            response.raise_for_status()

    def create_version(
        self, name: str, source: str, run_id: str | None = None, model_id: str | None = None
    ) -> int:
        body = {"name": name, "source": source, "run_id": run_id, "model_id": model_id}
        created = self.call(
            "POST", "model-versions/create", {k: v for k, v in body.items() if v is not None}
        )
        return int(created["model_version"]["version"])

    def set_alias(self, name: str, alias: str, version: int) -> None:
        body = {"name": name, "alias": alias, "version": str(version)}
        self.call("POST", "registered-models/alias", body)

    def add_version(self, name: str, files: Mapping[str, Content], source: str = "proxy") -> int:
        """Log `files` under `model/` of a new run and register them as the next version.

        `source` is how the version points at them, as MLflow's clients write it: `proxy`
        (the `mlflow-artifacts:/` URI), `runs` (`runs:/<run id>/model`) or `logged` (an MLflow 3
        logged model, `models:/m-...`, whose files then live in the logged model's own root).
        """
        run_id, artifact_uri = self.create_run()
        if source == "logged":
            created = self.call(
                "POST",
                "logged-models",
                {"experiment_id": self._experiment_id, "name": name, "source_run_id": run_id},
            )
            model_id = str(created["model"]["info"]["model_id"])
            self.upload(str(created["model"]["info"]["artifact_uri"]), files)
            return self.create_version(name, f"models:/{model_id}", run_id, model_id)
        self.upload(f"{artifact_uri}/model", files)
        uri = f"runs:/{run_id}/model" if source == "runs" else f"{artifact_uri}/model"
        return self.create_version(name, uri, run_id)

    def register(self, prefix: str, versions: list[Mapping[str, Content]]) -> str:
        """A new registered model (named after `prefix`) with one version per file set."""
        name = self.unique_name(prefix)
        self.create_model(name)
        for files in versions:
            self.add_version(name, files)
        return name


def install_mlflow() -> str:
    """The `mlflow` command of the cached install (scripts/install-mlflow; installs if missing)."""
    return str(install_tool("install-mlflow"))


@contextmanager
def running_mlflow_server(directory: Path, mlflow: str | None = None) -> Iterator[MlflowServer]:
    """`mlflow server` with its store and artifacts in `directory` until the block ends.

    Usable outside pytest; the caller owns `directory` and removes it. `mlflow` is the command
    (default: `install_mlflow()`).
    """
    mlflow = mlflow or install_mlflow()
    port = free_port()
    # env -C: mlflow writes nothing into the working directory; no telemetry leaves.
    argv: list[str | Path] = [
        "env",
        "-C",
        directory,
        "MLFLOW_DISABLE_TELEMETRY=true",
        "DO_NOT_TRACK=true",
    ]
    argv += ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false", mlflow]  # no job runners: not needed
    argv += ["server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    argv += ["--backend-store-uri", f"sqlite:///{directory / 'mlflow.db'}"]
    argv += ["--serve-artifacts", "--artifacts-destination", str(directory / "artifacts")]
    argv += ["--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"]
    server = ServerProcess("mlflow server", argv, directory / "mlflow.log")
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        server.start()
        server.wait_ready(healthy, timeout=180)
        mlflow_server = MlflowServer(url, directory / "artifacts")
        try:
            yield mlflow_server
        finally:
            mlflow_server.client.close()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    try:
        mlflow = install_mlflow()
    except ToolInstallFailed as error:
        pytest.fail(str(error))
    with (
        server_directory("weightgate-mlflow-") as workdir,
        running_mlflow_server(workdir, mlflow) as server,
    ):
        yield server


class Gateway:
    """A loopback HTTP front for the mlflow server; each attribute is one way to misbehave.

    Attributes:
        authorization: When set, requests without exactly this Authorization header get 401.
        status: When set, every request gets this status (with an MLflow-style JSON error).
        ignore_range: Forward requests without their Range header (the whole file comes back).
        replies: JSON to answer instead of the server's, by URL path.
        requests: URL paths seen, in order.
    """

    def __init__(self, upstream: str, tls: tuple[Path, Path] | None = None) -> None:
        self.upstream = httpx.Client(base_url=upstream, timeout=60)
        self.authorization: str | None = None
        self.status: int | None = None
        self.ignore_range = False
        self.replies: dict[str, Json] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        if tls is not None:  # a certificate file and its key
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def reset(self) -> None:
        self.authorization, self.status, self.ignore_range = None, None, False
        self.replies.clear()
        self.requests.clear()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def reply(self, status: int, body: Json) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = self.path.partition("?")[0]
                gateway.requests.append(path)
                if gateway.authorization and self.headers.get("Authorization") != (
                    gateway.authorization
                ):
                    self.reply(401, {"error_code": "UNAUTHENTICATED", "message": "log in"})
                elif gateway.status is not None:
                    self.reply(gateway.status, {"error_code": "INTERNAL_ERROR", "message": "down"})
                elif path in gateway.replies:
                    self.reply(200, gateway.replies[path])
                else:
                    self.forward()

            def forward(self) -> None:
                skip = {"host", "authorization"} | ({"range"} if gateway.ignore_range else set())
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                request = gateway.upstream.build_request("GET", self.path, headers=headers)
                response = gateway.upstream.send(request, stream=True)
                try:
                    self.send_response(response.status_code)
                    for key in ("Content-Type", "Content-Length", "Content-Range"):
                        if key in response.headers:
                            self.send_header(key, response.headers[key])
                    self.end_headers()
                    for chunk in response.iter_raw():
                        self.wfile.write(chunk)
                finally:
                    response.close()

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.upstream.close()


@pytest.fixture(scope="session")
def _mlflow_gateway_server(mlflow_server: MlflowServer) -> Iterator[Gateway]:
    gateway = Gateway(mlflow_server.url)
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture
def mlflow_gateway(_mlflow_gateway_server: Gateway) -> Iterator[Gateway]:
    """The gateway, behaving (forwarding everything) at the start of each test."""
    _mlflow_gateway_server.reset()
    yield _mlflow_gateway_server
    _mlflow_gateway_server.reset()


@pytest.fixture(scope="session")
def mlflow_tls_gateway(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Path]]:
    """An HTTPS gateway to the mlflow server, and the PEM file of the CA that signed it."""
    directory = tmp_path_factory.mktemp("mlflow-tls")
    authority = CertificateAuthority("weightgate-test-mlflow-ca")
    ca_bundle = directory / "ca.crt"
    ca_bundle.write_bytes(authority.cert_pem)
    certificate = authority.issue_server("127.0.0.1", ["127.0.0.1", "localhost"])
    gateway = Gateway(mlflow_server.url, tls=certificate.write(directory, "server"))
    gateway.start()
    yield gateway, ca_bundle
    gateway.stop()
