"""file:// and pvc:// references against a real filesystem in a temporary directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.sources.streams import read
from weightgate import sources
from weightgate.sources.base import SourceSettings
from weightgate.sources.errors import (
    ModelTooLarge,
    NotFound,
    RevisionMoved,
    UnsupportedReference,
)
from weightgate.sources.local import LocalSource


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "tokenizer").mkdir(parents=True)
    (root / "weights.bin").write_bytes(b"w" * 3000)
    (root / "config.json").write_text('{"a": 1}')
    (root / "tokenizer" / "vocab.txt").write_text("hello\nworld\n")
    return root


@pytest.fixture
def local() -> LocalSource:
    return LocalSource(SourceSettings())


def test_directory_lists_regular_files_sorted_with_posix_paths(
    local: LocalSource, model_dir: Path
) -> None:
    reference = f"file://{model_dir}"
    model = local.resolve(reference)
    assert [(f.path, f.size, f.sha256) for f in model.files] == [
        ("config.json", 8, None),
        ("tokenizer/vocab.txt", 12, None),
        ("weights.bin", 3000, None),
    ]
    assert model.revision is None  # the content digest names it
    assert model.lineage == model.pinned == model.reference == reference
    assert read(local, model, "tokenizer/vocab.txt") == b"hello\nworld\n"


def test_single_file_and_reading_from_an_offset(local: LocalSource, model_dir: Path) -> None:
    model = local.resolve(f"file://{model_dir / 'weights.bin'}")
    assert [(f.path, f.size) for f in model.files] == [("weights.bin", 3000)]
    assert read(local, model, "weights.bin", offset=2990) == b"w" * 10


def test_percent_encoded_and_localhost_file_uris(local: LocalSource, tmp_path: Path) -> None:
    (tmp_path / "my model").mkdir()
    (tmp_path / "my model" / "a.bin").write_bytes(b"1")
    encoded = str(tmp_path / "my%20model")
    assert [f.path for f in local.resolve(f"file://{encoded}").files] == ["a.bin"]
    assert [f.path for f in local.resolve(f"file://localhost{encoded}").files] == ["a.bin"]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("file://otherhost/x", "another host"),
        ("file:relative/path", "file:///absolute/path"),
        ("file:///x?y=1", "no query or fragment"),
        ("pvc://Not_A_Claim/x", "not a PersistentVolumeClaim name"),
    ],
)
def test_malformed_references_are_unsupported(
    local: LocalSource, reference: str, message: str
) -> None:
    with pytest.raises(UnsupportedReference, match=message):
        local.resolve(reference)


def test_symlinks_inside_the_root_are_followed(local: LocalSource, model_dir: Path) -> None:
    (model_dir / "alias.bin").symlink_to("weights.bin")
    (model_dir / "tok").symlink_to("tokenizer")
    model = local.resolve(f"file://{model_dir}")
    sizes = {f.path: f.size for f in model.files}
    assert sizes["alias.bin"] == 3000
    assert sizes["tok/vocab.txt"] == 12
    assert read(local, model, "alias.bin") == b"w" * 3000


def test_symlink_escaping_the_root_is_refused(
    local: LocalSource, model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text("outside")
    (model_dir / "tokenizer" / "leak.txt").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsupportedReference, match=r"tokenizer/leak.txt is a symlink .*outside"):
        local.resolve(f"file://{model_dir}")


def test_dangling_symlink_and_symlink_loop_are_refused(local: LocalSource, model_dir: Path) -> None:
    (model_dir / "loop").symlink_to(".")
    with pytest.raises(UnsupportedReference, match="loop is a symlink loop"):
        local.resolve(f"file://{model_dir}")
    (model_dir / "loop").unlink()
    (model_dir / "gone").symlink_to("missing")
    with pytest.raises(UnsupportedReference, match="gone is a symlink to a missing file"):
        local.resolve(f"file://{model_dir}")


def test_special_files_are_refused(local: LocalSource, model_dir: Path) -> None:
    os.mkfifo(model_dir / "pipe")
    with pytest.raises(UnsupportedReference, match="pipe is a FIFO; a model holds only regular"):
        local.resolve(f"file://{model_dir}")
    with pytest.raises(UnsupportedReference, match="is a FIFO; only regular files"):
        local.resolve(f"file://{model_dir / 'pipe'}")


def test_missing_path_and_empty_directory_are_not_found(local: LocalSource, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file or directory"):
        local.resolve(f"file://{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFound, match="holds no files"):
        local.resolve(f"file://{tmp_path / 'empty'}")


def test_model_bigger_than_the_limit_is_refused_at_resolve(model_dir: Path) -> None:
    small = LocalSource(SourceSettings(max_model_bytes=1000))
    with pytest.raises(ModelTooLarge, match="3020 bytes in 3 files is more than the limit of 1000"):
        small.resolve(f"file://{model_dir}")


def test_size_change_after_resolve_is_a_moved_revision(local: LocalSource, model_dir: Path) -> None:
    model = local.resolve(f"file://{model_dir}")
    (model_dir / "config.json").write_text('{"a": 2, "b": 3}')
    with pytest.raises(
        RevisionMoved, match=r"config.json: changed since it was resolved \(8 bytes"
    ):
        read(local, model, "config.json")


def test_same_size_rewrite_and_swapped_symlink_are_moved_revisions(
    local: LocalSource, model_dir: Path, tmp_path: Path
) -> None:
    model = local.resolve(f"file://{model_dir}")
    weights = model_dir / "weights.bin"
    os.utime(weights, ns=(0, 12345))  # same size, different modification time
    with pytest.raises(RevisionMoved, match="modified since it was resolved"):
        read(local, model, "weights.bin")
    (tmp_path / "other").write_bytes(b"{}")
    (model_dir / "config.json").unlink()
    (model_dir / "config.json").symlink_to(tmp_path / "other")
    with pytest.raises(RevisionMoved, match="replaced by a symlink"):
        read(local, model, "config.json")
    (model_dir / "tokenizer" / "vocab.txt").unlink()
    with pytest.raises(RevisionMoved, match="removed since it was resolved"):
        read(local, model, "tokenizer/vocab.txt")


def test_pvc_resolves_under_the_pvc_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_dir: Path
) -> None:
    (tmp_path / "mounts").mkdir()
    (tmp_path / "mounts" / "models-claim").mkdir()
    model_dir.rename(tmp_path / "mounts" / "models-claim" / "bert")
    monkeypatch.setenv("WEIGHTGATE_PVC_ROOT", str(tmp_path / "mounts"))
    local = LocalSource(SourceSettings())
    model = local.resolve("pvc://models-claim/bert")
    assert [f.path for f in model.files] == ["config.json", "tokenizer/vocab.txt", "weights.bin"]
    assert model.lineage == model.pinned == "pvc://models-claim/bert"
    assert read(local, model, "config.json") == b'{"a": 1}'
    whole = local.resolve("pvc://models-claim")
    assert whole.files[0].path == "bert/config.json"
    with pytest.raises(UnsupportedReference, match=r"'\.\.' are not allowed"):
        local.resolve("pvc://models-claim/../models-claim/bert")


def test_pvc_symlink_out_of_the_volume_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_dir: Path
) -> None:
    (tmp_path / "mounts" / "claim").mkdir(parents=True)
    (tmp_path / "mounts" / "claim" / "model").symlink_to(model_dir)
    monkeypatch.setenv("WEIGHTGATE_PVC_ROOT", str(tmp_path / "mounts"))
    with pytest.raises(UnsupportedReference, match="outside the volume"):
        LocalSource(SourceSettings()).resolve("pvc://claim/model")


def test_unmounted_pvc_explains_where_claims_are_mounted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WEIGHTGATE_PVC_ROOT", str(tmp_path))
    with pytest.raises(NotFound) as raised:
        LocalSource(SourceSettings()).resolve("pvc://models-claim/bert")
    message = str(raised.value)
    assert f"not mounted at {tmp_path / 'models-claim'}" in message
    assert "mounted by the in-cluster scan Job under /mnt/pvc" in message
    assert "WEIGHTGATE_PVC_ROOT" in message


def test_fetch_end_to_end_verifies_and_names_the_content(model_dir: Path, tmp_path: Path) -> None:
    settings = SourceSettings(cache_dir=tmp_path / "cache")
    fetched = sources.fetch(f"file://{model_dir}", settings)
    expected = {
        path.relative_to(model_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in model_dir.rglob("*")
        if path.is_file()
    }
    assert {f.path: f.sha256 for f in fetched.files} == expected
    assert {f.path: f.blob.read_bytes() for f in fetched.files}["config.json"] == b'{"a": 1}'
    assert fetched.revision == fetched.content_digest
    view = sources.materialize(fetched, tmp_path / "view")
    assert (view / "tokenizer" / "vocab.txt").read_text() == "hello\nworld\n"
