from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from weightgate.provenance.errors import KeyFileError
from weightgate.provenance.keys import (
    generate_signing_key,
    load_signing_key,
    load_verifying_key,
    signing_key_from_pem,
    write_key_pair,
)


def test_generated_pair_round_trips_and_signs(tmp_path: Path) -> None:
    key = generate_signing_key()
    write_key_pair(key, tmp_path / "k.pem", tmp_path / "p.pem", None)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    loaded = load_signing_key(tmp_path / "k.pem")
    public = load_verifying_key(tmp_path / "p.pem")
    assert public.hint == key.public.hint == loaded.public.hint
    signature = loaded.sign(b"data")
    assert public.verifies(signature, b"data")
    assert not public.verifies(signature, b"other data")
    assert not public.verifies(b"not DER", b"data")


def test_hint_is_sha256_of_the_public_pem(tmp_path: Path) -> None:
    key = generate_signing_key()
    assert key.public.hint == hashlib.sha256(key.public.pem()).hexdigest()
    assert key.public.pem().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    write_key_pair(generate_signing_key(), tmp_path / "k.pem", tmp_path / "p.pem", b"s3cret")
    assert b"ENCRYPTED" in (tmp_path / "k.pem").read_bytes()
    assert load_signing_key(tmp_path / "k.pem", b"s3cret").public.hint
    with pytest.raises(KeyFileError, match="encrypted; give its password"):
        load_signing_key(tmp_path / "k.pem")
    with pytest.raises(KeyFileError, match="wrong password"):
        load_signing_key(tmp_path / "k.pem", b"guess")


def test_password_for_a_plain_key_is_refused(tmp_path: Path) -> None:
    write_key_pair(generate_signing_key(), tmp_path / "k.pem", tmp_path / "p.pem", None)
    with pytest.raises(KeyFileError, match="not encrypted"):
        load_signing_key(tmp_path / "k.pem", b"pw")


def test_existing_files_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "p.pem").write_text("keep me")
    with pytest.raises(KeyFileError, match="exists already"):
        write_key_pair(generate_signing_key(), tmp_path / "k.pem", tmp_path / "p.pem", None)
    assert (tmp_path / "p.pem").read_text() == "keep me"
    assert not (tmp_path / "k.pem").exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "curve secp384r1; weightgate signs"),
        (lambda: rsa.generate_private_key(65537, 2048), "weightgate signs with ECDSA P-256"),
    ],
)
def test_other_key_types_are_refused_for_signing(
    tmp_path: Path, make: Callable[[], Any], message: str
) -> None:
    pem = make().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "k.pem").write_bytes(pem)
    with pytest.raises(KeyFileError, match=message):
        load_signing_key(tmp_path / "k.pem")


def test_p384_public_keys_verify_model_signing_signatures(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "p.pem").write_bytes(pem)
    signature = private.sign(b"x", ec.ECDSA(hashes.SHA384()))
    assert load_verifying_key(tmp_path / "p.pem").verifies(signature, b"x")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a PEM public key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "private key"),
        (b"x" * 70_000, "not a key file"),
    ],
)
def test_unreadable_public_keys_get_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / "p.pem").write_bytes(content)
    with pytest.raises(KeyFileError, match=message):
        load_verifying_key(tmp_path / "p.pem")


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="No such file"):
        load_signing_key(tmp_path / "absent.pem")


def test_keys_from_a_secret_are_named_by_their_origin() -> None:
    key = generate_signing_key()
    loaded = signing_key_from_pem(key.pem(b"pw"), b"pw", "Secret weightgate/signing-key")
    assert loaded.public.hint == key.public.hint
    with pytest.raises(KeyFileError, match=r"^Secret weightgate/signing-key: wrong password"):
        signing_key_from_pem(key.pem(b"pw"), b"nope", "Secret weightgate/signing-key")
