"""MlflowSource (REST over requests) against a real `mlflow server` on loopback."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from tests.models import minilm_dir
from tests.servers.mlflow import Content, Gateway, MlflowServer
from tests.sources.streams import by_path, read, source_settings
from weightgate.sources import (
    ModelTooLarge,
    NotFound,
    RevisionMoved,
    SourceError,
    SourceSettings,
    SourceTimeout,
    SourceUnavailable,
    Unauthorized,
    UnsupportedReference,
    fetch,
)
from weightgate.sources.mlflow import MlflowSource
from weightgate.sources.mlflow_server import ModelSelector, parse_reference

MLFLOW_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_INSECURE_TLS",
)
# A small model with nested directories; its weights are patterned so any offset is checkable.
TINY: dict[str, Content] = {
    "MLmodel": b"flavors: {}\n",
    "config.json": b'{"hidden": 4}',
    "data/weights.bin": bytes(range(256)) * 12288,  # 3 MiB: several chunks
    "data/deeper/tokenizer/vocab.txt": b"[PAD]\n[UNK]\nhello\n",
}
TINY_V2: dict[str, Content] = {**TINY, "config.json": b'{"hidden": 8}'}


@pytest.fixture(autouse=True)
def tracking_server(monkeypatch: pytest.MonkeyPatch, mlflow_server: MlflowServer) -> None:
    for name in MLFLOW_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)


@pytest.fixture(scope="module")
def tiny(mlflow_server: MlflowServer) -> str:
    """A registered model: versions 1 and 2 (another config), alias `champion` -> 1."""
    name = mlflow_server.register("tiny", [TINY, TINY_V2])
    mlflow_server.set_alias(name, "champion", 1)
    return name


@pytest.fixture(scope="module")
def minilm(mlflow_server: MlflowServer) -> str:
    """all-MiniLM-L6-v2's real files as version 2 (after a tiny version 1), alias `prod` -> 2."""
    files = {p.relative_to(minilm_dir()).as_posix(): p for p in minilm_dir().rglob("*")}
    name = mlflow_server.register("minilm", [TINY, {k: v for k, v in files.items() if v.is_file()}])
    mlflow_server.set_alias(name, "prod", 2)
    return name


def source(tmp_path: Path, **overrides: float) -> MlflowSource:
    return MlflowSource(source_settings(tmp_path, **overrides))


def content(value: Content) -> bytes:
    return value.read_bytes() if isinstance(value, Path) else value


# --- references -----------------------------------------------------------------------------


def test_references_parse_as_mlflow_reads_them() -> None:
    assert parse_reference("models:/fraud/3") == ModelSelector("fraud", version="3")
    assert parse_reference("models:/fraud@champion") == ModelSelector("fraud", alias="champion")
    assert parse_reference("models:/fraud/latest") == ModelSelector("fraud")
    assert parse_reference("models:/a@b@prod") == ModelSelector("a@b", alias="prod")
    for bad in ("models:/fraud/Production", "models:/m-0123", "models://x/fraud/1", "models:/"):
        with pytest.raises(UnsupportedReference):
            parse_reference(bad)


# --- resolve --------------------------------------------------------------------------------


def test_resolve_by_version_lists_every_file_recursively_with_sizes(
    tmp_path: Path, tiny: str
) -> None:
    resolved = source(tmp_path).resolve(f"models:/{tiny}/1")
    assert resolved.revision == resolved.pinned == f"models:/{tiny}/1"
    assert resolved.lineage == f"models:/{tiny}"
    assert [(f.path, f.size, f.sha256) for f in resolved.files] == sorted(
        (path, len(content(value)), None) for path, value in TINY.items()
    )


def test_resolve_by_alias_pins_the_version_it_points_to(tmp_path: Path, tiny: str) -> None:
    resolved = source(tmp_path).resolve(f"models:/{tiny}@champion")
    assert resolved.reference == f"models:/{tiny}@champion"
    assert resolved.revision == resolved.pinned == f"models:/{tiny}/1"


def test_latest_resolves_to_the_highest_concrete_version(tmp_path: Path, tiny: str) -> None:
    resolved = source(tmp_path).resolve(f"models:/{tiny}/latest")
    assert resolved.pinned == f"models:/{tiny}/2"
    config = by_path(resolved)["config.json"]
    assert read(source(tmp_path), resolved, config) == TINY_V2["config.json"]


