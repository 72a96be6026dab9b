"""``weightgate diff`` of model URIs: two revisions of all-MiniLM-L6-v2 on the local hub.

The console script runs as users run it, against ``tests/servers/hf_hub.py`` (the hub's real
endpoints over loopback HTTP, its CDN on a second port): each side is pinned, fetched into the
cache and verified as ``scan`` fetches it, and the report names each side's revision. Errors
are the ones ``scan`` gives for the same URI, word for word.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sarif_pydantic import Sarif

from tests.builders.minilm import EDITED, minilm_variant, rank_one_edit
from tests.cli_process import run
from tests.models import minilm_dir
from tests.servers.hf_hub import Fault, LocalHub
from weightgate import sources
from weightgate.sources.base import SourceSettings


@dataclass(frozen=True)
class Versions:
    """A hub repository holding MiniLM at tag ``v1`` and its rank-one edit at ``v2``."""

    repo: str
    v1: str
    v2: str
    edited: Path  # v2's files, on disk

    def uri(self, revision: str) -> str:
        return f"hf://{self.repo}@{revision}"


@pytest.fixture(scope="module")
def versions(hf_hub_server: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> Versions:
    edited = minilm_variant(tmp_path_factory.mktemp("edited"), "minilm", rank_one_edit)
    repo = f"test-org/minilm-{uuid.uuid4().hex[:10]}"
    hf_hub_server.create_repo(repo)
    v1 = hf_hub_server.commit(repo, minilm_dir())
    hf_hub_server.set_ref(repo, "v1", v1)
    v2 = hf_hub_server.commit(repo, {"model.safetensors": edited / "model.safetensors"})
    hf_hub_server.set_ref(repo, "v2", v2)
    return Versions(repo, v1, v2, edited)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: each revision's files are downloaded once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def hub_environment(hf_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> LocalHub:
    """The console script talks to the local hub, with no token from anywhere."""
    monkeypatch.setenv("HF_ENDPOINT", hf_hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    return hf_hub


def cli(*args: str | Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return run(*args, env={"WEIGHTGATE_CACHE": str(cache)})


def test_a_rank_one_edit_between_two_hub_revisions_fails_naming_tensor_and_revisions(
    versions: Versions, cache: Path
) -> None:
    baseline, candidate = versions.uri("v1"), versions.uri("v2")
    text = cli("diff", baseline, candidate, cache=cache)
    assert text.returncode == 2, text.stdout + text.stderr
    assert text.stdout.splitlines()[:6] == [
        f"baseline  {baseline}",
        f"          Revision: {versions.v1}",
        f"          Pinned:   {versions.uri(versions.v1)}",
        f"candidate {candidate}",
        f"          Revision: {versions.v2}",
        f"          Pinned:   {versions.uri(versions.v2)}",
    ]
    assert "FAIL  census: localised edit: 1 of 104 tensors changed" in text.stdout
    assert f"      {EDITED}\n" in text.stdout

    result = cli("diff", baseline, candidate, "--format", "json", cache=cache)
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    assert (document["baseline"], document["candidate"]) == (baseline, candidate)
    census = next(v for v in document["verdicts"] if v["detector"] == "census")
    assert census["status"] == "fail" and census["tensors"] == [EDITED]
    assert [change["tensor"] for change in document["tensors"]["changed"]] == [EDITED]
    lineage = f"hf://{versions.repo}"
    assert document["sources"]["baseline"] == {
        "reference": baseline,
        "lineage": lineage,
        "revision": versions.v1,
        "revisionIsContentDigest": False,
        "pinned": versions.uri(versions.v1),
        "contentDigest": document["sources"]["baseline"]["contentDigest"],
    }
    assert document["sources"]["candidate"]["revision"] == versions.v2
    assert document["sources"]["candidate"]["pinned"] == versions.uri(versions.v2)

    sarif = cli("diff", baseline, candidate, "--format", "sarif", cache=cache)
    assert sarif.returncode == 2, sarif.stderr
    log = json.loads(sarif.stdout)
    Sarif.model_validate(log)
    properties = log["runs"][0]["properties"]
    assert (properties["baseline"], properties["candidate"]) == (baseline, candidate)
    assert properties["models"] == document["sources"]
    census_results = [r for r in log["runs"][0]["results"] if r["ruleId"] == "diff.census"]
    assert [r["properties"]["tensor"] for r in census_results] == [EDITED]


def test_the_same_revision_twice_passes_and_is_downloaded_once(
    versions: Versions, hub_environment: LocalHub, tmp_path: Path
) -> None:
    hub, cache = hub_environment, tmp_path / "cache"
    before = hub.downloads(versions.repo, "model.safetensors", versions.v1)
    pinned = versions.uri(versions.v1)
    result = cli("diff", versions.uri("v1"), pinned, "--progress", "always", cache=cache)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "104 tensors compared: 104 identical, 0 changed" in result.stdout
    assert result.stdout.count(f"Revision: {versions.v1}\n") == 2
    assert "PASS: no detector failed" in result.stdout
    assert "fetched" in result.stderr  # the download progress bar, as scan draws it
    assert hub.downloads(versions.repo, "model.safetensors", versions.v1) == before + 1


def test_a_local_directory_and_a_uri_mix_either_way(versions: Versions, cache: Path) -> None:
    local_first = cli("diff", minilm_dir(), versions.uri("v2"), cache=cache)
    assert local_first.returncode == 2, local_first.stdout + local_first.stderr
    assert local_first.stdout.splitlines()[:3] == [
        f"baseline  {minilm_dir()}",
        f"candidate {versions.uri('v2')}",
        f"          Revision: {versions.v2}",
    ]
    assert f"      {EDITED}\n" in local_first.stdout
    uri_first = cli("diff", versions.uri("v2"), versions.edited, "--format", "json", cache=cache)
    assert uri_first.returncode == 0, uri_first.stdout + uri_first.stderr
    document = json.loads(uri_first.stdout)
    assert document["candidate"] == str(versions.edited)
    assert set(document["sources"]) == {"baseline"}
    assert document["tensors"]["changed"] == []


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("foo://bucket/model", "unknown scheme 'foo'"),
        ("{repo}@no-such-tag", "no such revision"),
        ("hf://test-org/absent", "set HF_TOKEN"),  # the hub hides it from anonymous requests
    ],
)
def test_a_uri_that_does_not_resolve_exits_1_as_scan_does(
    reference: str, message: str, versions: Versions, cache: Path
) -> None:
    reference = reference.format(repo=f"hf://{versions.repo}")
    diff = cli("diff", minilm_dir(), reference, cache=cache)
    scan = cli("scan", reference, cache=cache)
    assert diff.returncode == scan.returncode == 1, diff.stdout + diff.stderr
    assert diff.stderr == scan.stderr
    assert diff.stderr.startswith(f"weightgate: error: {reference}: ")
    assert message in diff.stderr
    assert "Traceback" not in diff.stderr


def test_size_limit_and_truncated_download_exit_1_as_scan_does(
    versions: Versions, hub_environment: LocalHub, tmp_path: Path
) -> None:
    candidate = versions.uri("v2")
    limit = ("--max-model-size", "10MB")
    too_big = cli("diff", versions.uri("v1"), candidate, *limit, cache=tmp_path / "a")
    assert too_big.returncode == 1
    assert too_big.stderr == cli("scan", versions.uri("v1"), *limit, cache=tmp_path / "a").stderr
    assert "more than the limit of 10000000 bytes; nothing was downloaded" in too_big.stderr

    edited = hashlib.sha256((versions.edited / "model.safetensors").read_bytes()).hexdigest()
    outcomes = []
    for command in (("diff", minilm_dir(), candidate), ("scan", candidate)):
        hub_environment.inject(Fault("truncate", match=edited))
        outcome = cli(*command, "--retries", "0", cache=tmp_path / command[0])
        outcomes.append(outcome)
    diff, scan = outcomes
    assert diff.returncode == scan.returncode == 1, diff.stdout + diff.stderr
    assert diff.stderr == scan.stderr
    assert "model.safetensors" in diff.stderr and "Traceback" not in diff.stderr


def test_bytes_changed_in_the_cache_fail_verification(tmp_path: Path) -> None:
    copy = minilm_variant(tmp_path, "copy", lambda tensors: None)
    cache = tmp_path / "cache"
    fetched = sources.fetch(copy.as_uri(), SourceSettings(cache_dir=cache / "models"))
    blob = next(f.blob for f in fetched.files if f.path == "config.json")
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"384", b"385", 1))  # same size
    result = cli("diff", copy, copy.as_uri(), cache=cache)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"weightgate: verification failed: {copy.as_uri()}: ")
    assert "config.json" in result.stderr and "the cache was modified" in result.stderr


def test_an_unreadable_tensor_file_is_named_by_its_uri(tmp_path: Path) -> None:
    broken = minilm_variant(tmp_path, "broken", lambda tensors: None)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = cli("diff", minilm_dir(), broken.as_uri(), cache=tmp_path / "cache")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(
        f"weightgate: error: {broken.as_uri()}: model.safetensors: not a readable tensor file"
    )
