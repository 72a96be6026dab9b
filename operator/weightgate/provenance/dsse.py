"""DSSE envelopes (secure-systems-lab/dsse v1.0.0): sign and verify a typed payload.

The signature covers the Pre-Authentication Encoding (PAE) of the payload type and the
payload, never the JSON around them, so a verifier needs no canonical JSON.
"""

from __future__ import annotations

from dataclasses import dataclass

from weightgate.provenance.errors import SignatureInvalid
from weightgate.provenance.keys import SigningKey, VerifyingKey

IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body``, lengths in bytes, in ASCII decimal."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class EnvelopeSignature:
    """One signature of an envelope: DER ECDSA bytes and an optional key id."""

    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    """A payload, its type, and the signatures over their PAE."""

    payload: bytes
    payload_type: str
    signatures: tuple[EnvelopeSignature, ...]


def sign_envelope(
    payload: bytes, key: SigningKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> Envelope:
    """An envelope holding one signature of ``payload`` by ``key``."""
    signature = EnvelopeSignature(key.sign(pae(payload_type, payload)))
    return Envelope(payload, payload_type, (signature,))


def verify_envelope(envelope: Envelope, key: VerifyingKey) -> bytes:
    """The payload, if any of the envelope's signatures is ``key``'s over it.

    Raises:
        SignatureInvalid: No signature verifies with ``key``.
    """
    message = pae(envelope.payload_type, envelope.payload)
    if any(key.verifies(signature.sig, message) for signature in envelope.signatures):
        return envelope.payload
    raise SignatureInvalid("the DSSE signature does not verify with the given public key")
