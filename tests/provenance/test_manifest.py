"""The model_signing files manifest: which files, in which order, with which root digest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from weightgate.errors import InputError
from weightgate.provenance.manifest import (
    FileDigest,
    ModelManifest,
    file_sha256,
    hash_model,
    manifest_differences,
    model_files,
)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_order_is_by_path_components_and_root_hashes_raw_digests(tmp_path: Path) -> None:
    model = _tree(tmp_path / "m", {"sub-file": b"c", "sub/b.bin": b"b", "a.txt": b"a"})
    manifest = hash_model(model)
    assert [item.path for item in manifest.files] == ["a.txt", "sub/b.bin", "sub-file"]
    raw = b"".join(hashlib.sha256(data).digest() for data in (b"a", b"b", b"c"))
    assert manifest.root_digest() == hashlib.sha256(raw).hexdigest()
    assert manifest.model_name == "m"


def test_git_paths_are_ignored_at_the_top_only(tmp_path: Path) -> None:
    model = _tree(
        tmp_path / "m",
        {".git/HEAD": b"x", ".gitignore": b"x", ".github/w.yml": b"x", "d/.gitignore": b"y"},
    )
    assert model_files(model) == ["d/.gitignore"]
    assert sorted(model_files(model, ())) == [
        ".git/HEAD",
        ".github/w.yml",
        ".gitignore",
        "d/.gitignore",
    ]


def test_ignore_paths_drop_files_and_subtrees(tmp_path: Path) -> None:
    model = _tree(tmp_path / "m", {"keep": b"1", "cache/x": b"2", "cache2": b"3", "sig": b"4"})
    assert sorted(model_files(model, ["cache", "sig"])) == ["cache2", "keep"]


@pytest.mark.parametrize("bad", ["", "/etc", "../x", "a/../../b"])
def test_ignore_paths_must_stay_inside_the_model(tmp_path: Path, bad: str) -> None:
    model = _tree(tmp_path / "m", {"f": b""})
    with pytest.raises(InputError, match="inside the model directory"):
        model_files(model, [bad])


def test_symbolic_links_are_refused_not_skipped(tmp_path: Path) -> None:
    model = _tree(tmp_path / "m", {"f": b"x"})
    (model / "link").symlink_to(model / "f")
    with pytest.raises(InputError, match="symbolic link"):
        hash_model(model)


def test_special_files_are_refused(tmp_path: Path) -> None:
    model = _tree(tmp_path / "m", {"f": b"x"})
    os.mkfifo(model / "pipe")
    with pytest.raises(InputError, match="not a regular file"):
        hash_model(model)


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(InputError, match="not a model directory"):
        hash_model(tmp_path / "f")


def test_known_digests_are_reused_not_recomputed(tmp_path: Path) -> None:
    model = _tree(tmp_path / "m", {"a": b"a", "b": b"b"})
    manifest = hash_model(model, known={"a": "0" * 64})
    assert manifest.digests() == {"a": "0" * 64, "b": hashlib.sha256(b"b").hexdigest()}


def test_many_files_hash_in_parallel_to_the_same_result(tmp_path: Path) -> None:
    files = {f"d{i % 7}/f{i}": os.urandom(i * 13) for i in range(200)}
    model = _tree(tmp_path / "m", files)
    parallel, serial = hash_model(model, jobs=4), hash_model(model, jobs=1)
    assert parallel == serial
    assert parallel.digests() == {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}


def test_a_file_that_vanishes_while_hashing_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="gone"):
        file_sha256(tmp_path / "gone")


def test_differences_name_every_changed_missing_and_extra_file() -> None:
    signed = ModelManifest("m", (FileDigest("a", "1" * 64), FileDigest("b", "2" * 64)))
    actual = ModelManifest("m", (FileDigest("a", "3" * 64), FileDigest("c", "4" * 64)))
    assert manifest_differences(signed, actual) == [
        "extra file (not signed): c",
        "missing file: b",
        f"changed: a (signed sha256 {'1' * 64}, now {'3' * 64})",
    ]
