"""Sigstore bundles v0.3 holding a DSSE envelope, signed with a key (no certificate, no log).

This is the file model_signing writes for ``sign key`` and cosign reads with ``--bundle``:
``verificationMaterial.publicKey.hint`` names the key, ``tlogEntries`` is empty. Written with
the same member order and compact JSON as model_signing; read strictly (duplicate keys,
wrong types and unknown media types are refused) and with a size bound.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightgate.provenance.dsse import Envelope, EnvelopeSignature
from weightgate.provenance.errors import MalformedBundle
from weightgate.provenance.files import read_limited
from weightgate.provenance.statement import parse_json_object

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
"""A manifest of 100k files is about 20 MB once base64-encoded; anything far bigger is not a
signature this tool wrote or would trust."""


@dataclass(frozen=True)
class Bundle:
    """An envelope and the hint naming the key that signed it (None when absent)."""

    envelope: Envelope
    key_hint: str | None


def bundle_json(bundle: Bundle) -> bytes:
    """The bundle as model_signing writes it."""
    public_key = {} if bundle.key_hint is None else {"hint": bundle.key_hint}
    document = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": public_key, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": _b64(bundle.envelope.payload),
            "payloadType": bundle.envelope.payload_type,
            "signatures": [
                {"sig": _b64(signature.sig), "keyid": signature.keyid}
                for signature in bundle.envelope.signatures
            ],
        },
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def read_bundle(path: Path, origin: str | None = None) -> Bundle:
    """Read a bundle file (``origin`` names it in errors; default: the path).

    Raises:
        MalformedBundle: Unreadable, too big, or not such a bundle.
    """
    data = read_limited(path, MAX_BUNDLE_BYTES, MalformedBundle, "a Sigstore bundle")
    return parse_bundle(data, origin or str(path))


def parse_bundle(data: bytes, origin: str) -> Bundle:
    """Read a bundle written by weightgate, model_signing or cosign (key-signed DSSE).

    Raises:
        MalformedBundle: Not such a bundle; the message names ``origin`` and what is wrong.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise MalformedBundle(f"{origin}: larger than {MAX_BUNDLE_BYTES} bytes")
    document = parse_json_object(data, origin, MalformedBundle)
    media_type = document.get("mediaType")
    if media_type != BUNDLE_MEDIA_TYPE:
        raise MalformedBundle(
            f"{origin}: media type {media_type!r}; expected a Sigstore bundle ({BUNDLE_MEDIA_TYPE})"
        )
    material = _member(document, "verificationMaterial", dict, origin)
    key_hint = None
    if "publicKey" in material:
        hint = _member(material, "publicKey", dict, origin).get("hint")
        if hint is not None and not isinstance(hint, str):
            raise MalformedBundle(f"{origin}: verificationMaterial.publicKey.hint is not a string")
        key_hint = hint or None
    else:
        raise MalformedBundle(
            f"{origin}: signed with a certificate or Sigstore identity, not a key; "
            "weightgate verifies key-signed bundles"
        )
    raw = _member(document, "dsseEnvelope", dict, origin)
    payload_type = _member(raw, "payloadType", str, origin)
    payload = _unb64(_member(raw, "payload", str, origin), "dsseEnvelope.payload", origin)
    signatures = []
    for item in _member(raw, "signatures", list, origin):
        if not isinstance(item, dict) or not isinstance(item.get("sig"), str):
            raise MalformedBundle(f"{origin}: a DSSE signature without a 'sig' string")
        keyid = item.get("keyid", "")
        if not isinstance(keyid, str):
            raise MalformedBundle(f"{origin}: a DSSE signature's keyid is not a string")
        signatures.append(EnvelopeSignature(_unb64(item["sig"], "signature", origin), keyid))
    if not signatures:
        raise MalformedBundle(f"{origin}: the DSSE envelope has no signature")
    return Bundle(Envelope(payload, payload_type, tuple(signatures)), key_hint)


def _member(document: dict[str, Any], name: str, kind: type, origin: str) -> Any:
    value = document.get(name)
    if not isinstance(value, kind):
        raise MalformedBundle(f"{origin}: '{name}' is missing or not a JSON {kind.__name__}")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str, origin: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedBundle(f"{origin}: {what} is not valid base64") from exc
