"""`weightgate resolve URI` and `weightgate scan URI`, run as the installed console script."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from sarif_pydantic import Sarif

from tests.builders.pickles import system_call_v4
from tests.cli_process import run
from tests.models import minilm_dir
from tests.servers.https import Fault, HttpsFileServer
from weightgate import cli_sources, sources
from weightgate.scan.findings import ScanReport
from weightgate.sources.base import SourceSettings
from weightgate.sources.model import FetchedFile, FetchedModel, ResolvedModel
from weightgate.sources.registry import UNSUPPORTED


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: MiniLM is copied into it once."""
    return tmp_path_factory.mktemp("cache")


def cli(*args: str | Path, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run(*args, env={"WEIGHTGATE_CACHE": str(cache), **env})


def digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def content_digest(files: dict[str, str]) -> str:
    """The revision of content without one, computed from hashlib's digests of the files."""
    resolved = ResolvedModel("file:///x", "file:///x", None, "file:///x", ())
    fetched = tuple(FetchedFile(p, 0, sha, Path("/")) for p, sha in files.items())
    return FetchedModel(resolved, fetched).content_digest


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    root = tmp_path / "small model"
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden": 4}')
    (root / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 4)
    return root


@pytest.fixture
def evil_claim(tmp_path: Path) -> Path:
    """A PVC mount root holding claim `models` with a malicious pickle under `bad/`."""
    mounts = tmp_path / "mounts"
    (mounts / "models" / "bad").mkdir(parents=True)
    (mounts / "models" / "bad" / "model.pkl").write_bytes(system_call_v4())
    (mounts / "models" / "bad" / "config.json").write_text("{}")
    return mounts


def test_resolve_file_uri_text_lists_files_and_the_content_digest(
    small_model: Path, cache: Path
) -> None:
    reference = small_model.as_uri()  # file:///.../small%20model
    result = cli("resolve", reference, cache=cache)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = digests(small_model)
    assert lines[0] == f"reference  {reference}"
    assert lines[1] == f"lineage    {reference}"
    assert lines[2].startswith(f"revision   {content_digest(expected)}  (content digest")
    assert lines[3] == f"pinned     {reference}"
    assert lines[4] == "files      2 files, 1,037 bytes"
    assert lines[5].split() == ["13", expected["config.json"], "config.json"]
    assert lines[6].split() == ["1,024", expected["sub/weights.bin"], "sub/weights.bin"]
    assert result.stderr == ""


def test_resolve_file_uri_json(small_model: Path, cache: Path) -> None:
    reference = small_model.as_uri()
    result = cli("resolve", reference, "--format", "json", cache=cache)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    expected = digests(small_model)
    assert document == {
        "reference": reference,
        "lineage": reference,
        "revision": content_digest(expected),
        "revisionIsContentDigest": True,
        "pinned": reference,
        "totalBytes": 1037,
        "files": [
            {"path": "config.json", "size": 13, "sha256": expected["config.json"]},
            {"path": "sub/weights.bin", "size": 1024, "sha256": expected["sub/weights.bin"]},
        ],
    }


def test_scan_minilm_by_file_uri_shows_the_revision(cache: Path) -> None:
    reference = minilm_dir().as_uri()
    text = cli("scan", reference, cache=cache)
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.startswith(f"Model:    {reference}\nRevision: sha256:")
    assert "PASS" in text.stdout
    result = cli("scan", reference, "--format", "json", cache=cache)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    fetched = sources.fetch(reference, SourceSettings(cache_dir=cache / "models"))
    assert report["root"] == reference
    assert report["revision"] == fetched.revision == fetched.content_digest
    assert report["source"]["lineage"] == reference
    # the scan hashed exactly the bytes the fetch verified, which are the originals
    scanned = {f["path"]: f["sha256"] for f in report["files"]}
    assert scanned == {f.path: f.sha256 for f in fetched.files} == digests(minilm_dir())
    assert "model.safetensors" in scanned


def test_malicious_pickle_on_a_pvc_fails_the_gate(evil_claim: Path, cache: Path) -> None:
    env = {"WEIGHTGATE_PVC_ROOT": str(evil_claim)}
    result = cli("scan", "pvc://models/bad", cache=cache, **env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith("Model:    pvc://models/bad\nRevision: sha256:")
    assert "posix.system" in result.stdout
    assert "FAIL" in result.stdout
    sarif = cli("scan", "pvc://models/bad", "--format", "sarif", cache=cache, **env)
    assert sarif.returncode == 2
    document = json.loads(sarif.stdout)
    Sarif.model_validate(document)
    model = document["runs"][0]["properties"]["model"]
    assert model["reference"] == "pvc://models/bad"
    assert model["revision"].startswith("sha256:")
    uris = {a["location"]["uri"] for a in document["runs"][0]["artifacts"]}
    assert uris == {"config.json", "model.pkl"}


def test_download_progress_only_when_asked_or_on_a_terminal(
    small_model: Path, tmp_path: Path
) -> None:
    quiet = cli("scan", small_model.as_uri(), cache=tmp_path / "a")
    assert quiet.returncode == 0 and quiet.stderr == ""
    shown = cli("scan", small_model.as_uri(), "--progress", "always", cache=tmp_path / "b")
    assert shown.returncode == 0, shown.stderr
    assert "1.0 kB of 1.0 kB fetched" in shown.stderr
    assert "2/2 files" in shown.stderr


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("foo://bucket/model", "unknown scheme 'foo'"),
        ("http://example.invalid/model.bin", UNSUPPORTED["http"]),
        ("gs://bucket/model", UNSUPPORTED["gs"]),
    ],
)
@pytest.mark.parametrize("command", ["scan", "resolve"])
def test_unsupported_schemes_exit_1_with_the_registry_message(
    command: str, reference: str, message: str, cache: Path
) -> None:
    result = cli(command, reference, cache=cache)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_source_errors_exit_1_without_traceback(tmp_path: Path, cache: Path) -> None:
    missing = cli("resolve", "pvc://models/bert", cache=cache, WEIGHTGATE_PVC_ROOT=str(tmp_path))
    assert missing.returncode == 1
    assert "mounted by the in-cluster scan Job" in missing.stderr
    assert "Traceback" not in missing.stderr
    big = cli("scan", minilm_dir().as_uri(), "--max-model-size", "10MB", cache=cache)
    assert big.returncode == 1
    assert "more than the limit of 10000000 bytes" in big.stderr
    bad_size = cli("resolve", minilm_dir().as_uri(), "--max-model-size", "lots", cache=cache)
    assert bad_size.returncode == 1
    assert "expected a size such as 10GB" in bad_size.stderr


