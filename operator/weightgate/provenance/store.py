"""The record store: signed admission records, one hash chain per lineage, signed anchors.

Layout (every file is written whole, then renamed into place or appended in one write)::

    STORE/records/<sha256 of DSSE payload>.sigstore.json   one Sigstore bundle per record
    STORE/attachments/<sha256>                             reports the records name by digest
    STORE/lineages/<slug>-<hash>/lineage                   the lineage's name
    STORE/lineages/<slug>-<hash>/index                     JSON lines {"sequence", "sha256"}
    STORE/anchors/<time>-<sha256 prefix>.sigstore.json     signed checkpoints of every head

Appending is a compare-and-swap on the chain head. The writer reads the head, builds and
signs the record that links to it, then takes the index's lock and appends only if the head
is still the one it linked to; otherwise it rebuilds against the new head. Signing happens
outside the lock, and two processes racing on one lineage both land, one after the other,
with no record lost and no fork. The lock is ``flock(2)`` on the index file.

An index line is written with one ``write(2)`` and fsync'ed; a crash can leave at most a
torn last line, which the next append (under the lock) cuts off before it writes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from weightgate.provenance.bundle import Bundle, bundle_json
from weightgate.provenance.dsse import sign_envelope
from weightgate.provenance.errors import StoreError
from weightgate.provenance.files import read_limited, write_file_atomically
from weightgate.provenance.keys import SigningKey
from weightgate.provenance.record import ChainLink, GateDecision, record_payload
from weightgate.provenance.statement import Subject, is_sha256_hex, statement_payload

ANCHOR_TYPE = "https://weightgate.dev/checkpoint/v1"
MAX_APPEND_ATTEMPTS = 1000
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class IndexEntry:
    """One line of a lineage's index."""

    sequence: int
    sha256: str

    def line(self) -> bytes:
        """The line as stored, newline included."""
        return json.dumps({"sequence": self.sequence, "sha256": self.sha256}).encode() + b"\n"


@dataclass(frozen=True)
class StoredRecord:
    """Where an appended record landed."""

    lineage: str
    sequence: int
    sha256: str
    path: Path


