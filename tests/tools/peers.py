"""Fixtures: the real peer tools weightgate's signatures and attestations are checked against.

`model_signing_cli` is the OpenSSF model_signing CLI (scripts/install-model-signing, in a venv
of its own) and `cosign_cli` is Sigstore's cosign (scripts/install-cosign, built from its Go
module). Each is installed once and cached between runs; the fixture returns the path of the
command. An install that fails raises `ToolInstallFailed` with the script's stderr tail: the
tests that need the tool error out, they are never skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools.install import install_tool


@pytest.fixture(scope="session")
def model_signing_cli() -> Path:
    """The `model_signing` command (PyPI model-signing, pinned in tests/tools)."""
    return install_tool("install-model-signing")


@pytest.fixture(scope="session")
def cosign_cli() -> Path:
    """The `cosign` command (github.com/sigstore/cosign/v3, pinned in tests/tools/go/cosign)."""
    return install_tool("install-cosign")
