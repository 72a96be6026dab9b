"""Keys on disk and small record stores for the provenance tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from weightgate.provenance.keys import SigningKey, generate_signing_key, write_key_pair
from weightgate.provenance.manifest import FileDigest, ModelManifest
from weightgate.provenance.record import GateDecision, PolicyReference, Requester
from weightgate.provenance.store import RecordStore


@dataclass(frozen=True)
class KeyPair:
    key: SigningKey
    private: Path
    public: Path


def make_key_pair(directory: Path, name: str) -> KeyPair:
    key = generate_signing_key()
    private, public = directory / f"{name}-key.pem", directory / f"{name}-pub.pem"
    write_key_pair(key, private, public, None)
    return KeyPair(key, private, public)


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return make_key_pair(tmp_path, "trusted")


def decision(
    lineage: str = "hf://org/model", revision: str = "r1", allowed: bool = True
) -> GateDecision:
    manifest = ModelManifest(
        "model",
        (FileDigest("model.safetensors", "ab" * 32), FileDigest("config.json", "cd" * 32)),
    )
    return GateDecision(
        lineage=lineage,
        resource_uri=f"{lineage}@{revision}",
        manifest=manifest,
        allowed=allowed,
        reasons=() if allowed else ("pickle.dangerous-global in x.pkl: os.system",),
        requester=Requester.from_user_info(
            {"username": "alice@example.com", "uid": "42", "groups": ["ml-team"]}
        ),
        policy=PolicyReference("https://weightgate.dev/policy/test", "ef" * 32),
        revision=revision,
        admission_uid="705ab4f5-6393-11e8-b7cc-42010a800002",
    )


@pytest.fixture
def store(tmp_path: Path, keys: KeyPair) -> RecordStore:
    """A store with three records of hf://org/model and one of models:/other."""
    records = RecordStore(tmp_path / "store", create=True)
    for revision in ("r1", "r2", "r3"):
        records.append(decision(revision=revision), keys.key)
    records.append(decision("models:/other", "1", allowed=False), keys.key)
    return records