class RecordStore:
    """A directory of records; see the module docstring for its layout."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = root
        if create:
            for name in ("records", "attachments", "lineages", "anchors"):
                try:
                    (root / name).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"{root / name}: {exc.strerror or exc}") from exc
        elif not (root / "lineages").is_dir():
            raise StoreError(f"{root}: not a record store (no lineages/ directory)")

    # -- reading ------------------------------------------------------------------------

    def lineage_directories(self) -> list[Path]:
        """Every lineage's directory, sorted."""
        return sorted(path for path in (self.root / "lineages").iterdir() if path.is_dir())

    def lineage_directory(self, lineage: str) -> Path:
        """The directory of ``lineage`` (which may not exist yet)."""
        slug = _SLUG.sub("_", lineage).strip("._")[:64] or "lineage"
        digest = hashlib.sha256(lineage.encode("utf-8")).hexdigest()[:16]
        return self.root / "lineages" / f"{slug}-{digest}"

    def record_path(self, sha256: str) -> Path:
        """The bundle of the record whose payload has this sha256."""
        return self.root / "records" / f"{sha256}.sigstore.json"

    def attachment_path(self, sha256: str) -> Path:
        """An attachment by digest."""
        return self.root / "attachments" / sha256

    def entries(self, lineage: str) -> list[IndexEntry]:
        """The index of ``lineage`` (empty when it has no record).

        Raises:
            StoreError: The index is damaged (``records verify`` says where).
        """
        index = self.lineage_directory(lineage) / "index"
        try:
            data = index.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"{index}: {exc.strerror or exc}") from exc
        # Complete lines only: a line being appended right now is not part of the chain yet.
        return _parse_index(data[: data.rfind(b"\n") + 1], index)

    def head(self, lineage: str) -> IndexEntry | None:
        """The newest entry of ``lineage``."""
        entries = self.entries(lineage)
        return entries[-1] if entries else None

    # -- writing ------------------------------------------------------------------------

    def append(self, decision: GateDecision, key: SigningKey) -> StoredRecord:
        """Sign ``decision`` as the next record of its lineage and append it.

        Raises:
            StoreError: The store cannot be written, its index is damaged, or the head
                moved on every one of many attempts.
        """
        for attachment in decision.attachments:
            path = self.attachment_path(attachment.sha256)
            if not path.exists():
                write_file_atomically(path, attachment.data)
        directory = self.lineage_directory(decision.lineage)
        self._create_lineage(directory, decision.lineage)
        for _ in range(MAX_APPEND_ATTEMPTS):
            head = self.head(decision.lineage)
            link = ChainLink(head.sequence + 1 if head else 1, head.sha256 if head else None)
            payload = record_payload(decision, link)
            entry = IndexEntry(link.sequence, hashlib.sha256(payload).hexdigest())
            bundle = bundle_json(Bundle(sign_envelope(payload, key), key.public.hint))
            if self._append_if_head(directory, head, entry, bundle):
                return StoredRecord(
                    decision.lineage, entry.sequence, entry.sha256, self.record_path(entry.sha256)
                )
        raise StoreError(
            f"lineage {decision.lineage}: the chain head moved on each of "
            f"{MAX_APPEND_ATTEMPTS} attempts to append"
        )

    def write_anchor(self, key: SigningKey, now: datetime | None = None) -> Path:
        """Sign a checkpoint of every lineage's head, so a cut-off tail shows.

        Raises:
            StoreError: An index is damaged or the anchor cannot be written.
        """
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        heads: list[tuple[str, IndexEntry]] = []
        for directory in self.lineage_directories():
            lineage = read_lineage_name(directory)
            head = self.head(lineage)
            if head is not None:
                heads.append((lineage, head))
        subjects = [Subject(lineage, head.sha256) for lineage, head in heads]
        predicate = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "heads": [
                {"lineage": lineage, "sequence": head.sequence, "sha256": head.sha256}
                for lineage, head in heads
            ],
        }
        payload = statement_payload(subjects, ANCHOR_TYPE, predicate)
        bundle = bundle_json(Bundle(sign_envelope(payload, key), key.public.hint))
        name = f"{moment.strftime('%Y%m%dT%H%M%S%fZ')}-{hashlib.sha256(payload).hexdigest()[:16]}"
        path = self.root / "anchors" / f"{name}.sigstore.json"
        (self.root / "anchors").mkdir(exist_ok=True)
        write_file_atomically(path, bundle)
        return path

    def _create_lineage(self, directory: Path, lineage: str) -> None:
        name_file = directory / "lineage"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not name_file.exists():
                write_file_atomically(name_file, lineage.encode("utf-8"))
        except OSError as exc:
            raise StoreError(f"{directory}: {exc.strerror or exc}") from exc
        if read_lineage_name(directory) != lineage:
            raise StoreError(f"{directory}: belongs to another lineage (a hash collision?)")

    def _append_if_head(
        self, directory: Path, expected: IndexEntry | None, entry: IndexEntry, bundle: bytes
    ) -> bool:
        index = directory / "index"
        with _locked_index(index) as descriptor:
            data = _read_all(descriptor)
            complete = data[: data.rfind(b"\n") + 1]
            entries = _parse_index(complete, index)
            if (entries[-1] if entries else None) != expected:
                return False  # another writer appended first: rebuild against its record
            write_file_atomically(self.record_path(entry.sha256), bundle)
            try:
                if len(complete) != len(data):
                    os.ftruncate(descriptor, len(complete))  # a torn line from a crash
                os.write(descriptor, entry.line())
                os.fsync(descriptor)
            except OSError as exc:
                raise StoreError(f"{index}: {exc.strerror or exc}") from exc
        return True


def read_lineage_name(directory: Path) -> str:
    """The lineage a directory under ``lineages/`` belongs to.

    Raises:
        StoreError: The name file is missing or unreadable.
    """
    try:
        return read_limited(directory / "lineage", 64 * 1024, StoreError, "a lineage name").decode()
    except UnicodeDecodeError as exc:
        raise StoreError(f"{directory}: the lineage name is not UTF-8") from exc


def parse_index_line(line: bytes) -> IndexEntry | None:
    """One index line, or None when it is not a valid entry."""
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict) or set(document) != {"sequence", "sha256"}:
        return None
    sequence, sha256 = document["sequence"], document["sha256"]
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        return None
    if not isinstance(sha256, str) or not is_sha256_hex(sha256):
        return None
    return IndexEntry(sequence, sha256)


def _parse_index(data: bytes, index: Path) -> list[IndexEntry]:
    entries: list[IndexEntry] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        entry = parse_index_line(line)
        expected = len(entries) + 1
        if entry is None or entry.sequence != expected:
            raise StoreError(
                f"{index}: line {number} is not entry {expected}; "
                "run `weightgate records verify` on the store"
            )
        entries.append(entry)
    return entries


@contextmanager
def _locked_index(index: Path) -> Iterator[int]:
    try:
        descriptor = os.open(index, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise StoreError(f"{index}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield descriptor
    finally:
        os.close(descriptor)  # closing releases the lock


def _read_all(descriptor: int) -> bytes:
    os.lseek(descriptor, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(descriptor, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