def test_plain_paths_stay_paths(tmp_path: Path, cache: Path) -> None:
    odd = tmp_path / "models:v2"
    odd.write_bytes(b"plain text\n")
    assert not cli_sources.is_reference(str(odd))
    assert not cli_sources.is_reference("notes:v2")
    assert cli_sources.is_reference("models:/name/1")
    assert cli_sources.is_reference("foo://x")
    result = cli("scan", odd, cache=cache)
    assert result.returncode == 0, result.stderr
    assert not result.stdout.startswith("Model:")
    missing = cli("scan", "notes:v2", cache=cache)
    assert missing.returncode == 1
    assert "no such file or directory" in missing.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [("1000", 1000), ("10GB", 10 * 10**9), ("512MiB", 512 * 2**20), ("2Gi", 2 * 2**30)],
)
def test_model_size_units(text: str, size: int) -> None:
    assert cli_sources.parse_size(text) == size


def test_model_size_rejects_a_binary_marker_without_a_prefix() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli_sources.parse_size("5iB")


def test_tampered_cache_blob_fails_verification_with_exit_2(
    small_model: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    fetched = sources.fetch(small_model.as_uri(), SourceSettings(cache_dir=cache / "models"))
    blob = next(f.blob for f in fetched.files if f.path == "config.json")
    blob.chmod(0o644)
    blob.write_text('{"hidden": 5}')  # same size: only the digest can tell
    result = cli("scan", small_model.as_uri(), cache=cache)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "weightgate: verification failed:" in result.stderr
    assert "config.json" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_scanned_names_files_fetched_but_not_scanned(
    small_model: Path, tmp_path: Path
) -> None:
    fetched = sources.fetch(small_model.as_uri(), SourceSettings(cache_dir=tmp_path))
    report = ScanReport(root="x")
    with pytest.raises(sources.DigestMismatch, match=r"config\.json, sub/weights\.bin fetched but"):
        cli_sources.check_scanned(report, fetched)


def test_resolve_pinned_https_prints_the_pin_without_downloading(
    https_server: HttpsFileServer, cache: Path
) -> None:
    data = b"\x00" * 100
    pin = hashlib.sha256(data).hexdigest()
    url = https_server.put("model.bin", data)
    ca = ("--ca-bundle", str(https_server.ca_bundle))
    result = cli("resolve", f"{url}#sha256={pin}", *ca, "--format", "json", cache=cache)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["revision"] == f"sha256:{pin}"
    assert document["revisionIsContentDigest"] is False
    assert document["files"] == [{"path": "model.bin", "size": 100, "sha256": pin}]
    assert https_server.downloads("model.bin") == 0
    text = cli("resolve", f"{url}#sha256={pin}", *ca, cache=cache)
    assert f"revision   sha256:{pin}\n" in text.stdout
    unpinned = cli("resolve", url, *ca, cache=cache)
    assert unpinned.returncode == 0, unpinned.stderr
    assert "(content digest" in unpinned.stdout
    assert https_server.downloads("model.bin") == 1


def test_https_pin_mismatch_fails_the_gate_and_options_reach_the_source(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("model.bin", b"real bytes")
    ca = ("--ca-bundle", str(https_server.ca_bundle))
    wrong = f"{url}#sha256={'0' * 64}"
    mismatch = cli("scan", wrong, *ca, cache=tmp_path / "a")
    assert mismatch.returncode == 2, mismatch.stdout + mismatch.stderr
    assert "weightgate: verification failed:" in mismatch.stderr
    untrusted = cli("resolve", url, "--retries", "0", cache=tmp_path / "b")
    assert untrusted.returncode == 1
    assert "Traceback" not in untrusted.stderr
    https_server.inject("model.bin", Fault(methods=frozenset({"GET"}), stall_after=2))
    stalled = cli("scan", url, *ca, "--timeout", "0.5", "--retries", "0", cache=tmp_path / "c")
    assert stalled.returncode == 1, stalled.stdout + stalled.stderr
    assert "timed out" in stalled.stderr