def test_moving_an_alias_moves_resolve_but_not_the_pinned_reference(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    name = mlflow_server.register("moving", [TINY, TINY_V2])
    mlflow_server.set_alias(name, "prod", 1)
    mlflow = source(tmp_path)
    before = mlflow.resolve(f"models:/{name}@prod")
    mlflow_server.set_alias(name, "prod", 2)
    after = mlflow.resolve(f"models:/{name}@prod")
    again = mlflow.resolve(before.pinned)
    assert (before.revision, after.revision) == (f"models:/{name}/1", f"models:/{name}/2")
    assert again.revision == before.revision and again.files == before.files
    config = by_path(again)["config.json"]
    assert read(mlflow, again, config) == TINY["config.json"]


@pytest.mark.parametrize("kind", ["runs", "logged"])
def test_run_and_logged_model_sources_resolve_and_stream(
    tmp_path: Path, mlflow_server: MlflowServer, kind: str
) -> None:
    name = mlflow_server.unique_name(kind)
    mlflow_server.create_model(name)
    version = mlflow_server.add_version(name, TINY, source=kind)
    mlflow = source(tmp_path)
    resolved = mlflow.resolve(f"models:/{name}/{version}")
    assert sorted(by_path(resolved)) == sorted(TINY)
    for file in resolved.files:
        assert read(mlflow, resolved, file) == TINY[file.path]
        assert (
            read(mlflow, resolved, file, offset=file.size // 2)
            == content(TINY[file.path])[file.size // 2 :]
        )


def test_a_model_over_the_size_limit_is_refused_before_download(tmp_path: Path, tiny: str) -> None:
    with pytest.raises(ModelTooLarge, match=f"models:/{tiny}/1"):
        MlflowSource(SourceSettings(max_model_bytes=1000)).resolve(f"models:/{tiny}/1")


# --- open -----------------------------------------------------------------------------------


def test_streaming_minilm_returns_the_original_bytes(tmp_path: Path, minilm: str) -> None:
    mlflow = source(tmp_path)
    resolved = mlflow.resolve(f"models:/{minilm}@prod")
    originals = {p.relative_to(minilm_dir()).as_posix(): p for p in minilm_dir().rglob("*")}
    assert sorted(by_path(resolved)) == sorted(k for k, v in originals.items() if v.is_file())
    assert "1_Pooling/config.json" in by_path(resolved)
    weights = by_path(resolved)["model.safetensors"]
    data = read(mlflow, resolved, weights)
    original = (minilm_dir() / "model.safetensors").read_bytes()
    assert weights.size == len(original)
    assert hashlib.sha256(data).digest() == hashlib.sha256(original).digest()


def test_resume_from_an_offset_uses_range(tmp_path: Path, tiny: str) -> None:
    mlflow = source(tmp_path)
    resolved = mlflow.resolve(f"models:/{tiny}/1")
    weights = by_path(resolved)["data/weights.bin"]
    assert read(mlflow, resolved, weights, 1000) == content(TINY["data/weights.bin"])[1000:]
    assert read(mlflow, resolved, weights, weights.size) == b""


def test_resume_is_correct_when_the_server_ignores_range(
    tmp_path: Path, tiny: str, mlflow_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_gateway.url)
    mlflow_gateway.ignore_range = True
    mlflow = source(tmp_path)
    resolved = mlflow.resolve(f"models:/{tiny}/1")
    weights = by_path(resolved)["data/weights.bin"]
    offset = 1_500_000  # past the first chunk the server sends
    assert read(mlflow, resolved, weights, offset) == content(TINY["data/weights.bin"])[offset:]


def test_an_artifact_overwritten_after_resolve_is_revision_moved(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    name = mlflow_server.register("overwritten", [TINY])
    mlflow = source(tmp_path)
    resolved = mlflow.resolve(f"models:/{name}/1")
    weights = by_path(resolved)["data/weights.bin"]
    version = mlflow_server.call("GET", f"model-versions/get?name={name}&version=1")
    mlflow_server.upload(version["model_version"]["source"], {"data/weights.bin": b"evil"})
    with pytest.raises(RevisionMoved, match="changed since it was resolved"):
        read(mlflow, resolved, weights)
    with pytest.raises(RevisionMoved):
        read(mlflow, resolved, weights, 1)


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    ["models:/no-such-model/1", "models:/{tiny}/99", "models:/{tiny}@no-such-alias",
     "models:/no-such-model@prod", "models:/no-such-model/latest"],
)  # fmt: skip
def test_missing_model_version_or_alias_is_not_found(
    tmp_path: Path, tiny: str, reference: str
) -> None:
    reference = reference.format(tiny=tiny)
    with pytest.raises(NotFound, match=re.escape(reference)):
        source(tmp_path).resolve(reference)


def test_without_a_tracking_uri_the_error_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(SourceError, match="set MLFLOW_TRACKING_URI"):
        source(tmp_path).resolve("models:/fraud/1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(UnsupportedReference, match="not an http"):
        source(tmp_path).resolve("models:/fraud/1")


def test_an_unreachable_tracking_server_fails_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_port: int
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{refused_port}")
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match="after 2 attempts"):
        source(tmp_path, timeout=0.5).resolve("models:/fraud/1")
    assert time.monotonic() - started < 5


def test_a_silent_tracking_server_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent_port}")
    started = time.monotonic()
    with pytest.raises(SourceTimeout, match="models:/fraud/1"):
        source(tmp_path, timeout=0.2).resolve("models:/fraud/1")
    assert time.monotonic() - started < 5


def test_server_errors_are_retried_then_unavailable(
    tmp_path: Path, tiny: str, mlflow_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_gateway.url)
    mlflow_gateway.status = 503
    with pytest.raises(SourceUnavailable, match="503"):
        source(tmp_path, retries=2).resolve(f"models:/{tiny}/1")
    assert len(mlflow_gateway.requests) == 3


@pytest.mark.parametrize("credentials", ["token", "basic"])
def test_credentials_come_from_mlflow_variables(
    tmp_path: Path,
    tiny: str,
    mlflow_gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
    credentials: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_gateway.url)
    mlflow_gateway.authorization = "Bearer s3cret" if credentials == "token" else "Basic dTpw"
    with pytest.raises(Unauthorized, match="MLFLOW_TRACKING_TOKEN"):
        source(tmp_path).resolve(f"models:/{tiny}/1")
    if credentials == "token":
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cret")
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "u")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "p")
    mlflow = source(tmp_path)
    resolved = mlflow.resolve(f"models:/{tiny}/1")
    assert read(mlflow, resolved, by_path(resolved)["MLmodel"]) == TINY["MLmodel"]


