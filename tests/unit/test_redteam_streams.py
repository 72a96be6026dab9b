"""Red-team regressions for compressed streams: what Python's gzip module joins together."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import pytest

from tests.builders.zips import rules, scan_bytes
from weightgate import Severity

EVIL_PROTOCOL0 = b"cposix\nsystem\n(S'echo pwned'\ntR."
"""Hand-assembled protocol 0 pickle calling os.system (never loaded)."""


@pytest.mark.parametrize("cut", [1, 5, 12, len(EVIL_PROTOCOL0) - 2])
def test_gzip_members_split_by_zero_padding_are_joined(tmp_path: Path, cut: int) -> None:
    # gzip.open skips zero bytes between members, so pandas.read_pickle / joblib see the
    # whole pickle; neither half alone is one.
    data = gzip.compress(EVIL_PROTOCOL0[:cut]) + b"\0" * 7 + gzip.compress(EVIL_PROTOCOL0[cut:])
    findings = scan_bytes(tmp_path, data, "model.pkl.gz")
    assert rules(findings) == {("pickle.dangerous-global", Severity.CRITICAL)}
    assert all(f.path == "model.pkl.gz!model.pkl" for f in findings)


def test_gzip_zero_padding_at_the_end_is_not_trailing_data(tmp_path: Path) -> None:
    data = gzip.compress(b"just text\n") + b"\0" * 512
    assert rules(scan_bytes(tmp_path, data, "notes.txt.gz")) == set()


def test_bzip2_after_zero_padding_stays_trailing_data(tmp_path: Path) -> None:
    # bz2.open treats anything after a stream that is not a stream as the end: the
    # padded second stream is never decompressed by Python, so it is trailing data.
    data = bz2.compress(b"just text\n") + b"\0" * 4 + bz2.compress(b"more text\n")
    findings = scan_bytes(tmp_path, data, "notes.txt.bz2")
    assert ("archive.trailing-data", Severity.LOW) in rules(findings)
