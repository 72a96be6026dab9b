"""ECDSA P-256 keys in PEM files: the key type model_signing, cosign and in-toto all accept.

Signing uses P-256 only. Verification also accepts P-384 and P-521, which model_signing can
sign with, hashing with SHA-256/384/512 by curve size as it does. A key's *hint* is the
Sigstore bundle convention model_signing follows: the hex sha256 of the public key's PEM
(SubjectPublicKeyInfo) bytes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from weightgate.provenance.errors import KeyFileError
from weightgate.provenance.files import read_limited

_HASH_BY_CURVE: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class VerifyingKey:
    """A public key that checks signatures."""

    key: ec.EllipticCurvePublicKey

    def pem(self) -> bytes:
        """The key as PEM SubjectPublicKeyInfo, the form model_signing and cosign read."""
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def hint(self) -> str:
        """Hex sha256 of the PEM bytes (the bundle's ``publicKey.hint``)."""
        return hashlib.sha256(self.pem()).hexdigest()

    def verifies(self, signature: bytes, data: bytes) -> bool:
        """Whether ``signature`` (DER ECDSA) is this key's signature of ``data``."""
        algorithm = _HASH_BY_CURVE[self.key.curve.name]()
        try:
            self.key.verify(signature, data, ec.ECDSA(algorithm))
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    """A P-256 private key and its public half."""

    key: ec.EllipticCurvePrivateKey

    @property
    def public(self) -> VerifyingKey:
        """The matching verifying key."""
        return VerifyingKey(self.key.public_key())

    def sign(self, data: bytes) -> bytes:
        """A DER-encoded ECDSA signature over ``data`` with SHA-256."""
        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))

    def pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM, encrypted with the best available scheme when a password is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def generate_signing_key() -> SigningKey:
    """A fresh P-256 key."""
    return SigningKey(ec.generate_private_key(ec.SECP256R1()))


def signing_key_from_pem(data: bytes, password: bytes | None, origin: str) -> SigningKey:
    """Parse a PEM private key (from a file or a Secret named by ``origin`` in errors).

    Raises:
        KeyFileError: Not a PEM private key, wrong or missing password, or not P-256.
    """
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError as exc:  # encrypted without a password, or a password for a plain key
        if password is None:
            raise KeyFileError(
                f"{origin}: the private key is encrypted; give its password "
                "(WEIGHTGATE_KEY_PASSWORD or --key-password-file)"
            ) from exc
        raise KeyFileError(
            f"{origin}: the private key is not encrypted; drop the password"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        if password is not None and b"ENCRYPTED" in data:
            raise KeyFileError(f"{origin}: wrong password for the private key") from exc
        raise KeyFileError(f"{origin}: not a PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyFileError(f"{origin}: {_describe(key)}; weightgate signs with ECDSA P-256 keys")
    return SigningKey(key)


def verifying_key_from_pem(data: bytes, origin: str) -> VerifyingKey:
    """Parse a PEM public key (SubjectPublicKeyInfo).

    Raises:
        KeyFileError: Not a PEM public key, or not an ECDSA P-256/P-384/P-521 key.
    """
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        hint = " (this is a private key: pass its public half)" if b"PRIVATE KEY" in data else ""
        raise KeyFileError(f"{origin}: not a PEM public key{hint}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _HASH_BY_CURVE:
        raise KeyFileError(f"{origin}: {_describe(key)}; expected an ECDSA P-256 public key")
    return VerifyingKey(key)


def load_signing_key(path: Path, password: bytes | None = None) -> SigningKey:
    """Read a PEM private key file.

    Raises:
        KeyFileError: The file cannot be read or holds no usable key.
    """
    return signing_key_from_pem(_read_key_file(path), password, str(path))


def load_verifying_key(path: Path) -> VerifyingKey:
    """Read a PEM public key file.

    Raises:
        KeyFileError: The file cannot be read or holds no usable key.
    """
    return verifying_key_from_pem(_read_key_file(path), str(path))


def write_key_pair(
    key: SigningKey, private_path: Path, public_path: Path, password: bytes | None
) -> None:
    """Write the private key (mode 0600) and its public half; never overwrite either.

    Raises:
        KeyFileError: A file exists already or cannot be written.
    """
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise KeyFileError(f"{path}: exists already; weightgate never overwrites keys")
    _write_new(private_path, key.pem(password), 0o600)
    try:
        _write_new(public_path, key.public.pem(), 0o644)
    except KeyFileError:
        private_path.unlink()
        raise


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror or exc}") from exc
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _read_key_file(path: Path) -> bytes:
    return read_limited(path, MAX_KEY_FILE_BYTES, KeyFileError, "a key file")


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an ECDSA key on curve {key.curve.name}"
    return f"a {type(key).__name__.lstrip('_')}"