def test_tls_trust_comes_from_mlflow_variables_or_the_settings(
    tmp_path: Path,
    tiny: str,
    mlflow_tls_gateway: tuple[Gateway, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway, ca_bundle = mlflow_tls_gateway
    reference = f"models:/{tiny}/1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", gateway.url)
    with pytest.raises(SourceUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        source(tmp_path).resolve(reference)
    trusted = SourceSettings(ca_bundle=ca_bundle, retries=0)
    assert MlflowSource(trusted).resolve(reference).pinned == reference
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(ca_bundle))
    mlflow = source(tmp_path)
    resolved = mlflow.resolve(reference)
    assert read(mlflow, resolved, by_path(resolved)["MLmodel"]) == TINY["MLmodel"]
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    with pytest.raises(SourceError, match="mutually exclusive"):
        source(tmp_path).resolve(reference)
    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
    with pytest.warns(InsecureRequestWarning):  # urllib3 says so, as for MLflow's own client
        assert source(tmp_path).resolve(reference).pinned == reference


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "/etc/passwd", "a//b", "..", ""])
def test_hostile_listed_paths_are_refused(
    tmp_path: Path,
    tiny: str,
    mlflow_gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
    hostile: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_gateway.url)
    listing = {"files": [{"path": hostile, "is_dir": False, "file_size": 1}]}
    mlflow_gateway.replies["/api/2.0/mlflow-artifacts/artifacts"] = listing
    with pytest.raises(SourceError, match="refusing the file path"):
        source(tmp_path).resolve(f"models:/{tiny}/1")


# --- end to end -----------------------------------------------------------------------------


def test_fetch_minilm_by_alias_verifies_every_file(tmp_path: Path, minilm: str) -> None:
    fetched = fetch(f"models:/{minilm}@prod", source_settings(tmp_path))
    assert fetched.revision == f"models:/{minilm}/2"
    for file in fetched.files:
        original = (minilm_dir() / file.path).read_bytes()
        assert file.sha256 == hashlib.sha256(original).hexdigest()
        assert file.blob.read_bytes() == original
