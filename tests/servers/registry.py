"""Fixtures: the OCI distribution registry (v3, the program behind `registry:2` and Debian's
docker-registry) on loopback over real TLS, and pushes made with oras-py.

`oci_registry` is open; `oci_auth_registry` requires HTTP basic auth from an htpasswd file
(bcrypt, the only format the registry reads); `oci_token_registry` requires bearer tokens, the
scheme of ghcr.io, quay.io and Docker Hub, from `TokenServer`: a small HTTPS token service in
this process (the part a real deployment delegates to docker_auth or a cloud IAM) that checks
basic credentials and signs ES256 tokens the registry verifies by key thumbprint. All keep their
blobs in a temporary directory, so a test can tamper with a stored blob (`blob_data_path`) the
way a compromised storage backend would. The binary comes from `scripts/controlplane`.
`running_registry` starts one outside pytest (the fetch benchmark does); the fixtures wrap it.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.provider
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.controlplane.cluster import Binaries
from tests.controlplane.pki import CertificateAuthority
from tests.controlplane.processes import ServerProcess, free_port
from tests.servers.loopback import server_directory
from weightgate.sources.base import SourceSettings

USERNAME = "weightgate"
PASSWORD = "test-password-not-secret"
# bcrypt (cost 4) of PASSWORD, made once with libxcrypt: the registry reads only bcrypt, and a
# fixed hash spares the tests a bcrypt dependency.
PASSWORD_BCRYPT = "$2b$04$iwH1hbtsj8nENTy4vxQRR.652VeodE9AlxAfoGN2b8RLCqNUgeHlq"


@dataclass(frozen=True)
class OciRegistry:
    """A running registry: `host` is `127.0.0.1:<port>`, trusted through `ca_bundle`."""

    host: str
    ca_bundle: Path
    storage: Path
    log_path: Path
    credentials: tuple[str, str] | None = None
    auth_backend: str = "token"  # oras-py's: "basic" for htpasswd, "token" for bearer tokens

    def blob_data_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps the blob `sha256:<hex>`."""
        hex_digest = digest.removeprefix("sha256:")
        return (
            self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
        )

    def client(self) -> oras.provider.Registry:
        """An oras-py client for pushing (basic auth when the registry requires it)."""
        client = oras.provider.Registry(
            hostname=self.host, tls_verify=str(self.ca_bundle), auth_backend=self.auth_backend
        )
        if self.credentials:
            client.auth.set_basic_auth(*self.credentials)
        return client

    def push(
        self,
        repository_tag: str,
        files: Sequence[Path],
        titles: Mapping[Path, str] | None = None,
    ) -> str:
        """`oras push host/repository:tag FILES...`; returns the manifest digest.

        One layer per file, titled with its name unless `titles` says otherwise (through an
        annotation file, as `oras push --annotation-file` does).
        """
        with tempfile.TemporaryDirectory(prefix="weightgate-oras-") as scratch:
            annotation_file = None
            if titles:
                annotation_file = Path(scratch) / "annotations.json"
                annotation_file.write_text(
                    json.dumps(
                        {
                            str(path): {"org.opencontainers.image.title": title}
                            for path, title in titles.items()
                        }
                    )
                )
            response = self.client().push(
                target=f"{self.host}/{repository_tag}",
                files=[str(path) for path in files],
                disable_path_validation=True,
                annotation_file=str(annotation_file) if annotation_file else None,
                quiet=True,
            )
        digest: str = response.headers["Docker-Content-Digest"]
        return digest

    def put_manifest(self, repository_tag: str, manifest: bytes, media_type: str) -> str:
        """PUT a manifest as given (an index, a container image); returns its digest."""
        repository, _, tag = repository_tag.rpartition(":")
        client = self.client()
        response = client.do_request(
            f"https://{self.host}/v2/{repository}/manifests/{tag}",
            "PUT",
            data=manifest,
            headers={"Content-Type": media_type},
        )
        assert response.status_code == 201, response.text
        digest: str = response.headers["Docker-Content-Digest"]
        return digest

    def upload_blob(self, repository: str, path: Path, digest: str) -> None:
        """Upload one blob (for manifests put by hand)."""
        layer = {"digest": digest, "size": path.stat().st_size}
        container = self.client().get_container(f"{self.host}/{repository}")
        response = self.client().upload_blob(str(path), container, layer)
        assert response.status_code in (200, 201, 202), response.text


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """An HTTPS token endpoint (the distribution token spec): basic credentials in, ES256 JWT
    out, granting the user pull and push on every repository `scope` names (all it may do, as
    real token services grant; oras-py's push reuses its first token, so a pull-only one would
    fail its upload); anonymous requests get 401."""

    service = "weightgate-test-registry"
    issuer = "weightgate-test-token-server"

    def __init__(self, authority: CertificateAuthority, directory: Path) -> None:
        # The registry trusts the public key of each certificate in its rootcertbundle, and
        # finds it by the token's `kid`: the key's RFC 7638 thumbprint.
        signer = authority.issue_client("token-signer")
        self.signer_bundle = directory / "token-signer.crt"
        self.signer_bundle.write_bytes(signer.cert_pem)
        key = serialization.load_pem_private_key(signer.key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._key = key
        numbers = key.public_key().public_numbers()
        jwk = '{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}'.format(
            _b64url(numbers.x.to_bytes(32, "big")), _b64url(numbers.y.to_bytes(32, "big"))
        )
        self._key_id = _b64url(hashlib.sha256(jwk.encode()).digest())
        self.requests = 0
        tls_cert, tls_key = authority.issue_server("token", ["127.0.0.1"]).write(
            directory, "token-tls"
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls_cert, tls_key)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.realm = f"https://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, subject: str, scope: str) -> str:
        """A signed token for the repositories `scope` names (`repository:<name>:pull ...`)."""
        access = []
        for item in scope.split():
            kind, rest = item.split(":", 1)
            name = rest.rpartition(":")[0]
            access.append({"type": kind, "name": name, "actions": ["pull", "push"]})
        now = int(time.time())
        header = {"alg": "ES256", "typ": "JWT", "kid": self._key_id}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self
        expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                if self.headers.get("Authorization") != expected:
                    self._reply(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                    return
                token = server.token(USERNAME, " ".join(query.get("scope", [])))
                self._reply(200, {"token": token, "access_token": token, "expires_in": 300})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _config(root: Path, port: int, cert: Path, key: Path, auth: dict[str, Any] | None) -> str:
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": f"127.0.0.1:{port}",
            "secret": "weightgate-test-upload-secret",
            "tls": {"certificate": str(cert), "key": str(key)},
        },
    }
    if auth is not None:
        config["auth"] = auth
    return json.dumps(config)  # JSON is YAML


