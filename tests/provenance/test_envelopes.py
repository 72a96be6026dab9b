"""DSSE, in-toto statements and Sigstore bundles: encodings and strict reading."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from weightgate.provenance.bundle import Bundle, bundle_json, parse_bundle
from weightgate.provenance.dsse import pae, sign_envelope, verify_envelope
from weightgate.provenance.errors import MalformedBundle, MalformedPayload, SignatureInvalid
from weightgate.provenance.keys import generate_signing_key
from weightgate.provenance.statement import Subject, parse_statement, statement_payload


def test_pae_matches_the_dsse_specification_example() -> None:
    # protocol.md of secure-systems-lab/dsse v1.0.0
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 " + "é".encode()


def test_envelope_verifies_only_with_its_key_and_payload() -> None:
    key, other = generate_signing_key(), generate_signing_key()
    envelope = sign_envelope(b"{}", key)
    assert verify_envelope(envelope, key.public) == b"{}"
    with pytest.raises(SignatureInvalid):
        verify_envelope(envelope, other.public)
    forged = type(envelope)(b'{"a":1}', envelope.payload_type, envelope.signatures)
    with pytest.raises(SignatureInvalid):
        verify_envelope(forged, key.public)


def test_bundle_round_trips_in_model_signing_layout() -> None:
    key = generate_signing_key()
    bundle = Bundle(sign_envelope(b'{"x": 1}', key), key.public.hint)
    data = bundle_json(bundle)
    document = json.loads(data)
    assert list(document) == ["mediaType", "verificationMaterial", "dsseEnvelope"]
    assert document["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert document["verificationMaterial"] == {
        "publicKey": {"hint": key.public.hint},
        "tlogEntries": [],
    }
    assert base64.b64decode(document["dsseEnvelope"]["payload"]) == b'{"x": 1}'
    assert parse_bundle(data, "b.json") == bundle


def _bundle_document() -> dict[str, Any]:
    key = generate_signing_key()
    return json.loads(bundle_json(Bundle(sign_envelope(b"{}", key), key.public.hint)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(mediaType="application/json"), "media type"),
        (lambda d: d.pop("dsseEnvelope"), "'dsseEnvelope' is missing"),
        (lambda d: d["dsseEnvelope"].update(payload="***"), "not valid base64"),
        (lambda d: d["dsseEnvelope"].update(signatures=[]), "no signature"),
        (lambda d: d["dsseEnvelope"].update(signatures=[{"keyid": ""}]), "without a 'sig'"),
        (
            lambda d: d["verificationMaterial"].update(publicKey=None),
            "'publicKey' is missing or not a JSON dict",
        ),
        (
            lambda d: d.update(verificationMaterial={"certificate": {"rawBytes": ""}}),
            "signed with a certificate",
        ),
    ],
)
def test_malformed_bundles_are_refused_with_the_reason(
    change: Callable[[dict[str, Any]], object], message: str
) -> None:
    document = _bundle_document()
    change(document)
    with pytest.raises(MalformedBundle, match=message):
        parse_bundle(json.dumps(document).encode(), "sig.json")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"mediaType": 1, "mediaType": 2}', "duplicate key"),
        (b"{", "not valid JSON"),
    ],
)
def test_bundle_json_is_read_strictly(data: bytes, message: str) -> None:
    with pytest.raises(MalformedBundle, match=message):
        parse_bundle(data, "sig.json")


def test_statement_round_trip_and_type_check() -> None:
    payload = statement_payload([Subject("m", "a" * 64)], "https://example/p", {"k": 1})
    statement = parse_statement(payload, "https://example/p")
    assert statement.subjects == (Subject("m", "a" * 64),)
    assert statement.predicate == {"k": 1}
    with pytest.raises(MalformedPayload, match="predicate type"):
        parse_statement(payload, "https://example/other")


def test_statement_subjects_need_sha256() -> None:
    payload = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "m", "digest": {"sha512": "00"}}],
            "predicateType": "p",
            "predicate": {},
        }
    ).encode()
    with pytest.raises(MalformedPayload, match="no sha256"):
        parse_statement(payload, "p")
