"""Admission records: a SLSA verification summary of one gate decision, chained per lineage.

The payload is an in-toto Statement v1 with predicate type
``https://slsa.dev/verification_summary/v1``. Its subjects are every file's sha256 and the
model_signing root digest (named by the model's reference), so ``cosign
verify-blob-attestation`` matches a record to any one model file. The standard VSA fields
carry the verifier, the time, the model reference, the policy and its digest, the scan and
harness reports (``inputAttestations``, by digest) and the result. weightgate's own fields
are URI-named extension members of the predicate:

* ``https://weightgate.dev/requester/v1``: who asked (Kubernetes userInfo, a CI identity, or
  a local user);
* ``https://weightgate.dev/admission/v1``: the decision, its reasons, the AdmissionReview uid;
* ``https://weightgate.dev/model/v1``: lineage, revision, root digest and file count;
* ``https://weightgate.dev/chain/v1``: the sequence number in the lineage and the sha256 of
  the previous record's DSSE payload (``sha256sum`` of the base64-decoded payload).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from weightgate.provenance.errors import MalformedPayload
from weightgate.provenance.manifest import ModelManifest
from weightgate.provenance.statement import (
    Subject,
    descriptor_sha256,
    is_sha256_hex,
    parse_statement,
    statement_payload,
)
from weightgate.version import __version__

RECORD_TYPE = "https://slsa.dev/verification_summary/v1"
VERIFIER_ID = "https://weightgate.dev/verifier"
REQUESTER_FIELD = "https://weightgate.dev/requester/v1"
ADMISSION_FIELD = "https://weightgate.dev/admission/v1"
MODEL_FIELD = "https://weightgate.dev/model/v1"
CHAIN_FIELD = "https://weightgate.dev/chain/v1"
PASSED_LEVEL = "WEIGHTGATE_GATE_PASSED"
"""A custom verified level (the VSA allows any not starting with ``SLSA_``)."""


@dataclass(frozen=True)
class Requester:
    """Who asked for the decision.

    Attributes:
        kind: ``kubernetes`` (an AdmissionReview's userInfo), ``ci`` or ``user``.
        name: The user name, CI actor or login.
        details: Further identity fields (uid, groups, CI run URL, ...), JSON values.
    """

    kind: str
    name: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_user_info(cls, user_info: Mapping[str, Any]) -> Requester:
        """From an AdmissionReview's ``request.userInfo``."""
        details = {key: user_info[key] for key in ("uid", "groups", "extra") if key in user_info}
        return cls("kubernetes", str(user_info.get("username", "")), details)

    def to_dict(self) -> dict[str, Any]:
        """The extension field's value."""
        return {"kind": self.kind, "name": self.name, **self.details}


@dataclass(frozen=True)
class Attachment:
    """A report attached to a record by digest (scan report, harness report)."""

    name: str
    media_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        """Hex sha256 of the data."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class PolicyReference:
    """The policy the decision applied: where it came from and the sha256 of its bytes."""

    uri: str
    sha256: str


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided about one revision of a model, before it is chained and signed."""

    lineage: str
    resource_uri: str
    manifest: ModelManifest
    allowed: bool
    reasons: tuple[str, ...]
    requester: Requester
    policy: PolicyReference
    revision: str | None = None
    attachments: tuple[Attachment, ...] = ()
    admission_uid: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class ChainLink:
    """A record's place in its lineage: its sequence number and its predecessor's digest."""

    sequence: int
    previous: str | None


@dataclass(frozen=True)
class RecordSummary:
    """What ``records log`` shows and ``records verify`` checks, read from a payload."""

    lineage: str
    link: ChainLink
    time: str
    allowed: bool
    reasons: tuple[str, ...]
    requester: Mapping[str, Any]
    resource_uri: str
    revision: str | None
    root_digest: str
    admission_uid: str | None
    policy: Mapping[str, Any]
    attachments: tuple[tuple[str, str], ...]
    """(name, sha256) of each input attestation."""


def record_payload(decision: GateDecision, link: ChainLink) -> bytes:
    """The statement bytes to sign for ``decision`` at ``link``."""
    manifest = decision.manifest
    root = manifest.root_digest()
    subjects = [Subject(item.path, item.sha256) for item in manifest.files]
    subjects.append(Subject(decision.resource_uri, root))
    previous = (
        None if link.previous is None else {"sha256": link.previous, "sequence": link.sequence - 1}
    )
    predicate = {
        "verifier": {"id": VERIFIER_ID, "version": {"weightgate": __version__}},
        "timeVerified": _timestamp(decision.time),
        "resourceUri": decision.resource_uri,
        "policy": {"uri": decision.policy.uri, "digest": {"sha256": decision.policy.sha256}},
        "inputAttestations": [
            {"name": item.name, "mediaType": item.media_type, "digest": {"sha256": item.sha256}}
            for item in decision.attachments
        ],
        "verificationResult": "PASSED" if decision.allowed else "FAILED",
        "verifiedLevels": [PASSED_LEVEL] if decision.allowed else ["FAILED"],
        REQUESTER_FIELD: decision.requester.to_dict(),
        ADMISSION_FIELD: {
            "decision": "admitted" if decision.allowed else "denied",
            "reasons": list(decision.reasons),
            "reviewUid": decision.admission_uid,
        },
        MODEL_FIELD: {
            "lineage": decision.lineage,
            "revision": decision.revision,
            "name": manifest.model_name,
            "rootDigest": root,
            "files": len(manifest.files),
        },
        CHAIN_FIELD: {"lineage": decision.lineage, "sequence": link.sequence, "previous": previous},
    }
    return statement_payload(subjects, RECORD_TYPE, predicate)


def parse_record(payload: bytes) -> RecordSummary:
    """Read a record's payload (already verified or not: this only parses).

    Raises:
        MalformedPayload: Not an admission record as :func:`record_payload` writes them.
    """
    predicate = parse_statement(payload, RECORD_TYPE).predicate
    chain = _object(predicate, CHAIN_FIELD)
    admission = _object(predicate, ADMISSION_FIELD)
    model = _object(predicate, MODEL_FIELD)
    sequence = chain.get("sequence")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        raise MalformedPayload("the chain sequence is not a positive integer")
    previous = chain.get("previous")
    previous_digest = None
    if previous is not None:
        digest = previous.get("sha256") if isinstance(previous, dict) else None
        if not isinstance(digest, str) or not is_sha256_hex(digest):
            raise MalformedPayload("the previous-record link has no sha256")
        previous_digest = digest
    if (previous_digest is None) != (sequence == 1):
        raise MalformedPayload("only the first record of a lineage may lack a previous link")
    lineage = chain.get("lineage")
    decision = admission.get("decision")
    reasons = admission.get("reasons")
    if not isinstance(lineage, str) or decision not in ("admitted", "denied"):
        raise MalformedPayload("the record lacks its lineage or decision")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise MalformedPayload("the decision's reasons are not a list of strings")
    attachments = []
    inputs = predicate.get("inputAttestations", [])
    if not isinstance(inputs, list):
        raise MalformedPayload("inputAttestations is not a list")
    for item in inputs:
        digest = descriptor_sha256(item)
        if digest is None:
            raise MalformedPayload("an input attestation has no sha256 digest")
        attachments.append((str(item.get("name", "")), digest))
    return RecordSummary(
        lineage=lineage,
        link=ChainLink(sequence, previous_digest),
        time=str(predicate.get("timeVerified", "")),
        allowed=decision == "admitted",
        reasons=tuple(reasons),
        requester=_object(predicate, REQUESTER_FIELD),
        resource_uri=str(predicate.get("resourceUri", "")),
        revision=model.get("revision") if isinstance(model.get("revision"), str) else None,
        root_digest=str(model.get("rootDigest", "")),
        admission_uid=admission.get("reviewUid")
        if isinstance(admission.get("reviewUid"), str)
        else None,
        policy=_object(predicate, "policy"),
        attachments=tuple(attachments),
    )


def _object(predicate: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = predicate.get(name)
    if not isinstance(value, dict):
        raise MalformedPayload(f"the predicate lacks {name}")
    return value


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