def _answers(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context):
            return True
    except urllib.error.HTTPError as error:
        return error.code == 401  # a registry with auth is up: it asks for credentials
    except OSError:
        return False


def new_registry_ca(directory: Path) -> tuple[CertificateAuthority, Path]:
    """A CA for registries' serving certificates, and its PEM file (written into `directory`)."""
    authority = CertificateAuthority("weightgate-test-registry-ca")
    bundle = directory / "ca.crt"
    bundle.write_bytes(authority.cert_pem)
    return authority, bundle


@contextmanager
def running_registry(
    directory: Path,
    ca: tuple[CertificateAuthority, Path] | None = None,
    auth: dict[str, Any] | None = None,
    credentials: tuple[str, str] | None = None,
    auth_backend: str = "token",
) -> Iterator[OciRegistry]:
    """The registry serving over TLS from `directory` until the block ends (outside pytest too).

    Its config, certificate, storage and log go into `directory`, which the caller owns and
    removes.

    Args:
        directory: An existing directory for the registry's files.
        ca: The CA that signs the serving certificate, and its PEM file; a new one (in
            `directory`) when None.
        auth: The registry's `auth` configuration section (htpasswd, token); open when None.
        credentials: What clients should send (for `OciRegistry.client`).
        auth_backend: oras-py's backend: "basic" for htpasswd, "token" for bearer tokens.
    """
    authority, bundle = ca or new_registry_ca(directory)
    binary = Binaries.build().registry
    port = free_port()
    cert, key = authority.issue_server("registry", ["127.0.0.1", "localhost"]).write(
        directory, "tls"
    )
    config = directory / "config.yml"
    config.write_text(_config(directory, port, cert, key, auth))
    server = ServerProcess("registry", [binary, "serve", config], directory / "registry.log")
    context = ssl.create_default_context(cafile=str(bundle))
    try:
        server.start()
        server.wait_ready(lambda: _answers(f"https://127.0.0.1:{port}/v2/", context), 30)
        yield OciRegistry(
            f"127.0.0.1:{port}",
            bundle,
            directory / "storage",
            server.log_path,
            credentials,
            auth_backend,
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry_ca() -> Iterator[tuple[CertificateAuthority, Path]]:
    """A CA for the registries' serving certificates, and its PEM file."""
    with server_directory("weightgate-registry-ca-") as directory:
        yield new_registry_ca(directory)


@pytest.fixture(scope="session")
def oci_registry(registry_ca: tuple[CertificateAuthority, Path]) -> Iterator[OciRegistry]:
    """An open registry on loopback, over TLS."""
    with (
        server_directory("weightgate-registry-") as root,
        running_registry(root, registry_ca) as registry,
    ):
        yield registry


@pytest.fixture(scope="session")
def oci_auth_registry(registry_ca: tuple[CertificateAuthority, Path]) -> Iterator[OciRegistry]:
    """A registry that requires basic auth (USERNAME / PASSWORD, from an htpasswd file)."""
    with server_directory("weightgate-registry-basic-") as root:
        htpasswd = root / "htpasswd"
        htpasswd.write_text(f"{USERNAME}:{PASSWORD_BCRYPT}\n")
        auth = {"htpasswd": {"realm": "weightgate-test", "path": str(htpasswd)}}
        credentials = (USERNAME, PASSWORD)
        with running_registry(root, registry_ca, auth, credentials, "basic") as registry:
            yield registry


@pytest.fixture(scope="session")
def oci_token_server(registry_ca: tuple[CertificateAuthority, Path]) -> Iterator[TokenServer]:
    """The token service in front of `oci_token_registry` (counts the tokens it was asked for)."""
    with (
        server_directory("weightgate-registry-token-") as directory,
        TokenServer(registry_ca[0], directory) as server,
    ):
        yield server


@pytest.fixture(scope="session")
def oci_token_registry(
    registry_ca: tuple[CertificateAuthority, Path], oci_token_server: TokenServer
) -> Iterator[OciRegistry]:
    """A registry that requires bearer tokens from `oci_token_server` (USERNAME / PASSWORD)."""
    auth = {
        "token": {
            "realm": oci_token_server.realm,
            "service": TokenServer.service,
            "issuer": TokenServer.issuer,
            "rootcertbundle": str(oci_token_server.signer_bundle),
        }
    }
    with (
        server_directory("weightgate-registry-bearer-") as root,
        running_registry(root, registry_ca, auth, (USERNAME, PASSWORD)) as registry,
    ):
        yield registry


@pytest.fixture
def isolated_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own ~/.docker/config.json out of a test (an empty DOCKER_CONFIG)."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config-empty"))


@pytest.fixture
def oci_settings(oci_registry: OciRegistry, tmp_path: Path) -> SourceSettings:
    """Settings that trust `oci_registry`, with short timeouts and a cache under tmp_path."""
    return SourceSettings(
        timeout=10,
        retries=1,
        backoff=0.01,
        ca_bundle=oci_registry.ca_bundle,
        cache_dir=tmp_path / "cache",
    )
