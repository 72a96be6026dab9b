"""Shared fixtures: where the third-party corpus lives, and scan helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("WEIGHTGATE_CORPUS", REPO.parent / "shared" / "corpus"))


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared corpus of third-party samples (inert data: bytes only)."""
    if not (CORPUS / "MANIFEST.tsv").is_file():
        pytest.fail(f"corpus not found at {CORPUS} (set WEIGHTGATE_CORPUS)")
    return CORPUS


pytest_plugins = (
    "tests.controlplane.fixtures",
    "tests.servers.loopback",  # before the server plugins that import it
    "tests.servers.hf_hub",
    "tests.servers.https",
    "tests.servers.mlflow",
    "tests.servers.registry",
    "tests.servers.s3",
    "tests.tools.peers",
)
