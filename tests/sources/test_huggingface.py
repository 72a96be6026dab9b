"""HuggingFaceSource through the real huggingface_hub client, against the local hub on loopback.

The boundary tested is huggingface_hub 2.x talking HTTP to `tests/servers/hf_hub.py`, which
implements the hub endpoints the client calls (model info with file metadata, tree, resolve with
its CDN redirect) and the hub's error headers.
"""

from __future__ import annotations

import dataclasses
import filecmp
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants, hf_hub_url, snapshot_download

from tests.models import minilm_dir
from tests.servers.hf_hub import MINILM, TOKEN, Fault, LocalHub
from tests.sources.streams import read, source_settings
from weightgate.sources import (
    DigestMismatch,
    ModelTooLarge,
    NotFound,
    RevisionMoved,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    Unauthorized,
    UnsupportedReference,
    fetch,
    materialize,
)
from weightgate.sources.huggingface import HuggingFaceSource, parse_reference

LFS_ATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
MINILM_SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@pytest.fixture
def hub(hf_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    """The local hub as HF_ENDPOINT, with no token anywhere unless a test sets one."""
    monkeypatch.setenv("HF_ENDPOINT", hf_hub.endpoint)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    yield hf_hub


def new_repo(hub: LocalHub, **flags: bool) -> str:
    repo_id = f"test-org/model-{uuid.uuid4().hex[:10]}"
    hub.create_repo(repo_id, **flags)
    return repo_id


def weights(seed: int, size: int = 3 * 1024 * 1024 + 17) -> bytes:
    return hashlib.shake_256(seed.to_bytes(4, "big")).digest(size)


def commit_model(hub: LocalHub, repo_id: str, seed: int = 1) -> str:
    files = {".gitattributes": LFS_ATTRIBUTES, "config.json": b'{"seed": %d}' % seed}
    return hub.commit(repo_id, files | {"weights.bin": weights(seed)})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def minilm_files() -> dict[str, Path]:
    root = minilm_dir()
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


# --- resolve ----------------------------------------------------------------------------------


def test_resolve_pins_the_default_branch_and_lists_minilm_with_its_lfs_sha256(
    hub: LocalHub, tmp_path: Path
) -> None:
    model = HuggingFaceSource(source_settings(tmp_path)).resolve(f"hf://{MINILM}")

    head = hub.repos[MINILM].refs["main"]
    assert model.revision == head and len(head) == 40
    assert model.lineage == f"hf://{MINILM}" and model.pinned == f"hf://{MINILM}@{head}"
    originals = minilm_files()
    assert [file.path for file in model.files] == sorted(originals)
    for file in model.files:
        assert file.size == originals[file.path].stat().st_size
        assert file.locator == hf_hub_url(MINILM, file.path, revision=head, endpoint=hub.endpoint)
    lfs = {file.path: file.sha256 for file in model.files if file.sha256}
    assert lfs == {"model.safetensors": MINILM_SAFETENSORS_SHA256}
    assert sha256(originals["model.safetensors"].read_bytes()) == MINILM_SAFETENSORS_SHA256


def test_branch_tag_commit_and_kserve_forms_pin_the_same_commit(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    first = commit_model(hub, repo, seed=1)
    hub.set_ref(repo, "v1.0", first)
    hub.set_ref(repo, "feature/x", first)
    second = commit_model(hub, repo, seed=2)
    source = HuggingFaceSource(source_settings(tmp_path))

    for reference in (
        f"hf://{repo}@v1.0",
        f"hf://{repo}@{first}",
        f"hf://{repo}:v1.0",
        f"hf://models/{repo}@v1.0",
        f"hf://{repo}@feature%2Fx",
    ):
        model = source.resolve(reference)
        assert (model.reference, model.revision) == (reference, first)
        assert model.pinned == f"hf://{repo}@{first}" and model.lineage == f"hf://{repo}"
    assert source.resolve(f"hf://{repo}").revision == second
    assert source.resolve(f"hf://{repo}@main").revision == second


@pytest.mark.parametrize(
    "reference",
    [
        "hf://datasets/org/data",
        "hf://spaces/org/app",
        "hf://org/name/sub/dir",
        "hf://org",
        "hf://",
        "s3://org/name",
    ],
)
def test_unsupported_reference_forms_are_refused(reference: str) -> None:
    with pytest.raises(UnsupportedReference, match="hf://"):
        parse_reference(reference)


def test_a_model_over_the_size_limit_is_refused_before_any_download(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo)

    with pytest.raises(ModelTooLarge, match="nothing was downloaded"):
        fetch(f"hf://{repo}", source_settings(tmp_path, max_model_bytes=1024))
    assert hub.downloads(repo, "weights.bin") == hub.downloads(repo, "config.json") == 0


@pytest.mark.parametrize(
    "name", ["../escape.bin", "/tmp/absolute.bin", "a//b.bin", "./here.bin", "d/../../up.bin"]
)
def test_hostile_file_names_from_the_hub_are_refused_and_nothing_is_written(
    hub: LocalHub, tmp_path: Path, name: str
) -> None:
    repo = new_repo(hub)
    hub.commit(repo, {"config.json": b"{}", name: b"payload"})

    with pytest.raises(SourceError, match="refusing the file path"):
        fetch(f"hf://{repo}", source_settings(tmp_path))
    assert hub.downloads(repo, "config.json") == 0
    assert not (tmp_path / "cache").exists()
    assert not (tmp_path / "escape.bin").exists() and not (tmp_path / "up.bin").exists()


# --- streams and fetch --------------------------------------------------------------------------


def test_a_moved_branch_does_not_change_what_the_pinned_model_streams(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    old = commit_model(hub, repo, seed=1)
    source = HuggingFaceSource(source_settings(tmp_path))
    model = source.resolve(f"hf://{repo}")

    new = commit_model(hub, repo, seed=2)

    assert read(source, model, "weights.bin") == weights(1)
    assert read(source, model, "config.json") == b'{"seed": 1}'
    assert source.resolve(f"hf://{repo}").revision == new != old
    assert source.resolve(model.pinned).revision == old


def test_streams_resume_from_an_offset_through_the_cdn_and_from_the_hub(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo, seed=3)
    source = HuggingFaceSource(source_settings(tmp_path))
    model = source.resolve(f"hf://{repo}")

    assert read(source, model, "weights.bin", offset=1_000_003) == weights(3)[1_000_003:]
    assert read(source, model, "config.json", offset=5) == b'{"seed": 3}'[5:]
    assert hub.downloads(repo, "weights.bin") == hub.downloads(repo, "config.json") == 1


def test_fetch_minilm_end_to_end_every_file_matches_the_original(
    hub: LocalHub, tmp_path: Path
) -> None:
    fetched = fetch(f"hf://{MINILM}", source_settings(tmp_path))

    assert fetched.revision == hub.repos[MINILM].refs["main"]
    originals = minilm_files()
    assert {file.path: file.sha256 for file in fetched.files} == {
        path: sha256(original.read_bytes()) for path, original in originals.items()
    }
    directory = materialize(fetched, tmp_path / "model")
    for path, original in originals.items():
        assert filecmp.cmp(directory / path, original, shallow=False), path


def test_a_tampered_lfs_file_is_a_digest_mismatch_and_never_enters_the_cache(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo, seed=4)
    tampered = bytearray(weights(4))
    tampered[len(tampered) // 2] ^= 0x01
    hub.tamper(repo, "weights.bin", bytes(tampered))

    with pytest.raises(DigestMismatch, match=sha256(weights(4))):
        fetch(f"hf://{repo}", source_settings(tmp_path))
    assert not (tmp_path / "cache" / "blobs" / "sha256" / sha256(bytes(tampered))).exists()


def test_a_tampered_regular_file_fails_its_git_blob_id(hub: LocalHub, tmp_path: Path) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo, seed=5)
    hub.tamper(repo, "config.json", b'{"seed": 6}')
    source = HuggingFaceSource(source_settings(tmp_path))
    model = source.resolve(f"hf://{repo}")

    with pytest.raises(DigestMismatch, match="git blob id"):
        read(source, model, "config.json")


def test_a_file_the_hub_serves_with_another_etag_than_resolved_is_a_moved_revision(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo)
    source = HuggingFaceSource(source_settings(tmp_path))
    model = source.resolve(f"hf://{repo}")
    resolved = next(file for file in model.files if file.path == "weights.bin")
    stale = dataclasses.replace(resolved, etag=sha256(b"what was listed before"))

    with pytest.raises(RevisionMoved, match="ETag"), source.open(model, stale, 0):
        pass


# --- credentials ---------------------------------------------------------------------------------


def test_a_private_repo_needs_hf_token_and_works_with_it(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = new_repo(hub, private=True)
    commit_model(hub, repo, seed=7)

    with pytest.raises(Unauthorized, match="set HF_TOKEN"):
        HuggingFaceSource(source_settings(tmp_path)).resolve(f"hf://{repo}")

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    fetched = fetch(f"hf://{repo}", source_settings(tmp_path))
    assert {f.path: f.sha256 for f in fetched.files}["weights.bin"] == sha256(weights(7))


def test_the_token_file_of_huggingface_hub_is_used(hub: LocalHub, tmp_path: Path) -> None:
    repo = new_repo(hub, private=True)
    commit_model(hub, repo)
    token_file = Path(constants.HF_TOKEN_PATH)
    token_file.parent.mkdir(parents=True)
    token_file.write_text(TOKEN)

    assert HuggingFaceSource(source_settings(tmp_path)).resolve(f"hf://{repo}").revision


def test_a_token_the_hub_refuses_is_unauthorized(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_notavalidtoken")

    with pytest.raises(Unauthorized, match="refused HF_TOKEN"):
        HuggingFaceSource(source_settings(tmp_path)).resolve(f"hf://{MINILM}")


def test_a_gated_repo_lists_its_files_but_downloads_need_accepted_conditions(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = new_repo(hub, gated=True)
    commit_model(hub, repo)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    source = HuggingFaceSource(source_settings(tmp_path))
    model = source.resolve(f"hf://{repo}")

    with pytest.raises(Unauthorized, match=r"gated: accept its conditions.*HF_TOKEN"):
        read(source, model, "weights.bin")
    hub.repos[repo].gate_accepted = True
    assert read(source, model, "weights.bin") == weights(1)


# --- not found ---------------------------------------------------------------------------------


def test_missing_repo_revision_and_file_are_not_found(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = new_repo(hub)
    sha = commit_model(hub, repo)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # with a token the hub says 404, not 401
    source = HuggingFaceSource(source_settings(tmp_path))

    with pytest.raises(NotFound, match="no such repository"):
        source.resolve("hf://test-org/no-such-model")
    with pytest.raises(NotFound, match="no such revision"):
        source.resolve(f"hf://{repo}@no-such-branch")
    model = source.resolve(f"hf://{repo}")
    gone = dataclasses.replace(
        model.files[0],
        path="gone.bin",
        locator=hf_hub_url(repo, "gone.bin", revision=sha, endpoint=hub.endpoint),
    )
    with pytest.raises(NotFound, match=r"gone.bin: no such file"), source.open(model, gone, 0):
        pass


def test_an_anonymous_request_for_a_missing_repo_says_it_may_be_private(
    hub: LocalHub, tmp_path: Path
) -> None:
    with pytest.raises(Unauthorized, match="does not exist, or it is private or gated"):
        HuggingFaceSource(source_settings(tmp_path)).resolve("hf://test-org/no-such-model")


# --- failures on the wire ----------------------------------------------------------------------


def test_server_errors_are_retried_then_the_source_is_unavailable(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo)
    fault = hub.inject(Fault("status", match=f"/api/models/{repo}", times=100, status=503))

    with pytest.raises(SourceUnavailable, match=r"HTTP 503.*after 3 attempts"):
        HuggingFaceSource(source_settings(tmp_path, retries=2)).resolve(f"hf://{repo}")
    assert fault.served == 3


def test_a_passing_server_error_is_retried_by_resolve_and_by_the_fetcher(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo, seed=8)
    api_fault = hub.inject(Fault("status", match=f"/api/models/{repo}", times=2, status=502))
    model = HuggingFaceSource(source_settings(tmp_path, retries=2)).resolve(f"hf://{repo}")
    download_fault = hub.inject(Fault("status", match="/weights.bin", times=1, status=500))

    fetched = fetch(model, source_settings(tmp_path, retries=2))

    assert {f.path: f.sha256 for f in fetched.files}["weights.bin"] == sha256(weights(8))
    assert (api_fault.served, download_fault.served) == (2, 1)


def test_a_download_failing_every_time_is_tried_once_per_attempt_not_per_layer(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo, seed=10)
    model = HuggingFaceSource(source_settings(tmp_path)).resolve(f"hf://{repo}")
    fault = hub.inject(Fault("status", match="/weights.bin", times=100, status=503))

    with pytest.raises(SourceUnavailable, match=r"HTTP 503.*after 3 attempts"):
        fetch(model, source_settings(tmp_path, retries=2))
    assert fault.served == 3  # the fetcher's retries + 1: open itself never retries


def test_a_hub_that_does_not_answer_times_out_after_every_retry(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo)
    fault = hub.inject(Fault("stall", match=f"/api/models/{repo}", times=100, seconds=5))
    started = time.monotonic()

    with pytest.raises(SourceTimeout, match=r"no answer within 0.2 s.*after 2 attempts"):
        HuggingFaceSource(source_settings(tmp_path, timeout=0.2)).resolve(f"hf://{repo}")
    assert fault.served == 2 and time.monotonic() - started < 3


def test_a_body_that_stalls_is_a_timeout_and_one_cut_short_is_truncated(
    hub: LocalHub, tmp_path: Path
) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo)
    source = HuggingFaceSource(source_settings(tmp_path, timeout=0.3))
    model = source.resolve(f"hf://{repo}")

    hub.inject(Fault("stall-body", match="/lfs/", seconds=5))
    with pytest.raises(SourceTimeout, match=r"weights.bin"):
        read(source, model, "weights.bin")
    hub.inject(Fault("truncate", match="/lfs/"))
    with pytest.raises(TruncatedDownload, match=r"weights.bin: the download stopped early"):
        read(source, model, "weights.bin")


def test_fetch_resumes_a_cut_download_with_a_range_request(hub: LocalHub, tmp_path: Path) -> None:
    repo = new_repo(hub)
    commit_model(hub, repo, seed=9)
    fault = hub.inject(Fault("truncate", match="/lfs/"))

    fetched = fetch(f"hf://{repo}", source_settings(tmp_path))

    assert {f.path: f.sha256 for f in fetched.files}["weights.bin"] == sha256(weights(9))
    assert fault.served == 1 and hub.downloads(repo, "weights.bin") == 2


def test_hf_endpoint_is_read_when_the_source_is_constructed(
    hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_port: int
) -> None:
    source = HuggingFaceSource(source_settings(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{refused_port}")

    assert source.resolve(f"hf://{MINILM}").revision
    with pytest.raises(SourceUnavailable, match="ConnectError"):
        HuggingFaceSource(source_settings(tmp_path, retries=0)).resolve(f"hf://{MINILM}")


# --- the server itself ---------------------------------------------------------------------------


def test_the_local_hub_serves_the_real_clients_own_snapshot_download(
    hub: LocalHub, tmp_path: Path
) -> None:
    """huggingface_hub's own path (HEAD, tree listing, CDN redirect) gets MiniLM's bytes."""
    folder = snapshot_download(
        MINILM, endpoint=hub.endpoint, local_dir=tmp_path / "snapshot", token=False
    )

    for path, original in minilm_files().items():
        assert filecmp.cmp(os.path.join(folder, path), original, shallow=False), path
