"""in-toto Statements v1: subjects (name + digests), a predicate type and a predicate.

The payload is plain JSON; parsing is strict where a lenient parser would let two readers
disagree about what was signed: duplicate keys, non-UTF-8 bytes and non-object documents are
refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from weightgate.errors import WeightgateError
from weightgate.provenance.errors import MalformedPayload

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


@dataclass(frozen=True)
class Subject:
    """A thing the statement is about: a name and its sha256."""

    name: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """The ResourceDescriptor form."""
        return {"name": self.name, "digest": {"sha256": self.sha256}}


@dataclass(frozen=True)
class Statement:
    """A parsed statement; ``predicate`` stays a JSON mapping for the caller to read."""

    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: Mapping[str, Any]


def statement_payload(
    subjects: Sequence[Subject], predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    """The statement as the JSON bytes a DSSE envelope signs."""
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [subject.to_dict() for subject in subjects],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")


def parse_statement(payload: bytes, predicate_type: str) -> Statement:
    """Read a statement, requiring ``predicate_type``.

    Raises:
        MalformedPayload: Not a Statement v1 of that predicate type.
    """
    document = parse_json_object(payload, "the payload")
    if document.get("_type") != STATEMENT_TYPE:
        raise MalformedPayload(f"the payload is not an in-toto Statement v1 ({STATEMENT_TYPE})")
    if document.get("predicateType") != predicate_type:
        raise MalformedPayload(
            f"predicate type is {document.get('predicateType')!r}, expected {predicate_type!r}"
        )
    raw_subjects = document.get("subject")
    predicate = document.get("predicate")
    if not isinstance(raw_subjects, list) or not isinstance(predicate, dict):
        raise MalformedPayload("the statement needs a subject list and a predicate object")
    subjects = []
    for item in raw_subjects:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise MalformedPayload("every subject needs a name")
        sha256 = descriptor_sha256(item)
        if sha256 is None:
            raise MalformedPayload(f"subject {item['name']!r} has no sha256 digest")
        subjects.append(Subject(item["name"], sha256))
    return Statement(tuple(subjects), predicate_type, predicate)


def parse_json_object(
    data: bytes, what: str, error: type[WeightgateError] = MalformedPayload
) -> dict[str, Any]:
    """A JSON object from UTF-8 bytes, refusing duplicate keys.

    Raises:
        error: Not UTF-8, not JSON, duplicate keys, or not an object (``what`` names it).
    """
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text") from exc
    except ValueError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise error(f"{what} is not a JSON object")
    return document


def descriptor_sha256(descriptor: object) -> str | None:
    """The valid hex sha256 of a ResourceDescriptor (``{"digest": {"sha256": ...}}``), if any."""
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    sha256 = digest.get("sha256") if isinstance(digest, dict) else None
    return sha256 if isinstance(sha256, str) and is_sha256_hex(sha256) else None


def is_sha256_hex(text: str) -> bool:
    """Whether ``text`` is 64 lowercase hex digits."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"duplicate key {key!r}")
        document[key] = value
    return document
