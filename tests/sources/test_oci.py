"""oci:// against a real distribution registry over TLS, with artifacts pushed by oras-py."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.models import minilm_dir, model_files
from tests.servers.https import Fault, HttpsFileServer
from tests.servers.registry import PASSWORD, USERNAME, OciRegistry, TokenServer
from tests.sources.streams import read
from weightgate.sources import fetch
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
from weightgate.sources.oci import OciSource
from weightgate.sources.oci_manifest import (
    OCI_INDEX,
    OCI_MANIFEST,
    parse_reference,
    read_manifest,
)
from weightgate.sources.registry import source_for

pytestmark = pytest.mark.usefixtures("isolated_docker_config")

MINILM = minilm_dir()
MINILM_FILES = model_files(MINILM)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unique_file(directory: Path, name: str, size: int = 4096) -> Path:
    """A file no other test pushes (blobs are shared by every repository of a registry)."""
    path = directory / name
    path.write_bytes(os.urandom(size))
    return path


@pytest.fixture
def source(oci_settings: SourceSettings) -> OciSource:
    return OciSource(oci_settings)


@pytest.fixture(scope="module")
def minilm(oci_registry: OciRegistry) -> tuple[str, str]:
    """MiniLM pushed as `oras push` does it: one layer per file, titled with its path."""
    digest = oci_registry.push(
        "models/minilm:v1",
        list(MINILM_FILES.values()),
        titles={path: title for title, path in MINILM_FILES.items()},
    )
    return f"oci://{oci_registry.host}/models/minilm:v1", digest


def test_resolve_pins_the_tag_to_the_manifest_digest_oras_reports(
    source: OciSource, minilm: tuple[str, str], oci_registry: OciRegistry
) -> None:
    reference, digest = minilm
    resolved = source.resolve(reference)
    assert resolved.revision == digest
    assert resolved.lineage == f"oci://{oci_registry.host}/models/minilm"
    assert resolved.pinned == f"oci://{oci_registry.host}/models/minilm@{digest}"
    assert [file.path for file in resolved.files] == sorted(MINILM_FILES)
    assert "1_Pooling/config.json" in MINILM_FILES
    for file in resolved.files:
        assert file.size == MINILM_FILES[file.path].stat().st_size
        assert file.sha256 == sha256_of(MINILM_FILES[file.path])


def test_kserve_spellings_resolve_to_the_same_revision(
    source: OciSource, minilm: tuple[str, str], oci_settings: SourceSettings
) -> None:
    reference, digest = minilm
    for scheme in ("oci+fetch", "oci+native"):
        spelled = reference.replace("oci://", f"{scheme}://")
        resolved = source_for(spelled, oci_settings).resolve(spelled)
        assert isinstance(source_for(spelled, oci_settings), OciSource)
        assert (resolved.revision, resolved.files) == (digest, source.resolve(reference).files)


def test_open_streams_a_layer_and_resumes_from_an_offset(
    source: OciSource, minilm: tuple[str, str]
) -> None:
    resolved = source.resolve(minilm[0])
    files = {file.path: file for file in resolved.files}
    weights = MINILM_FILES["model.safetensors"].read_bytes()
    assert read(source, resolved, files["model.safetensors"]) == weights
    assert read(source, resolved, files["model.safetensors"], 1_000_003) == weights[1_000_003:]
    assert read(source, resolved, files["config.json"], files["config.json"].size) == b""


def test_fetch_puts_minilm_in_the_cache_verified(
    minilm: tuple[str, str], oci_settings: SourceSettings
) -> None:
    fetched = fetch(minilm[0], oci_settings)
    assert fetched.revision == minilm[1]
    assert {file.path: file.sha256 for file in fetched.files} == {
        title: sha256_of(path) for title, path in MINILM_FILES.items()
    }
    assert fetched.files[0].blob.read_bytes() == MINILM_FILES[fetched.files[0].path].read_bytes()


def test_pinned_reference_keeps_the_old_content_after_the_tag_moves(
    source: OciSource, oci_registry: OciRegistry, tmp_path: Path
) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = unique_file(tmp_path / "old", "weights.bin")
    new = unique_file(tmp_path / "new", "weights.bin")
    oci_registry.push("models/retagged:prod", [old])
    reference = f"oci://{oci_registry.host}/models/retagged:prod"
    before = source.resolve(reference)

    oci_registry.push("models/retagged:prod", [new])
    after = source.resolve(reference)
    again = source.resolve(before.pinned)

    assert after.revision != before.revision
    assert again.revision == before.revision
    assert again.files == before.files
    assert read(source, again, again.files[0]) == old.read_bytes()
    assert read(source, after, after.files[0]) == new.read_bytes()


def test_tampered_layer_is_a_digest_mismatch(
    source: OciSource, oci_registry: OciRegistry, oci_settings: SourceSettings, tmp_path: Path
) -> None:
    weights = unique_file(tmp_path, "weights.bin")
    oci_registry.push("models/tampered:v1", [weights])
    resolved = source.resolve(f"oci://{oci_registry.host}/models/tampered:v1")
    stored = oci_registry.blob_data_path(f"sha256:{resolved.files[0].sha256}")
    tampered = bytearray(stored.read_bytes())
    tampered[100] ^= 0xFF  # same size: only the content address can tell
    stored.write_bytes(bytes(tampered))

    assert read(source, resolved, resolved.files[0]) == bytes(tampered)  # served as stored
    with pytest.raises(DigestMismatch, match=r"weights\.bin"):
        fetch(resolved, oci_settings)


def test_tampered_manifest_pinned_by_digest_is_a_digest_mismatch(
    source: OciSource, oci_registry: OciRegistry, tmp_path: Path
) -> None:
    digest = oci_registry.push("models/tampered-manifest:v1", [unique_file(tmp_path, "a.bin")])
    stored = oci_registry.blob_data_path(digest)
    stored.write_bytes(stored.read_bytes().replace(b'"a.bin"', b'"b.bin"'))
    with pytest.raises(DigestMismatch, match=digest):
        source.resolve(f"oci://{oci_registry.host}/models/tampered-manifest@{digest}")


@pytest.mark.parametrize(
    "name",
    [
        "models/no-such-repo:v1",
        "models/minilm:no-such-tag",
        "models/minilm@sha256:" + "0" * 64,
    ],
)
def test_missing_repository_tag_or_digest_is_not_found(
    source: OciSource, oci_registry: OciRegistry, minilm: tuple[str, str], name: str
) -> None:
    reference = f"oci://{oci_registry.host}/{name}"
    with pytest.raises(NotFound, match=reference.replace("+", r"\+")) as raised:
        source.resolve(reference)
    assert "_UNKNOWN" in str(raised.value)  # the registry's error code is passed on


def test_a_missing_blob_is_not_found(source: OciSource, minilm: tuple[str, str]) -> None:
    resolved = source.resolve(minilm[0])
    file = resolved.files[0]
    gone = RemoteFile(
        file.path, file.size, "0" * 64, file.locator.rsplit(":", 1)[0] + ":" + "0" * 64
    )
    with pytest.raises(NotFound, match=file.path):
        read(source, resolved, gone)


@pytest.mark.parametrize(
    "title", ["../escape.bin", "/etc/cron.d/x", "a//b.bin", "./a.bin", "a\\..\\b"]
)
def test_an_unsafe_layer_title_refuses_the_artifact(
    source: OciSource, oci_registry: OciRegistry, tmp_path: Path, title: str
) -> None:
    layer = unique_file(tmp_path, "layer.bin", 16)
    oci_registry.push("models/hostile:v1", [layer], titles={layer: title})
    with pytest.raises(SourceError, match="refusing the file path"):
        source.resolve(f"oci://{oci_registry.host}/models/hostile:v1")


def test_a_model_over_the_size_limit_is_refused_before_download(
    minilm: tuple[str, str], oci_settings: SourceSettings
) -> None:
    small = SourceSettings(**{**oci_settings.__dict__, "max_model_bytes": 10_000_000})
    with pytest.raises(ModelTooLarge, match="more than the limit of 10000000 bytes"):
        OciSource(small).resolve(minilm[0])


def test_a_manifest_over_the_size_limit_is_refused(
    source: OciSource, minilm: tuple[str, str]
) -> None:
    source.max_manifest_bytes = 512
    with pytest.raises(SourceError, match="manifest is over 512 bytes"):
        source.resolve(minilm[0])


def put_index(
    registry: OciRegistry, repository_tag: str, children: list[tuple[str, dict[str, str]]]
) -> str:
    """An image index of `children` (digest, platform); returns the index digest."""
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(registry.blob_data_path(digest).read_bytes()),
            "platform": platform,
        }
        for digest, platform in children
    ]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return registry.put_manifest(repository_tag, json.dumps(index).encode(), OCI_INDEX)


def test_a_multi_platform_index_is_pinned_by_its_digest_when_all_platforms_agree(
    source: OciSource, oci_registry: OciRegistry, minilm: tuple[str, str]
) -> None:
    amd64, arm64 = (
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64"},
    )
    attestation = {"os": "unknown", "architecture": "unknown"}  # buildkit's provenance
    children = [(minilm[1], amd64), (minilm[1], arm64), (minilm[1], attestation)]
    digest = put_index(oci_registry, "models/minilm:multi", children)

    resolved = source.resolve(f"oci://{oci_registry.host}/models/minilm:multi")

    assert resolved.revision == digest  # what the tag names, for every node alike
    assert {file.path for file in resolved.files} == set(MINILM_FILES)


def test_an_index_whose_platforms_carry_different_models_is_refused(
    source: OciSource, oci_registry: OciRegistry, minilm: tuple[str, str], tmp_path: Path
) -> None:
    arm64 = oci_registry.push("models/minilm:arm64", [unique_file(tmp_path, "model.safetensors")])
    children = [
        (minilm[1], {"os": "linux", "architecture": "amd64"}),
        (arm64, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
    ]
    put_index(oci_registry, "models/minilm:split", children)

    with pytest.raises(SourceError, match="linux/amd64 and linux/arm64/v8 differ"):
        source.resolve(f"oci://{oci_registry.host}/models/minilm:split")


@pytest.mark.parametrize(
    ("platform", "problem"),
    [
        ({"os": "windows", "architecture": "amd64"}, "without a linux manifest"),
        ({"os": "linux", "architecture": "amd64"}, "image index inside an image index"),
    ],
)
def test_indexes_without_a_linux_manifest_or_nested_are_refused(
    source: OciSource,
    oci_registry: OciRegistry,
    minilm: tuple[str, str],
    platform: dict[str, str],
    problem: str,
) -> None:
    inner = put_index(oci_registry, "models/minilm:inner", [(minilm[1], platform)])
    child = inner if "inside" in problem else minilm[1]
    put_index(oci_registry, "models/minilm:outer", [(child, platform)])

    with pytest.raises(UnsupportedReference, match=problem):
        source.resolve(f"oci://{oci_registry.host}/models/minilm:outer")


def test_without_the_ca_bundle_tls_fails_and_says_how_to_trust_the_registry(
    minilm: tuple[str, str], tmp_path: Path
) -> None:
    untrusting = OciSource(SourceSettings(timeout=5, retries=0, cache_dir=tmp_path))
    with pytest.raises(SourceError, match="CA bundle setting"):
        untrusting.resolve(minilm[0])


# --- authentication: a registry that requires basic auth ---------------------------------


@pytest.fixture(scope="module")
def private_model(oci_auth_registry: OciRegistry, tmp_path_factory: pytest.TempPathFactory) -> str:
    weights = unique_file(tmp_path_factory.mktemp("private"), "weights.bin")
    oci_auth_registry.push("private/model:v1", [weights])
    return f"oci://{oci_auth_registry.host}/private/model:v1"


def auth_settings(registry: OciRegistry, tmp_path: Path) -> SourceSettings:
    return SourceSettings(
        timeout=10, retries=0, ca_bundle=registry.ca_bundle, cache_dir=tmp_path / "cache"
    )


def write_docker_config(directory: Path, host: str, username: str, password: str) -> None:
    directory.mkdir()
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))


def test_without_credentials_the_registry_refusal_names_docker_login_and_docker_config(
    private_model: str, oci_auth_registry: OciRegistry, tmp_path: Path
) -> None:
    with pytest.raises(Unauthorized, match="HTTP 401") as raised:
        OciSource(auth_settings(oci_auth_registry, tmp_path)).resolve(private_model)
    assert f"docker login {oci_auth_registry.host}" in str(raised.value)
    assert "DOCKER_CONFIG" in str(raised.value)


def test_credentials_from_docker_config_resolve_and_stream(
    private_model: str,
    oci_auth_registry: OciRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "docker"
    write_docker_config(config, f"https://{oci_auth_registry.host}/v1/", USERNAME, PASSWORD)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    source = OciSource(auth_settings(oci_auth_registry, tmp_path))
    resolved = source.resolve(private_model)
    data = read(source, resolved, resolved.files[0])
    assert hashlib.sha256(data).hexdigest() == resolved.files[0].sha256


def test_wrong_credentials_are_unauthorized(
    private_model: str,
    oci_auth_registry: OciRegistry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "docker"
    write_docker_config(config, oci_auth_registry.host, USERNAME, "wrong-password")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    with pytest.raises(Unauthorized, match=private_model):
        OciSource(auth_settings(oci_auth_registry, tmp_path)).resolve(private_model)


# --- bearer tokens: a registry behind a token service, as ghcr.io, quay.io, Docker Hub -------


@pytest.fixture(scope="module")
def token_models(
    oci_token_registry: OciRegistry, tmp_path_factory: pytest.TempPathFactory
) -> list[str]:
    directory = tmp_path_factory.mktemp("bearer")
    references = []
    for name in ("team/first", "team/second"):
        oci_token_registry.push(f"{name}:v1", [unique_file(directory, f"{name[5:]}.bin")])
        references.append(f"oci://{oci_token_registry.host}/{name}:v1")
    return references


def test_bearer_tokens_from_the_token_service_per_repository(
    token_models: list[str],
    oci_token_registry: OciRegistry,
    oci_token_server: TokenServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "docker"
    write_docker_config(config, oci_token_registry.host, USERNAME, PASSWORD)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    source = OciSource(auth_settings(oci_token_registry, tmp_path))
    asked = oci_token_server.requests
    for reference in token_models:  # a token is scoped to one repository: one each
        resolved = source.resolve(reference)
        data = read(source, resolved, resolved.files[0])
        assert hashlib.sha256(data).hexdigest() == resolved.files[0].sha256
    assert oci_token_server.requests - asked == 2


def test_without_credentials_the_token_service_refuses_and_the_error_says_what_to_do(
    token_models: list[str], oci_token_registry: OciRegistry, tmp_path: Path
) -> None:
    with pytest.raises(Unauthorized, match="DOCKER_CONFIG"):
        OciSource(auth_settings(oci_token_registry, tmp_path)).resolve(token_models[0])


# --- a registry that does not answer ---------------------------------------------------------


def test_a_registry_that_never_answers_times_out_quickly(silent_port: int, tmp_path: Path) -> None:
    source = OciSource(SourceSettings(timeout=0.2, retries=1, backoff=0.01, cache_dir=tmp_path))
    started = time.monotonic()
    with pytest.raises(SourceTimeout, match="after 2 attempts"):
        source.resolve(f"oci://127.0.0.1:{silent_port}/models/minilm:v1")
    assert time.monotonic() - started < 3


def test_a_closed_port_is_unavailable_quickly(refused_port: int, tmp_path: Path) -> None:
    source = OciSource(SourceSettings(timeout=0.2, retries=1, backoff=0.01, cache_dir=tmp_path))
    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=f"127.0.0.1:{refused_port}"):
        source.resolve(f"oci://127.0.0.1:{refused_port}/models/minilm:v1")
    assert time.monotonic() - started < 3


# --- blobs served by a server that misbehaves (a boundary fake: the registry never does) ---

BLOB = bytes(range(256)) * 64


@pytest.fixture
def blob(https_server: HttpsFileServer, tmp_path: Path) -> tuple[ResolvedModel, SourceSettings]:
    """BLOB at its blob URL on the TLS file server (which injects the faults), as resolved."""
    digest = "sha256:" + hashlib.sha256(BLOB).hexdigest()
    host = https_server.base_url.removeprefix("https://")
    url = https_server.put(f"v2/m/blobs/{digest}", BLOB)
    file = RemoteFile("blob.bin", len(BLOB), digest[7:], url)
    model = ResolvedModel(
        f"oci://{host}/m:v1", f"oci://{host}/m", digest, f"oci://{host}/m@{digest}", (file,)
    )
    return model, https_server.settings(tmp_path, timeout=0.5, retries=0)


def test_a_registry_that_ignores_range_still_resumes_at_the_offset(
    https_server: HttpsFileServer, blob: tuple[ResolvedModel, SourceSettings]
) -> None:
    model, settings = blob
    https_server.inject(blob_path(model), Fault(ignore_range=True))
    assert read(OciSource(settings), model, model.files[0], 5000) == BLOB[5000:]


def test_a_body_cut_short_is_a_truncated_download(
    https_server: HttpsFileServer, blob: tuple[ResolvedModel, SourceSettings]
) -> None:
    model, settings = blob
    https_server.inject(blob_path(model), Fault(truncate_after=len(BLOB) // 2))
    with pytest.raises(TruncatedDownload, match=r"blob\.bin"):
        read(OciSource(settings), model, model.files[0])


def test_a_body_that_stalls_times_out(
    https_server: HttpsFileServer, blob: tuple[ResolvedModel, SourceSettings]
) -> None:
    model, settings = blob
    https_server.inject(blob_path(model), Fault(stall_after=1000))
    started = time.monotonic()
    with pytest.raises(SourceTimeout, match=r"blob\.bin"):
        read(OciSource(settings), model, model.files[0])
    assert time.monotonic() - started < 1.5


def blob_path(model: ResolvedModel) -> str:
    return f"v2/m/blobs/sha256:{model.files[0].sha256}"


# --- references and manifests, without a registry ------------------------------------------


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("oci://reg.example.com/org/model:v1", ("reg.example.com", "org/model", "v1", None)),
        ("oci://localhost:5000/model", ("localhost:5000", "model", "latest", None)),
        (
            "oci+native://127.0.0.1:5000/a/b@sha256:" + "a" * 64,
            ("127.0.0.1:5000", "a/b", "latest", "sha256:" + "a" * 64),
        ),
        (
            "oci+fetch://r.io/m:v2@sha256:" + "b" * 64,
            ("r.io", "m", "v2", "sha256:" + "b" * 64),
        ),
    ],
)
def test_reference_forms(reference: str, parts: tuple[str, str, str, str | None]) -> None:
    image = parse_reference(reference)
    assert (image.registry, image.repository, image.tag, image.digest) == parts


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("oci://org/model:v1", "name the registry host first"),
        ("oci://reg.io/Org/Model:v1", "not a valid OCI repository name"),
        ("oci://reg.io/model:bad/tag", "not a valid OCI repository name"),
        ("oci://reg.io/model:-v1", "not a valid OCI tag"),
        ("oci://reg.io/model@sha512:" + "a" * 128, "is not sha256"),
        ("oci://reg.io/../model:v1", "not a valid OCI repository name"),
        ("oci://reg.io/model?x=1", "not a valid OCI repository name"),
        ("docker://reg.io/model:v1", "not an oci:// reference"),
    ],
)
def test_malformed_references_are_unsupported(reference: str, problem: str) -> None:
    with pytest.raises(UnsupportedReference, match=problem):
        parse_reference(reference)


def layer(
    title: str | None, digest: str = "sha256:" + "c" * 64, **extra: object
) -> dict[str, object]:
    annotations = {"org.opencontainers.image.title": title} if title else {}
    return {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": digest,
        "size": 3,
        "annotations": annotations,
        **extra,
    }


def manifest(
    *layers: dict[str, object], media_type: str = "application/vnd.oci.image.manifest.v1+json"
) -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": media_type, "layers": list(layers)}


@pytest.mark.parametrize(
    ("document", "error", "problem"),
    [
        (
            manifest(layer("a"), media_type="application/vnd.example+json"),
            UnsupportedReference,
            "not understood",
        ),
        (
            manifest(layer("a"), layer("a", "sha256:" + "d" * 64)),
            SourceError,
            "listed twice",
        ),
        (
            manifest(layer("a"), layer("a/b", "sha256:" + "d" * 64)),
            SourceError,
            "both a file and the directory",
        ),
        (manifest(layer("a"), layer(None)), SourceError, "layer without"),
        (manifest(layer("a", "sha512:" + "d" * 128)), SourceError, "is not sha256"),
        (manifest(layer("a", size=-1)), SourceError, "not a byte count"),
        (
            manifest(
                layer(
                    "dir",
                    annotations={
                        "org.opencontainers.image.title": "dir",
                        "io.deis.oras.content.unpack": "true",
                    },
                )
            ),
            UnsupportedReference,
            "directory packed by oras",
        ),
        (manifest(), SourceError, "no layers"),
        ([], SourceError, "not a JSON object"),
        ({"manifests": "not-a-list"}, UnsupportedReference, "inside an image index"),
    ],
)
def test_manifests_that_are_not_plain_model_artifacts_are_refused(
    document: object, error: type[Exception], problem: str
) -> None:
    reference = "oci://r.io/m:v1"
    with pytest.raises(error, match=problem):  # a file list is checked as a whole by the model
        files = read_manifest(reference, document, "", "https://r.io/v2/m/blobs/").files
        ResolvedModel(reference, "oci://r.io/m", None, reference, files)
