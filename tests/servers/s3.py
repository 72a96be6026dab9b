"""Fixtures: moto's S3 server (moto[server]) as a real process on loopback, with IAM auth on.

Before switching authentication on (moto's `/moto-api/reset-auth`), the fixture creates IAM
users whose keys moto then checks on every request (unknown key: InvalidAccessKeyId, wrong
secret: SignatureDoesNotMatch, outside the policy: AccessDenied):

* `admin`: everything; the tests use it to make buckets and upload.
* `reader`: s3:Get* and s3:List* on buckets named `wg-*`: what the source under test sees,
  through the environment that :func:`s3_env` sets (boto3's default credential chain).
* `lister`: s3:ListBucket and s3:GetObject only (no versions), as many IRSA roles are.

Also here: endpoints that misbehave on purpose (answer 503, cut a body short or stall in the
middle), small raw-socket servers for the failures moto cannot produce. An endpoint that never
answers is :func:`tests.servers.loopback.silent_port`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from tests.controlplane.processes import ServerProcess, free_port
from tests.models import minilm_dir

REGION = "us-east-1"
TEST_BUCKETS = "wg-"  # the reader may read buckets named so; anything else is refused
MULTIPART_THRESHOLD = 8 * 1024 * 1024


@dataclass(frozen=True)
class AccessKey:
    """An IAM access key pair the moto server knows."""

    id: str
    secret: str


def _policy(actions: list[str], bucket_pattern: str) -> str:
    resources: str | list[str] = "*"
    if bucket_pattern != "*":
        resources = [f"arn:aws:s3:::{bucket_pattern}", f"arn:aws:s3:::{bucket_pattern}/*"]
    statement = {"Effect": "Allow", "Action": actions, "Resource": resources}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


@dataclass
class MotoS3:
    """A running moto server, its IAM keys, and helpers to fill buckets."""

    endpoint: str
    reader: AccessKey
    lister: AccessKey
    admin_key: AccessKey
    admin: Any = field(init=False)  # a boto3 S3 client with the admin key

    def __post_init__(self) -> None:
        self.admin = self.client(self.admin_key)

    def client(self, key: AccessKey, service: str = "s3") -> Any:
        """A boto3 client for `service` on this server, signing with `key`."""
        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key.id,
            aws_secret_access_key=key.secret,
            region_name=REGION,
        )

    def bucket(self, versioned: bool, prefix: str = TEST_BUCKETS) -> str:
        """A new, empty bucket (versioning enabled or never enabled)."""
        name = f"{prefix}{'ver' if versioned else 'unver'}-{uuid.uuid4().hex[:12]}"
        self.admin.create_bucket(Bucket=name)
        if versioned:
            status = {"Status": "Enabled"}
            self.admin.put_bucket_versioning(Bucket=name, VersioningConfiguration=status)
        return name

    def put(self, bucket: str, key: str, body: bytes, sha256: bool = True) -> dict[str, Any]:
        """Upload one object in one part, with an S3 SHA256 checksum unless told not to."""
        extra = {"ChecksumAlgorithm": "SHA256"} if sha256 else {}
        response: dict[str, Any] = self.admin.put_object(Bucket=bucket, Key=key, Body=body, **extra)
        return response

    def upload_dir(self, bucket: str, prefix: str, directory: Path) -> dict[str, Path]:
        """Upload every file under `directory` to `prefix/`: key -> local file.

        Files up to 8 MiB go up in one part with a SHA256 checksum; bigger ones the way
        `aws s3 cp` sends them (boto3's multipart transfer), so their ETag and checksum are
        composite.
        """
        uploaded: dict[str, Path] = {}
        transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD)
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = f"{prefix}/{path.relative_to(directory).as_posix()}"
            if path.stat().st_size > MULTIPART_THRESHOLD:
                self.admin.upload_file(str(path), bucket, key, Config=transfer)
            else:
                self.put(bucket, key, path.read_bytes())
            uploaded[key] = path
        return uploaded

    def enforce_auth(self, after_requests: int = 0) -> None:
        """Check IAM signatures and policies on every request after the next `after_requests`.

        moto's server answers an unsigned request (STS AssumeRoleWithWebIdentity, as IRSA
        sends it) with a 500 while authentication is on, so that test lets one request by.
        """
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=str(after_requests).encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


def _make_users(endpoint: str) -> tuple[AccessKey, AccessKey, AccessKey]:
    iam = boto3.session.Session().client(
        "iam", endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup",
        region_name=REGION,
    )  # fmt: skip
    keys = []
    for user, actions, buckets in (
        ("admin", ["*"], "*"),
        ("reader", ["s3:Get*", "s3:List*"], f"{TEST_BUCKETS}*"),
        ("lister", ["s3:ListBucket", "s3:GetObject"], f"{TEST_BUCKETS}*"),
    ):
        iam.create_user(UserName=user)
        iam.put_user_policy(
            UserName=user, PolicyName="s3", PolicyDocument=_policy(actions, buckets)
        )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys.append(AccessKey(key["AccessKeyId"], key["SecretAccessKey"]))
    return keys[0], keys[1], keys[2]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """moto's server on a free loopback port, IAM users made, authentication enforced."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto-s3") / "moto.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = ServerProcess("moto S3 server", argv, log)
    server.start()
    try:
        server.wait_ready(lambda: _answers(f"{endpoint}/moto-api/"), timeout=60)
        admin, reader, lister = _make_users(endpoint)
        moto = MotoS3(endpoint, reader=reader, lister=lister, admin_key=admin)
        moto.enforce_auth()
        yield moto
    finally:
        server.stop()


AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CA_BUNDLE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No AWS credentials, config files or instance metadata from outside the test."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_s3: MotoS3) -> MotoS3:
    """The environment a user of the moto server has: reader's keys and AWS_ENDPOINT_URL."""
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3.reader.id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3.reader.secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint)
    return moto_s3


@dataclass(frozen=True)
class ModelInS3:
    """A model directory uploaded under `s3://bucket/prefix/`."""

    bucket: str
    prefix: str
    directory: Path
    keys: dict[str, Path]

    @property
    def reference(self) -> str:
        """`s3://bucket/prefix`."""
        return f"s3://{self.bucket}/{self.prefix}"


@pytest.fixture(scope="session")
def minilm_in_s3(moto_s3: MotoS3) -> ModelInS3:
    """all-MiniLM-L6-v2's real files in a versioned bucket, under `models/minilm/`."""
    bucket = moto_s3.bucket(versioned=True)
    directory = minilm_dir()
    keys = moto_s3.upload_dir(bucket, "models/minilm", directory)
    return ModelInS3(bucket, "models/minilm", directory, keys)


class ScriptedEndpoint:
    """A TCP server on loopback that answers every request with the same raw bytes.

    After writing `response` it closes the connection, or with `stall` keeps it open without
    another byte, until the endpoint is closed. `requests` counts the requests it received.
    """

    def __init__(self, response: bytes, stall: bool = False) -> None:
        self.response = response
        self.stall = stall
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        held: list[socket.socket] = []
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                break
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                request += chunk
            self.requests += 1
            connection.sendall(self.response)
            if self.stall:
                held.append(connection)
            else:
                connection.close()
        for connection in held:
            connection.close()

    def close(self) -> None:
        """Stop accepting and drop every held connection."""
        self._closed.set()
        with contextlib.suppress(OSError):  # shutdown wakes the thread blocked in accept()
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=5)


def http_response(status: str, headers: dict[str, str], body: bytes, length: int | None) -> bytes:
    """Raw HTTP/1.1 response bytes; `length` may announce more than `body` holds."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body) if length is None else length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def scripted_endpoint() -> Iterator[Callable[[bytes, bool], ScriptedEndpoint]]:
    """Make :class:`ScriptedEndpoint` servers (response, stall); closed when the test ends."""
    made: list[ScriptedEndpoint] = []

    def make(response: bytes, stall: bool) -> ScriptedEndpoint:
        made.append(ScriptedEndpoint(response, stall))
        return made[-1]

    yield make
    for endpoint in made:
        endpoint.close()
