"""``records verify``: walk every chain and report what was edited, deleted, reordered or forged.

Each record must be in ``records/`` under the sha256 of its payload (else it was edited or
deleted), be signed by one of the trusted keys (else forged or re-signed), name its own
lineage and sequence, and link to the sha256 of the previous record's payload (else records
were removed, reordered or replaced). Sequence numbers in the index must run 1, 2, 3, ...
(else an entry was deleted or moved). Attachments must still hash to their digests. Every
bundle in ``records/`` must be in some index (else an index entry was cut away). Finally each
signed anchor names heads the chains must still contain: a tail cut off after an anchor shows
even when the index and the records were trimmed together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from weightgate.errors import InputError, VerificationFailed
from weightgate.provenance.bundle import read_bundle
from weightgate.provenance.dsse import Envelope, verify_envelope
from weightgate.provenance.errors import SignatureInvalid, StoreError
from weightgate.provenance.keys import VerifyingKey
from weightgate.provenance.manifest import file_sha256
from weightgate.provenance.record import RecordSummary, parse_record
from weightgate.provenance.statement import is_sha256_hex, parse_statement
from weightgate.provenance.store import (
    ANCHOR_TYPE,
    IndexEntry,
    RecordStore,
    parse_index_line,
    read_lineage_name,
)

Problem = Callable[[str], None]
"""Reports one problem about the record or anchor being checked."""


@dataclass(frozen=True)
class ChainProblem:
    """One thing wrong: which lineage and record (when known), and what."""

    lineage: str
    sequence: int | None
    message: str

    def __str__(self) -> str:
        where = self.lineage + (f" record {self.sequence}" if self.sequence else "")
        return f"{where}: {self.message}"


@dataclass
class ChainReport:
    """The outcome of a walk: records checked per lineage, anchors checked, problems."""

    records: dict[str, int] = field(default_factory=dict)
    anchors: int = 0
    problems: list[ChainProblem] = field(default_factory=list)


def verify_store(
    store: RecordStore, keys: Sequence[VerifyingKey], anchors: Sequence[Path] = ()
) -> ChainReport:
    """Check every chain in ``store`` and every anchor (the store's and ``anchors``).

    Raises:
        InputError: The store cannot be listed at all.
    """
    report = ChainReport()
    indexed: set[str] = set()
    heads: dict[str, list[str]] = {}
    for directory in store.lineage_directories():
        try:
            lineage = read_lineage_name(directory)
        except StoreError as exc:
            report.problems.append(ChainProblem(directory.name, None, str(exc)))
            continue
        digests = _verify_lineage(store, directory, lineage, keys, report)
        indexed.update(digests)
        heads[lineage] = digests
    for path in sorted((store.root / "records").glob("*.sigstore.json")):
        digest = path.name.removesuffix(".sigstore.json")
        if digest not in indexed:
            report.problems.append(
                ChainProblem(
                    "records/",
                    None,
                    f"{path.name} is in no lineage's index "
                    "(its index entry was removed, or an append was interrupted)",
                )
            )
    anchor_dir = store.root / "anchors"
    stored = sorted(anchor_dir.glob("*.sigstore.json")) if anchor_dir.is_dir() else []
    for path in [*stored, *anchors]:
        _verify_anchor(path, keys, heads, report)
    return report


def _verify_lineage(
    store: RecordStore,
    directory: Path,
    lineage: str,
    keys: Sequence[VerifyingKey],
    report: ChainReport,
) -> list[str]:
    """Check one chain; returns the payload digests of its index, in order."""
    problems = report.problems
    index = directory / "index"
    try:
        data = index.read_bytes()
    except FileNotFoundError:
        data = b""  # created, never appended to (a deleted index leaves its records orphaned)
    except OSError as exc:
        problems.append(ChainProblem(lineage, None, f"index unreadable: {exc.strerror or exc}"))
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    else:
        problems.append(ChainProblem(lineage, None, "the index ends in an incomplete line"))
    digests: list[str] = []
    previous: str | None = None
    expected = 1
    for number, line in enumerate(lines, start=1):
        entry = parse_index_line(line)
        if entry is None:
            problems.append(ChainProblem(lineage, None, f"index line {number} is not an entry"))
            continue
        digests.append(entry.sha256)
        if entry.sequence != expected:
            what = (
                f"records {expected}..{entry.sequence - 1} are missing from the index (deleted)"
                if entry.sequence > expected
                else f"index line {number} repeats or reorders sequence {entry.sequence}"
            )
            problems.append(ChainProblem(lineage, entry.sequence, what))
        expected = entry.sequence + 1
        summary = _verify_record(store, lineage, entry, keys, problems)
        if summary is not None:
            link = summary.link.previous
            if entry.sequence > 1 and link != previous:
                problems.append(
                    ChainProblem(
                        lineage,
                        entry.sequence,
                        f"links to previous record {_short(link)}, but the record before it "
                        f"in the index is {_short(previous)} (records deleted, reordered or "
                        "replaced)",
                    )
                )
        previous = entry.sha256
    report.records[lineage] = len(digests)
    return digests


def _verify_record(
    store: RecordStore,
    lineage: str,
    entry: IndexEntry,
    keys: Sequence[VerifyingKey],
    problems: list[ChainProblem],
) -> RecordSummary | None:
    sequence, sha256 = entry.sequence, entry.sha256
    path = store.record_path(sha256)

    def problem(message: str) -> None:
        problems.append(ChainProblem(lineage, sequence, message))

    if not path.exists():
        problem(f"{path.name} is missing from records/ (deleted)")
        return None
    try:
        bundle = read_bundle(path, path.name)
    except InputError as exc:
        problem(f"unreadable (edited?): {exc}")
        return None
    payload = bundle.envelope.payload
    actual = hashlib.sha256(payload).hexdigest()
    if actual != sha256:
        problem(f"its payload hashes to {_short(actual)}, not {_short(sha256)} (edited)")
        return None
    if not _signed_by_trusted_key(bundle.envelope, bundle.key_hint, keys, problem):
        return None
    try:
        summary = parse_record(payload)
    except VerificationFailed as exc:
        problem(f"signed, but not an admission record: {exc}")
        return None
    if summary.lineage != lineage:
        problem(f"belongs to lineage {summary.lineage!r} (moved from another chain)")
    if summary.link.sequence != sequence:
        problem(f"says it is record {summary.link.sequence} (reordered)")
    for name, digest in summary.attachments:
        _check_attachment(store, name, digest, problem)
    return summary


def _signed_by_trusted_key(
    envelope: Envelope, hint: str | None, keys: Sequence[VerifyingKey], report: Problem
) -> bool:
    for key in keys:
        try:
            verify_envelope(envelope, key)
            return True
        except SignatureInvalid:
            continue
    if hint is not None and hint not in {key.hint for key in keys}:
        report(f"signed by an untrusted key (hint {hint[:16]}...): forged or re-signed")
    else:
        report("its signature does not verify with the trusted key (edited)")
    return False


def _check_attachment(store: RecordStore, name: str, digest: str, problem: Problem) -> None:
    path = store.attachment_path(digest)
    if not path.exists():
        problem(f"attachment {name or digest[:16]} ({_short(digest)}) is missing")
    elif file_sha256(path) != digest:
        problem(f"attachment {name or digest[:16]} no longer hashes to {_short(digest)} (edited)")


def _verify_anchor(
    path: Path,
    keys: Sequence[VerifyingKey],
    heads: dict[str, list[str]],
    report: ChainReport,
) -> None:
    label = f"anchor {path.name}"

    def problem(message: str) -> None:
        report.problems.append(ChainProblem(label, None, message))

    try:
        bundle = read_bundle(path, path.name)
    except InputError as exc:
        problem(f"unreadable: {exc}")
        return
    if not _signed_by_trusted_key(bundle.envelope, bundle.key_hint, keys, problem):
        return
    try:
        predicate = parse_statement(bundle.envelope.payload, ANCHOR_TYPE).predicate
    except VerificationFailed as exc:
        problem(f"signed, but not an anchor: {exc}")
        return
    report.anchors += 1
    time = predicate.get("time", "?")
    heads_seen = predicate.get("heads")
    if not isinstance(heads_seen, list):
        problem("signed, but lists no heads")
        return
    for head in heads_seen:
        if not isinstance(head, dict):
            problem("a head that is not an object")
            continue
        lineage, sequence, digest = head.get("lineage"), head.get("sequence"), head.get("sha256")
        if (
            not isinstance(sequence, int)
            or not isinstance(digest, str)
            or not is_sha256_hex(digest)
        ):
            problem("a head without a sequence and sha256")
            continue
        chain = heads.get(str(lineage))
        if chain is None:
            report.problems.append(
                ChainProblem(
                    str(lineage), None, f"lineage deleted: {label} ({time}) saw record {sequence}"
                )
            )
        elif len(chain) < sequence:
            report.problems.append(
                ChainProblem(
                    str(lineage),
                    None,
                    f"truncated: {label} ({time}) saw record {sequence} ({_short(digest)}), "
                    f"the chain now ends at record {len(chain)}",
                )
            )
        elif chain[sequence - 1] != digest:
            report.problems.append(
                ChainProblem(
                    str(lineage),
                    sequence,
                    f"rewritten: {label} ({time}) saw {_short(digest)} here, the index has "
                    f"{_short(chain[sequence - 1])}",
                )
            )


def _short(digest: str | None) -> str:
    return "nothing" if digest is None else f"sha256:{digest[:16]}..."
