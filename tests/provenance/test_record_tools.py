"""Admission records checked with standard tools only: base64, sha256sum and cosign.

Nothing here reads a record with weightgate code: the shell decodes the payload and hashes
it, and cosign (built from its Go module) verifies the DSSE signature and the subjects.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_process import run
from tests.models import minilm_dir
from tests.provenance.conftest import KeyPair

VSA = "https://slsa.dev/verification_summary/v1"


@pytest.fixture
def recorded(tmp_path: Path, keys: KeyPair) -> tuple[Path, Path, list[Path]]:
    """MiniLM scanned twice with records: (model directory, store, record bundle paths)."""
    model = tmp_path / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_dir(), model)
    store = tmp_path / "store"
    bundles = []
    for _ in range(2):
        result = run(
            "scan",
            model,
            "--record-store",
            store,
            "--signing-key",
            keys.private,
            "--lineage",
            "hf://sentence-transformers/all-MiniLM-L6-v2",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        bundles.append(Path(result.stderr.strip().splitlines()[-1].rsplit(": ", 1)[1]))
    return model, store, bundles


def _shell(script: str, *args: str | Path) -> str:
    result = subprocess.run(
        ["bash", "-c", script, "shell", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# The bundle is one line of compact JSON; the payload is the only "payload" member.
PAYLOAD = r"""grep -o '"payload":"[^"]*"' "$1" | cut -d'"' -f4 | base64 -d"""


def test_previous_link_is_sha256sum_of_the_previous_payload(
    recorded: tuple[Path, Path, list[Path]],
) -> None:
    _, _, (first, second) = recorded
    first_digest = _shell(PAYLOAD + " | sha256sum | cut -d' ' -f1", first)
    # The file name is that digest too (records are stored by payload digest).
    assert first.name == f"{first_digest}.sigstore.json"
    second_payload = _shell(PAYLOAD, second)
    link = _shell(
        PAYLOAD
        + r""" | tr -d ' \n' | grep -o '"previous":{"sha256":"[0-9a-f]*"' | cut -d'"' -f6""",
        second,
    )
    assert link == first_digest
    assert '"predicateType": "https://slsa.dev/verification_summary/v1"' in second_payload
    first_payload = _shell(PAYLOAD, first)
    assert '"previous": null' in first_payload


def test_cosign_verifies_a_record_against_a_model_file(
    cosign_cli: Path, recorded: tuple[Path, Path, list[Path]], keys: KeyPair, tmp_path: Path
) -> None:
    model, _, (_, record) = recorded

    def cosign(blob: Path, key: Path = keys.public) -> subprocess.CompletedProcess[str]:
        command = [
            cosign_cli, "verify-blob-attestation", "--key", key, "--insecure-ignore-tlog",
            "--type", VSA, "--bundle", record, blob,
        ]  # fmt: skip
        return subprocess.run(
            [str(part) for part in command],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            # An empty home: nothing from this machine's cosign or TUF setup, no network.
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "TUF_ROOT": str(tmp_path / "tuf")},
        )

    for name in ("model.safetensors", "config.json", "vocab.txt"):
        verified = cosign(model / name)
        assert verified.returncode == 0, f"{name}: {verified.stdout}{verified.stderr}"
        assert "Verified OK" in verified.stdout + verified.stderr
    tampered = tmp_path / "model.safetensors"
    data = bytearray((model / "model.safetensors").read_bytes())
    data[1000] ^= 0x01
    tampered.write_bytes(bytes(data))
    refused = cosign(tampered)
    assert refused.returncode != 0
    assert "digests do not match" in refused.stderr
    other_key = tmp_path / "other.pem"
    made = run("keys", "generate", "--private-key", tmp_path / "o.pem", "--public-key", other_key)
    assert made.returncode == 0
    assert cosign(model / "config.json", other_key).returncode != 0


def test_a_denied_scan_is_recorded_with_its_reasons(
    tmp_path: Path, keys: KeyPair, corpus_dir: Path
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(corpus_dir / "modelaudit/exploits/exploit1_basic_torch_bypass.pkl", model)
    store = tmp_path / "store"
    result = run(
        "scan",
        model,
        "--record-store",
        store,
        "--signing-key",
        keys.private,
        env={
            "GITHUB_ACTIONS": "true",
            "GITHUB_ACTOR": "octocat",
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_RUN_ID": "7",
            "GITHUB_SERVER_URL": "https://github.com",
        },
    )
    assert result.returncode == 2
    log = run("records", "log", model.resolve().as_uri(), "--store", store, "--format", "json")
    assert log.returncode == 0, log.stderr
    (entry,) = json.loads(log.stdout)
    assert entry["decision"] == "denied"
    assert any("exploit1_basic_torch_bypass.pkl" in reason for reason in entry["reasons"])
    assert entry["requester"] == {
        "kind": "ci",
        "name": "octocat",
        "system": "github-actions",
        "repository": "o/r",
        "ref": "",
        "workflow": "",
        "run": "https://github.com/o/r/actions/runs/7",
    }
    assert run("records", "verify", store, "--key", keys.public).returncode == 0
