"""The one path rule every source's file list goes through (:mod:`weightgate.sources.paths`)."""

from __future__ import annotations

import re

import pytest

from weightgate.sources.errors import SourceError
from weightgate.sources.model import RemoteFile, ResolvedModel
from weightgate.sources.paths import check_file_tree, path_problem, safe_relative_path


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("../escape", "'..'"),
        ("a/../../b", "'..'"),
        ("./a", "'.'"),
        ("a//b", "empty"),
        ("a/", "empty"),
        ("a\\..\\b", "backslash"),
        ("a\0b", "control character"),
        ("a\nb", "control character"),
        ("\udcff.bin", "not UTF-8"),  # a surrogate-escaped byte from a non-UTF-8 name
        ("a" * 4097, "longer than 4096"),
    ],
)
def test_unsafe_paths_are_refused_with_the_reason(path: str, problem: str) -> None:
    assert problem in (path_problem(path) or "")
    with pytest.raises(SourceError, match="ref: refusing the file path"):
        safe_relative_path(path, "ref")


@pytest.mark.parametrize("path", ["w.bin", "1_Pooling/config.json", "a/b/c d.bin", "..a", "é.bin"])
def test_ordinary_relative_paths_pass(path: str) -> None:
    assert safe_relative_path(path, "ref") == path


def test_a_path_listed_twice_or_a_file_that_is_also_a_directory_is_refused() -> None:
    check_file_tree(["a", "b/c", "b/d"], "ref")
    with pytest.raises(SourceError, match="'a' is listed twice"):
        check_file_tree(["a", "b", "a"], "ref")
    with pytest.raises(SourceError, match="'a' is both a file and the directory of 'a/b/c'"):
        check_file_tree(["a/b/c", "a"], "ref")


def test_a_resolved_model_applies_the_rule_and_sorts_its_files() -> None:
    files = (RemoteFile("b.bin", 1), RemoteFile("a/c.bin", 2))
    model = ResolvedModel("x:/m", "x:/m", None, "x:/m", files)
    assert [file.path for file in model.files] == ["a/c.bin", "b.bin"]
    with pytest.raises(SourceError, match=re.escape("x:/m: refusing the file path '../b'")):
        ResolvedModel("x:/m", "x:/m", None, "x:/m", (RemoteFile("../b", 1),))
    with pytest.raises(SourceError, match="listed twice"):
        ResolvedModel("x:/m", "x:/m", None, "x:/m", (RemoteFile("b", 1), RemoteFile("b", 2)))
