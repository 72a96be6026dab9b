"""Fetching into the cache: against the real TLS server (https://) and real local files.

A few verification tests use a scripted in-memory source: it fakes the boundary (what a
server sends), never the fetcher under test.
"""

from __future__ import annotations

import filecmp
import hashlib
import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import ClassVar

import pytest

from tests.models import minilm_dir
from tests.servers.https import Fault, HttpsFileServer
from weightgate.sources import (
    DigestMismatch,
    FetchedFile,
    FetchedModel,
    ModelTooLarge,
    RemoteFile,
    ResolvedModel,
    RevisionMoved,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
    TruncatedDownload,
    fetch,
    materialize,
    resolve,
)
from weightgate.sources.base import SourceSettings
from weightgate.sources.fetch import fetch_model
from weightgate.sources.https import HttpsSource

CHUNK = 1024 * 1024
DATA = bytes(range(256)) * 4096  # 1 MiB, every offset distinguishable
DIGEST = hashlib.sha256(DATA).hexdigest()


def blobs(cache: Path) -> list[str]:
    return sorted(os.listdir(cache / "blobs" / "sha256"))


def partials(cache: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in (cache / "partial").glob("*/*")}


def test_fetches_and_materializes_a_real_model_verified(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    original = minilm_dir() / "model.safetensors"
    expected = hashlib.sha256(original.read_bytes()).hexdigest()
    url = https_server.link("model.safetensors", original)
    reported: list[tuple[str, int, int]] = []
    settings = replace(
        https_server.settings(tmp_path / "cache"), progress=lambda *call: reported.append(call)
    )

    fetched = fetch(url, settings)

    (file,) = fetched.files
    assert (file.path, file.size, file.sha256) == (
        "model.safetensors",
        original.stat().st_size,
        expected,
    )
    assert file.blob == tmp_path / "cache" / "blobs" / "sha256" / expected
    assert stat.S_IMODE(file.blob.stat().st_mode) == 0o444
    assert fetched.revision == fetched.content_digest  # unpinned: the content names it
    assert reported[-1] == ("model.safetensors", file.size, file.size)
    assert [done for _, done, _ in reported] == sorted(done for _, done, _ in reported)
    view = materialize(fetched, tmp_path / "view")
    assert view == tmp_path / "view"
    assert (view / "model.safetensors").stat().st_ino == file.blob.stat().st_ino  # a hard link
    assert filecmp.cmp(view / "model.safetensors", original, shallow=False)

    again = fetch(url, settings)

    assert again.files == fetched.files
    assert https_server.downloads("model.safetensors") == 1  # the second fetch found the blob
    assert partials(tmp_path / "cache") == {}
    # No key's lock file outlives its download (only the one eviction lock stays).
    assert os.listdir(tmp_path / "cache" / "locks") == ["evict.lock"]


def test_fetches_a_many_file_model_in_parallel_and_lays_out_its_tree(tmp_path: Path) -> None:
    settings = SourceSettings(cache_dir=tmp_path / "cache")

    fetched = fetch(f"file://{minilm_dir()}", settings)
    view = materialize(fetched, tmp_path / "view")

    assert len(fetched.files) == len(fetched.resolved.files) > 10
    for file in fetched.files:
        assert filecmp.cmp(view / file.path, minilm_dir() / file.path, shallow=False)
    assert (view / "1_Pooling" / "config.json").is_file()


def test_a_pinned_url_is_verified_against_its_pin(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)

    fetched = fetch(f"{url}#sha256={DIGEST}", https_server.settings(tmp_path))

    assert fetched.revision == f"sha256:{DIGEST}"
    assert fetched.files[0].sha256 == DIGEST


def test_a_pin_that_does_not_match_is_a_digest_mismatch_and_keeps_nothing(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    wrong = hashlib.sha256(b"something else").hexdigest()

    with pytest.raises(DigestMismatch, match=f"sha256 {DIGEST}, but the pin .* declared {wrong}"):
        fetch(f"{url}#sha256={wrong}", https_server.settings(tmp_path))

    assert blobs(tmp_path) == []
    assert partials(tmp_path) == {}


def test_content_replaced_between_resolve_and_fetch_is_a_moved_revision(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(methods=frozenset({"HEAD"}), replace_with=b"new" * 1000))

    with pytest.raises(RevisionMoved, match=r"w\.bin changed on the server"):
        fetch(url, https_server.settings(tmp_path))

    assert blobs(tmp_path) == []
    assert partials(tmp_path) == {}


def test_a_body_truncated_once_is_resumed_with_a_range_request(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(truncate_after=300_000))

    fetched = fetch(url, https_server.settings(tmp_path))

    assert fetched.files[0].sha256 == DIGEST
    assert [r.range for r in https_server.requests("w.bin", "GET")] == [None, "bytes=300000-"]


def test_resuming_from_a_server_that_ignores_range_still_gives_the_right_bytes(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(truncate_after=300_000))
    https_server.inject("w.bin", Fault(ignore_range=True))

    fetched = fetch(url, https_server.settings(tmp_path))

    assert fetched.files[0].sha256 == DIGEST
    assert [(r.range, r.status) for r in https_server.requests("w.bin", "GET")] == [
        (None, 200),
        ("bytes=300000-", 200),
    ]


def test_without_etag_or_pin_a_retry_starts_over_and_waiters_still_share_one_download(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(truncate_after=300_000, hide_etag=True, delay=0.3))
    https_server.inject(
        "w.bin", Fault(methods=frozenset({"HEAD", "GET"}), hide_etag=True, times=None)
    )
    settings = https_server.settings(tmp_path)
    model = resolve(url, settings)
    assert model.files[0].etag is None
    results: list[FetchedModel] = []
    workers = [
        threading.Thread(target=lambda: results.append(fetch(model, settings))) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    assert [result.files[0].sha256 for result in results] == [DIGEST] * 3
    # Nothing pins the file, so the bytes of the cut attempt are not trusted: start over.
    assert [r.range for r in https_server.requests("w.bin", "GET")] == [None, None]
    assert https_server.downloads("w.bin") == 2


def test_a_body_truncated_every_time_fails_as_truncated_and_keeps_the_partial(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(truncate_after=100_000, times=None))

    with pytest.raises(
        TruncatedDownload, match=r"after 100000 of \d+ bytes .*\(after 3 attempts\)"
    ):
        fetch(url, https_server.settings(tmp_path, retries=2))

    ranges = [r.range for r in https_server.requests("w.bin", "GET")]
    assert ranges == [None, "bytes=100000-", "bytes=200000-"]  # each attempt resumed
    assert list(partials(tmp_path).values()) == [300_000]
    assert blobs(tmp_path) == []


def test_a_server_error_on_every_download_is_tried_exactly_retries_plus_one_times(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    model = resolve(url, https_server.settings(tmp_path))
    https_server.inject("w.bin", Fault(status=503, times=None))

    with pytest.raises(SourceUnavailable, match=r"HTTP 503 .*\(after 3 attempts\)"):
        fetch(model, https_server.settings(tmp_path, retries=2))

    assert [r.status for r in https_server.requests("w.bin", "GET")] == [503] * 3


def test_a_stalled_download_times_out_never_shows_its_partial_and_resumes_later(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    data = DATA * 4
    # Sources read 1 MiB at a time: a stall loses only the chunk in flight, never what was had.
    url = https_server.put("w.bin", data)
    https_server.inject("w.bin", Fault(stall_after=CHUNK + 400_000, times=None))
    settings = https_server.settings(tmp_path, timeout=0.5, retries=1)
    failures: list[BaseException] = []

    def fetch_recording_failure() -> None:
        try:
            fetch(url, settings)
        except SourceTimeout as error:
            failures.append(error)

    worker = threading.Thread(target=fetch_recording_failure)
    worker.start()
    assert https_server.wait_stalled()
    assert blobs(tmp_path) == []  # stalled mid-download: only a partial exists
    assert len(partials(tmp_path)) == 1
    worker.join(10)

    assert len(failures) == 1
    assert "timed out" in str(failures[0])
    assert "(after 2 attempts)" in str(failures[0])
    assert list(partials(tmp_path).values()) == [2 * CHUNK]  # both attempts' chunks, kept
    https_server.clear_faults("w.bin")
    https_server.release()

    resumed = fetch(url, settings)

    assert resumed.files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert https_server.requests("w.bin", "GET")[-1].range == f"bytes={2 * CHUNK}-"


def test_an_interrupted_download_is_resumed_by_the_next_fetch(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(truncate_after=250_000))
    settings = https_server.settings(tmp_path, retries=0)
    model = resolve(url, settings)
    with pytest.raises(TruncatedDownload):
        fetch(model, settings)
    assert list(partials(tmp_path).values()) == [250_000]

    fetched = fetch(model, settings)

    assert fetched.files[0].sha256 == DIGEST
    assert https_server.requests("w.bin", "GET")[-1].range == "bytes=250000-"
    assert partials(tmp_path) == {}


def test_a_model_over_the_size_limit_downloads_nothing(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    model = resolve(url, https_server.settings(tmp_path))

    with pytest.raises(ModelTooLarge, match="nothing was downloaded"):
        fetch_model(
            model,
            HttpsSource(https_server.settings(tmp_path)),
            https_server.settings(tmp_path, max_model_bytes=len(DATA) - 1),
        )

    assert https_server.requests("w.bin", "GET") == []
    assert not (tmp_path / "blobs").exists()  # refused before the cache was even touched


def test_ten_threads_fetching_one_model_download_it_once(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(delay=0.5))  # the first download is slow: all wait
    settings = https_server.settings(tmp_path)
    model = resolve(url, settings)
    start = threading.Barrier(10)
    results: list[FetchedModel] = []

    def fetch_after_the_others_are_ready() -> None:
        start.wait(10)
        results.append(fetch(model, settings))

    workers = [threading.Thread(target=fetch_after_the_others_are_ready) for _ in range(10)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    assert len(results) == 10
    assert {result.files[0].blob for result in results} == {tmp_path / "blobs" / "sha256" / DIGEST}
    assert https_server.downloads("w.bin") == 1


def fetch_in_child(
    model: ResolvedModel, settings: SourceSettings, start: Barrier, results: Queue[str]
) -> None:
    """Run in a spawned process: wait for the others, fetch, report the blob."""
    start.wait(60)
    results.put(str(fetch(model, settings).files[0].blob))


def test_several_processes_fetching_one_model_download_it_once(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    url = https_server.put("w.bin", DATA)
    https_server.inject("w.bin", Fault(delay=1.0))
    settings = https_server.settings(tmp_path)
    model = resolve(url, settings)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    results: Queue[str] = context.Queue()
    children = [
        context.Process(target=fetch_in_child, args=(model, settings, start, results))
        for _ in range(4)
    ]
    for child in children:
        child.start()
    try:
        blobs_seen = {results.get(timeout=60) for _ in children}
    finally:
        for child in children:
            child.join(10)
            if child.is_alive():
                child.kill()

    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    assert blobs_seen == {str(tmp_path / "blobs" / "sha256" / DIGEST)}
    assert https_server.downloads("w.bin") == 1


def test_eviction_keeps_the_cache_under_its_limit_and_drops_the_least_recently_used(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    urls = {name: https_server.put(name, name.encode() * 1000) for name in ("a", "b", "c")}
    digests = {name: hashlib.sha256(name.encode() * 1000).hexdigest() for name in urls}
    settings = https_server.settings(tmp_path, cache_max_bytes=2500)
    for name in ("a", "b", "a", "c"):  # a is used again after b, so b is the least recent
        fetch(urls[name], settings)
        time.sleep(0.05)  # file times are coarse (a clock tick)

    assert blobs(tmp_path) == sorted([digests["a"], digests["c"]])
    assert https_server.downloads("a") == 1
    assert len(os.listdir(tmp_path / "index")) == 2  # b's index entry went with its blob


def test_the_model_being_fetched_is_never_evicted_even_over_the_limit(
    https_server: HttpsFileServer, tmp_path: Path
) -> None:
    big = https_server.put("big.bin", DATA)
    settings = https_server.settings(tmp_path, cache_max_bytes=1000)

    fetched = fetch(big, settings)

    assert fetched.files[0].blob.exists()
    fetch(https_server.put("small.bin", b"s" * 100), settings)
    assert blobs(tmp_path) == [hashlib.sha256(b"s" * 100).hexdigest()]


class ScriptedSource:
    """Announces one file and streams whatever bytes the test scripted (a fake server)."""

    schemes: ClassVar[tuple[str, ...]] = ("scripted",)

    def __init__(self, announced: RemoteFile, body: bytes) -> None:
        self.announced = announced
        self.body = body

    def resolve(self, reference: str) -> ResolvedModel:
        return ResolvedModel(reference, reference, None, reference, (self.announced,))

    @contextmanager
    def open(
        self, model: ResolvedModel, file: RemoteFile, offset: int
    ) -> Iterator[Iterator[bytes]]:
        yield iter([self.body[offset:]])


@pytest.mark.parametrize(
    ("pinned", "error", "message"),
    [
        (None, RevisionMoved, "more than the 10 bytes it announced: the file changed"),
        (hashlib.sha256(b"0123456789").hexdigest(), DigestMismatch, "cannot match the pinned"),
    ],
)
def test_more_bytes_than_announced_fail_verification(
    tmp_path: Path, pinned: str | None, error: type[Exception], message: str
) -> None:
    source = ScriptedSource(RemoteFile("w.bin", 10, pinned, etag='"1"'), b"0123456789AB")

    with pytest.raises(error, match=message):
        fetch_model(source.resolve("scripted:w"), source, SourceSettings(cache_dir=tmp_path))

    assert partials(tmp_path) == {}


def test_a_stream_that_ends_early_is_truncated(tmp_path: Path) -> None:
    source = ScriptedSource(RemoteFile("w.bin", 10, etag='"1"'), b"01234")
    settings = SourceSettings(cache_dir=tmp_path, retries=1, backoff=0.0)

    with pytest.raises(TruncatedDownload, match="ended after 5 of 10 bytes"):
        fetch_model(source.resolve("scripted:w"), source, settings)


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a//b", "a/./b", ""])
def test_hostile_paths_are_refused_when_listed_and_again_at_materialize(
    tmp_path: Path, path: str
) -> None:
    source = ScriptedSource(RemoteFile(path, 3, etag='"1"'), b"abc")
    with pytest.raises(SourceError, match="refusing the file path"):
        source.resolve("scripted:w")  # no model with such a path can exist, so none is fetched

    blob = tmp_path / "blob"
    blob.write_bytes(b"abc")
    resolved = ScriptedSource(RemoteFile("w.bin", 3, etag='"1"'), b"abc").resolve("scripted:w")
    forged = FetchedModel(resolved, (FetchedFile(path, 3, "00" * 32, blob),))
    with pytest.raises(SourceError, match="refusing the file path"):
        materialize(forged, tmp_path / "view")
    assert not (tmp_path / "escape").exists()


def test_materialize_copies_when_hard_links_cannot_cross_filesystems(
    https_server: HttpsFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched = fetch(https_server.put("w.bin", DATA), https_server.settings(tmp_path / "cache"))

    def cross_device_link(source: object, target: object) -> None:
        raise OSError(18, "Invalid cross-device link")  # EXDEV, as from another filesystem

    monkeypatch.setattr(os, "link", cross_device_link)
    view = materialize(fetched, tmp_path / "view")

    copy = view / "w.bin"
    assert copy.read_bytes() == DATA
    assert copy.stat().st_ino != fetched.files[0].blob.stat().st_ino
