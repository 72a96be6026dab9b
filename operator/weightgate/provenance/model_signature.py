"""Model signatures that OpenSSF model_signing verifies, and verification of its signatures.

``sign_model`` writes what ``model_signing sign key`` writes: a Sigstore bundle v0.3 whose
DSSE envelope holds an in-toto Statement v1 with predicate type
``https://model_signing/signature/v1.0``, one subject (the model directory's name and the root
digest) and a predicate with the serialization parameters and one resource per file.
``verify_model`` checks such a bundle against a public key and the files on disk, with the
same ignore rules the signer recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from weightgate.provenance.bundle import Bundle, bundle_json, read_bundle
from weightgate.provenance.dsse import IN_TOTO_PAYLOAD_TYPE, sign_envelope, verify_envelope
from weightgate.provenance.errors import (
    MalformedPayload,
    ModelMismatch,
    SignatureInvalid,
    UnsupportedSignature,
)
from weightgate.provenance.files import write_file_atomically
from weightgate.provenance.keys import SigningKey, VerifyingKey
from weightgate.provenance.manifest import (
    GIT_PATHS,
    FileDigest,
    ModelManifest,
    hash_model,
    manifest_differences,
    root_digest,
)
from weightgate.provenance.statement import (
    Subject,
    is_sha256_hex,
    parse_statement,
    statement_payload,
)

MODEL_SIGNATURE_TYPE = "https://model_signing/signature/v1.0"
DEFAULT_SIGNATURE_NAME = "model.sig"


def signature_payload(manifest: ModelManifest) -> bytes:
    """The in-toto statement model_signing signs for ``manifest``."""
    resources = [
        {"name": item.path, "algorithm": "sha256", "digest": item.sha256} for item in manifest.files
    ]
    predicate = {"serialization": manifest.serialization(), "resources": resources}
    subject = Subject(manifest.model_name, manifest.root_digest())
    return statement_payload([subject], MODEL_SIGNATURE_TYPE, predicate)


def sign_model(
    model: Path,
    key: SigningKey,
    signature: Path,
    *,
    ignore_paths: Iterable[str] = (),
    ignore_git_paths: bool = True,
    known: Mapping[str, str] | None = None,
    only_known: bool = False,
) -> ModelManifest:
    """Hash ``model``, sign its manifest and write the bundle to ``signature``.

    The signature file itself is left out when it lies inside the model directory. The file
    is written whole (a temporary file renamed into place), never half. ``known`` and
    ``only_known`` are :func:`~weightgate.provenance.manifest.hash_model`'s.

    Raises:
        InputError: The model cannot be read, or the signature cannot be written.
    """
    ignored = _ignore_list(model, signature, ignore_paths, ignore_git_paths)
    manifest = hash_model(model, ignored, known, only_known=only_known)
    envelope = sign_envelope(signature_payload(manifest), key)
    write_file_atomically(signature, bundle_json(Bundle(envelope, key.public.hint)))
    return manifest


def verify_model(
    model: Path,
    signature: Path,
    key: VerifyingKey,
    *,
    ignore_paths: Iterable[str] = (),
    ignore_git_paths: bool = True,
) -> ModelManifest:
    """Check that ``signature`` is ``key``'s and that ``model``'s files are the signed ones.

    Returns:
        The signed manifest.

    Raises:
        MalformedBundle: The signature file is not a bundle.
        UnsupportedSignature: A serialization other than files/sha256.
        SignatureInvalid: Signed by another key, or the signature does not verify.
        MalformedPayload: The signed statement is not a model signature.
        ModelMismatch: Files were added, removed or changed since signing.
        InputError: A file cannot be read.
    """
    bundle = read_bundle(signature)
    if bundle.key_hint is not None and bundle.key_hint != key.hint:
        raise SignatureInvalid(
            f"{signature}: signed by another key (its hint {bundle.key_hint[:16]}..., "
            f"the given key's {key.hint[:16]}...)"
        )
    if bundle.envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise MalformedPayload(f"{signature}: payload type {bundle.envelope.payload_type!r}")
    try:
        payload = verify_envelope(bundle.envelope, key)
    except SignatureInvalid as exc:
        raise SignatureInvalid(f"{signature}: {exc}") from None
    signed = manifest_from_payload(payload, str(signature))
    ignored = _ignore_list(
        model, signature, [*signed.ignore_paths, *ignore_paths], ignore_git_paths
    )
    actual = hash_model(model, ignored)
    differences = manifest_differences(signed, actual)
    if differences:
        raise ModelMismatch(
            f"{model}: {len(differences)} file(s) differ from the signature", differences
        )
    return signed


def manifest_from_payload(payload: bytes, origin: str) -> ModelManifest:
    """The manifest a verified model signature payload describes.

    Raises:
        MalformedPayload: Not a model_signing v1.0 statement, or inconsistent (the root
            digest does not match the resources).
        UnsupportedSignature: Not the files/sha256 serialization.
    """
    statement = parse_statement(payload, MODEL_SIGNATURE_TYPE)
    if len(statement.subjects) != 1:
        raise MalformedPayload(f"{origin}: a model signature has exactly one subject")
    serialization = statement.predicate.get("serialization")
    resources = statement.predicate.get("resources")
    if not isinstance(serialization, dict) or not isinstance(resources, list):
        raise MalformedPayload(f"{origin}: the predicate lacks serialization or resources")
    method, hash_type = serialization.get("method"), serialization.get("hash_type")
    if method != "files" or hash_type != "sha256":
        raise UnsupportedSignature(
            f"{origin}: serialization {method}/{hash_type}; weightgate verifies files/sha256"
        )
    if serialization.get("allow_symlinks") is True:
        raise UnsupportedSignature(f"{origin}: signed with symbolic links allowed")
    ignore = serialization.get("ignore_paths", [])
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise MalformedPayload(f"{origin}: ignore_paths is not a list of paths")
    files = [_resource(item, origin) for item in resources]
    if len({item.path for item in files}) != len(files):
        raise MalformedPayload(f"{origin}: a file is listed twice")
    manifest = ModelManifest(statement.subjects[0].name, tuple(files), tuple(ignore))
    # model_signing derives the root from the resources in the order they are listed.
    if root_digest(item.sha256 for item in files) != statement.subjects[0].sha256:
        raise MalformedPayload(f"{origin}: the root digest does not match the listed files")
    return manifest


def _ignore_list(
    model: Path, signature: Path, extra: Iterable[str], ignore_git_paths: bool
) -> list[str]:
    paths = list(GIT_PATHS) if ignore_git_paths else []
    paths += list(extra)
    inside = _relative_inside(model, signature)
    if inside is not None:
        paths.append(inside)
    return list(dict.fromkeys(paths))


def _relative_inside(model: Path, path: Path) -> str | None:
    try:
        return path.resolve().relative_to(model.resolve()).as_posix()
    except ValueError:
        return None


def _resource(item: Any, origin: str) -> FileDigest:
    if not isinstance(item, dict):
        raise MalformedPayload(f"{origin}: a resource is not an object")
    name, algorithm, digest = item.get("name"), item.get("algorithm"), item.get("digest")
    if not isinstance(name, str) or algorithm != "sha256":
        raise MalformedPayload(f"{origin}: resource {name!r} is not a named sha256 digest")
    if not isinstance(digest, str) or not is_sha256_hex(digest):
        raise MalformedPayload(f"{origin}: resource {name!r} has no valid sha256 digest")
    return FileDigest(name, digest)
