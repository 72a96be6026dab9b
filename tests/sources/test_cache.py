"""The cache directory on its own: keys, locks, commits, lookups, eviction and sweeping."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import stat
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from weightgate.sources import cache as cache_module
from weightgate.sources.cache import (
    SETTLED_SECONDS,
    STALE_SECONDS,
    ModelCache,
    file_key,
    identifies_content,
)
from weightgate.sources.model import RemoteFile, ResolvedModel


def model_of(*files: RemoteFile, revision: str | None = "rev-1") -> ResolvedModel:
    return ResolvedModel("scheme://m", "scheme://m", revision, "scheme://m@rev-1", files)


def add_blob(cache: ModelCache, data: bytes, key: str, used: float) -> str:
    """Commit `data` as if downloaded under `key`, last used at `used` (epoch seconds)."""
    sha256 = hashlib.sha256(data).hexdigest()
    cache.partial(key).write_bytes(data)
    blob = cache.commit(key, sha256, indexed=True)
    os.utime(blob, (used, used))
    return sha256


def test_keys_name_content_when_a_digest_is_known_else_the_remote_file() -> None:
    pinned = RemoteFile("a.bin", 3, "ab" * 32, "url-1", '"e1"')
    same_content_elsewhere = RemoteFile("b.bin", 3, "ab" * 32, "url-2", None)
    tagged = RemoteFile("a.bin", 3, None, "url-1", '"e1"')
    retagged = RemoteFile("a.bin", 3, None, "url-1", '"e2"')
    model = model_of(pinned)

    assert file_key(model, pinned) == file_key(model_of(), same_content_elsewhere)
    assert file_key(model, tagged) == file_key(model_of(tagged), tagged)
    assert file_key(model, tagged) != file_key(model, retagged)
    assert identifies_content(model_of(revision=None), tagged)
    assert not identifies_content(model_of(revision=None), RemoteFile("a.bin", 3, locator="u"))


def test_a_commit_makes_a_read_only_blob_atomically_and_indexes_it(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    cache.partial("k").write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()

    blob = cache.commit("k", digest, indexed=True)

    assert blob == tmp_path / "blobs" / "sha256" / digest
    assert blob.read_bytes() == b"abc"
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert not cache.partial("k").exists()
    assert (tmp_path / "index" / "k").read_text() == digest
    assert sorted(os.listdir(tmp_path / "index")) == ["k"]  # no temporary file left


def test_lookup_finds_blobs_by_digest_or_index_and_marks_them_used(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    digest = add_blob(cache, b"abc", "k", used=1_000_000)

    assert cache.lookup("other", RemoteFile("x", 3, digest), None) == digest
    assert cache.blob(digest).stat().st_mtime > 1_000_000  # used just now
    assert cache.lookup("k", RemoteFile("x", 3), None) == digest
    assert cache.lookup("k", RemoteFile("x", 4), None) is None  # the size must match too
    assert cache.lookup("unknown", RemoteFile("x", 3), None) is None
    assert cache.lookup("k", RemoteFile("x", 3), time.time() + 60) is None  # index too old


def test_the_lock_excludes_threads_and_survives_its_file_being_removed(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    inside = 0
    most_inside = 0
    counter = threading.Lock()

    def take_turns(worker: int) -> None:
        nonlocal inside, most_inside
        for turn in range(20):
            with cache.locked("k") as lock:
                assert lock is not None
                with counter:
                    inside += 1
                    most_inside = max(most_inside, inside)
                time.sleep(0.0005)
                with counter:
                    inside -= 1
                lock.finished = (worker + turn) % 2 == 0  # removes the lock file half the time

    workers = [threading.Thread(target=take_turns, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)

    assert most_inside == 1


def hold_lock(cache_dir: Path, held: Event, done: Event) -> None:
    """Run in a spawned process: hold the lock on key "k" until told to stop."""
    with ModelCache(cache_dir).locked("k"):
        held.set()
        done.wait(30)


def test_the_lock_excludes_other_processes(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    held, done = context.Event(), context.Event()
    holder = context.Process(target=hold_lock, args=(tmp_path, held, done))
    holder.start()
    try:
        assert held.wait(30)
        with ModelCache(tmp_path).locked("k", blocking=False) as lock:
            assert lock is None
    finally:
        done.set()
        holder.join(30)

    with ModelCache(tmp_path).locked("k", blocking=False) as lock:
        assert lock is not None  # released when the holder ended


def test_eviction_drops_least_recently_used_blobs_but_never_kept_ones(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    now = time.time()
    oldest = add_blob(cache, b"a" * 100, "ka", used=now - 300)
    kept = add_blob(cache, b"b" * 100, "kb", used=now - 200)
    older = add_blob(cache, b"c" * 100, "kc", used=now - 100)
    newest = add_blob(cache, b"d" * 100, "kd", used=now)

    evicted = cache.evict(max_bytes=200, keep={kept})

    assert evicted == [oldest, older]
    assert sorted(os.listdir(cache.blobs)) == sorted([kept, newest])
    assert sorted(os.listdir(tmp_path / "index")) == ["kb", "kd"]  # entries follow their blobs
    assert cache.evict(max_bytes=50, keep={kept}) == [newest]
    assert cache.blob_bytes() == 100  # over the limit only by what must be kept


def test_eviction_does_nothing_under_the_limit(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    add_blob(cache, b"a" * 100, "ka", used=time.time())

    assert cache.evict(max_bytes=100, keep=()) == []
    assert cache.blob_bytes() == 100


def test_sweep_removes_stale_partials_and_locks_but_not_fresh_or_busy_ones(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path)
    stale = time.time() - STALE_SECONDS - 60
    for key in ("stale", "busy", "orphan"):
        cache.partial(key).write_bytes(b"x")
        os.utime(cache.partial(key), (stale, stale))
    for key in ("stale", "busy"):
        lock_file = tmp_path / "locks" / f"{key}.lock"
        lock_file.touch()
        os.utime(lock_file, (stale, stale))
    cache.partial("fresh").write_bytes(b"x")

    with cache.locked("busy"):
        swept = sorted(cache.sweep())

    assert swept == ["orphan", "stale"]
    assert sorted(os.listdir(cache.partial("any").parent)) == ["busy", "fresh"]
    assert sorted(os.listdir(tmp_path / "locks")) == ["busy.lock"]


def test_a_commit_is_recorded_as_unsynced_and_trusted_in_the_same_boot(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, boot="boot-1")
    digest = add_blob(cache, b"abc", "k", used=time.time())

    assert os.listdir(tmp_path / "unsynced" / "boot-1") == [digest]
    os.chmod(cache.blob(digest), 0o644)
    cache.blob(digest).write_bytes(b"xyz")  # same size: only a re-hash could tell

    assert cache.lookup("k", RemoteFile("x", 3), None) == digest  # the page cache is the truth


def test_in_another_boot_an_unsynced_blob_is_rehashed_once_then_trusted(tmp_path: Path) -> None:
    digest = add_blob(ModelCache(tmp_path, boot="boot-1"), b"abc", "k", used=time.time())
    cache = ModelCache(tmp_path, boot="boot-2")

    assert cache.lookup("k", RemoteFile("x", 3), None) == digest
    assert os.listdir(tmp_path / "unsynced" / "boot-1") == []  # synced: no second re-hash
    assert cache.blob(digest).read_bytes() == b"abc"


def test_in_another_boot_an_unsynced_blob_that_lost_its_bytes_is_deleted(tmp_path: Path) -> None:
    digest = add_blob(ModelCache(tmp_path, boot="boot-1"), b"abc", "k", used=time.time())
    blob = tmp_path / "blobs" / "sha256" / digest
    os.chmod(blob, 0o644)
    blob.write_bytes(b"\0\0\0")  # what a crash before writeback can leave
    cache = ModelCache(tmp_path, boot="boot-2")

    assert cache.lookup("other", RemoteFile("x", 3, digest), None) is None
    assert not blob.exists()
    assert os.listdir(tmp_path / "unsynced" / "boot-1") == []


def test_sweep_syncs_and_drops_settled_records_of_this_boot_only(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path, boot="boot-1")
    digest = add_blob(cache, b"abc", "k", used=time.time())
    (tmp_path / "unsynced" / "boot-0").mkdir()
    (tmp_path / "unsynced" / "boot-0" / digest).touch()

    cache.sweep()
    assert os.listdir(tmp_path / "unsynced" / "boot-1") == [digest]  # not settled yet

    cache.sweep(now=time.time() + SETTLED_SECONDS + 1)
    assert os.listdir(tmp_path / "unsynced" / "boot-1") == []
    assert os.listdir(tmp_path / "unsynced" / "boot-0") == [digest]  # still to be re-hashed


def test_partials_of_another_boot_are_never_resumed_and_swept_when_unlocked(
    tmp_path: Path,
) -> None:
    before = ModelCache(tmp_path, boot="boot-1")
    before.partial("k").write_bytes(b"half")
    before.partial("busy").write_bytes(b"half")
    after = ModelCache(tmp_path, boot="boot-2")

    assert not after.partial("k").exists()
    with after.locked("busy"):
        assert sorted(after.sweep()) == ["k"]
    assert os.listdir(tmp_path / "partial" / "boot-1") == ["busy"]  # its download goes on

    assert after.sweep() == ["busy"]
    assert sorted(os.listdir(tmp_path / "partial")) == ["boot-2"]


def test_without_a_boot_id_a_blob_is_synced_before_its_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(cache_module, "current_boot", lambda: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd) or real_fdatasync(fd))
    cache = ModelCache(tmp_path)

    digest = add_blob(cache, b"abc", "k", used=time.time())

    assert len(synced) == 1
    assert os.listdir(tmp_path / "unsynced") == []
    assert cache.lookup("k", RemoteFile("x", 3), None) == digest
