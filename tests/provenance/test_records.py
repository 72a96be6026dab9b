"""The record store: chains per lineage, compare-and-swap appends, and tamper detection.

Every tampering case runs ``weightgate records verify`` as a real process and requires exit 2
and a message that says what happened.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_process import run
from tests.provenance.conftest import KeyPair, decision, make_key_pair
from weightgate.provenance.bundle import Bundle, bundle_json
from weightgate.provenance.dsse import sign_envelope
from weightgate.provenance.record import RECORD_TYPE, ChainLink, parse_record, record_payload
from weightgate.provenance.statement import Subject, statement_payload
from weightgate.provenance.store import ANCHOR_TYPE, RecordStore

LINEAGE = "hf://org/model"


def _verify(store: RecordStore, keys: KeyPair, *extra: str) -> subprocess.CompletedProcess[str]:
    result = run("records", "verify", store.root, "--key", keys.public, *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _index(store: RecordStore, lineage: str = LINEAGE) -> Path:
    return store.lineage_directory(lineage) / "index"


def _lines(store: RecordStore) -> list[str]:
    return _index(store).read_text().splitlines(keepends=True)


def test_records_link_each_to_the_previous_payload(store: RecordStore) -> None:
    entries = store.entries(LINEAGE)
    assert [entry.sequence for entry in entries] == [1, 2, 3]
    previous = None
    for entry in entries:
        bundle = json.loads(store.record_path(entry.sha256).read_bytes())
        summary = parse_record(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        assert summary.link == ChainLink(entry.sequence, previous)
        assert summary.lineage == LINEAGE
        assert summary.requester["name"] == "alice@example.com"
        assert summary.admission_uid == "705ab4f5-6393-11e8-b7cc-42010a800002"
        previous = entry.sha256


def test_intact_store_verifies(store: RecordStore, keys: KeyPair) -> None:
    result = _verify(store, keys)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 4 records in 2 lineages" in result.stdout


def test_edited_record_is_detected(store: RecordStore, keys: KeyPair) -> None:
    target = store.record_path(store.entries(LINEAGE)[1].sha256)
    document = json.loads(target.read_bytes())
    payload = base64.b64decode(document["dsseEnvelope"]["payload"])
    edited = payload.replace(b"alice@example.com", b"mallory@example.com")
    document["dsseEnvelope"]["payload"] = base64.b64encode(edited).decode()
    target.write_text(json.dumps(document))
    result = _verify(store, keys)
    assert result.returncode == 2
    assert f"{LINEAGE} record 2: its payload hashes to" in result.stdout
    assert "(edited)" in result.stdout


def test_edit_with_a_matching_index_still_fails_the_signature(
    store: RecordStore, keys: KeyPair
) -> None:
    entry = store.entries(LINEAGE)[1]
    document = json.loads(store.record_path(entry.sha256).read_bytes())
    payload = base64.b64decode(document["dsseEnvelope"]["payload"])
    edited = payload.replace(b'"admitted"', b'"denied"')
    digest = hashlib.sha256(edited).hexdigest()
    document["dsseEnvelope"]["payload"] = base64.b64encode(edited).decode()
    store.record_path(digest).write_text(json.dumps(document))
    store.record_path(entry.sha256).unlink()
    _index(store).write_text(_index(store).read_text().replace(entry.sha256, digest))
    result = _verify(store, keys)
    assert result.returncode == 2
    assert f"{LINEAGE} record 2: its signature does not verify with the trusted key" in (
        result.stdout
    )
    assert f"{LINEAGE} record 3: links to previous record" in result.stdout


def test_deleted_record_file_is_detected(store: RecordStore, keys: KeyPair) -> None:
    store.record_path(store.entries(LINEAGE)[0].sha256).unlink()
    result = _verify(store, keys)
    assert result.returncode == 2
    assert f"{LINEAGE} record 1: " in result.stdout
    assert "missing from records/ (deleted)" in result.stdout


def test_deleted_index_entry_is_detected(store: RecordStore, keys: KeyPair) -> None:
    lines = _lines(store)
    _index(store).write_text(lines[0] + lines[2])
    result = _verify(store, keys)
    assert result.returncode == 2
    assert "records 2..2 are missing from the index (deleted)" in result.stdout
    assert "is in no lineage's index" in result.stdout


def test_reordered_records_are_detected(store: RecordStore, keys: KeyPair) -> None:
    lines = _lines(store)
    _index(store).write_text(lines[0] + lines[2] + lines[1])
    result = _verify(store, keys)
    assert result.returncode == 2
    assert "reorders sequence 2" in result.stdout
    assert f"{LINEAGE} record 3: links to previous record" in result.stdout


def test_record_re_signed_with_another_key_is_detected(
    store: RecordStore, keys: KeyPair, tmp_path: Path
) -> None:
    """A forger with their own key rewrites record 3 with correct links: the key gives it away."""
    mallory = make_key_pair(tmp_path, "mallory")
    entries = store.entries(LINEAGE)
    payload = record_payload(decision(revision="evil"), ChainLink(3, entries[1].sha256))
    digest = hashlib.sha256(payload).hexdigest()
    forged = Bundle(sign_envelope(payload, mallory.key), mallory.key.public.hint)
    store.record_path(digest).write_bytes(bundle_json(forged))
    store.record_path(entries[2].sha256).unlink()
    _index(store).write_text(_index(store).read_text().replace(entries[2].sha256, digest))
    result = _verify(store, keys)
    assert result.returncode == 2
    assert f"{LINEAGE} record 3: signed by an untrusted key" in result.stdout
    assert "forged or re-signed" in result.stdout


def test_tail_truncated_after_an_anchor_is_detected(store: RecordStore, keys: KeyPair) -> None:
    anchored = run("records", "anchor", store.root, "--key", keys.private)
    assert anchored.returncode == 0, anchored.stderr
    assert _verify(store, keys).returncode == 0
    last = store.entries(LINEAGE)[-1]
    _index(store).write_text("".join(_lines(store)[:-1]))
    store.record_path(last.sha256).unlink()
    result = _verify(store, keys)
    assert result.returncode == 2
    assert f"{LINEAGE}: truncated: anchor" in result.stdout
    assert "saw record 3" in result.stdout
    assert "the chain now ends at record 2" in result.stdout


def test_a_deleted_lineage_is_detected_by_the_anchor(store: RecordStore, keys: KeyPair) -> None:
    assert run("records", "anchor", store.root, "--key", keys.private).returncode == 0
    directory = store.lineage_directory("models:/other")
    sha = store.entries("models:/other")[0].sha256
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    store.record_path(sha).unlink()
    result = _verify(store, keys)
    assert result.returncode == 2
    assert "models:/other: lineage deleted: anchor" in result.stdout


def test_anchor_kept_outside_the_store_still_counts(
    store: RecordStore, keys: KeyPair, tmp_path: Path
) -> None:
    anchor = store.write_anchor(keys.key)
    kept = tmp_path / "kept-anchor.json"
    kept.write_bytes(anchor.read_bytes())
    anchor.unlink()  # the attacker removes the anchor in the store...
    _index(store).write_text("".join(_lines(store)[:-1]))
    result = _verify(store, keys, "--anchor", str(kept))
    assert result.returncode == 2  # ...and the copy kept elsewhere still catches the cut
    assert "truncated" in result.stdout


def test_forged_anchor_is_reported(store: RecordStore, keys: KeyPair, tmp_path: Path) -> None:
    store.write_anchor(make_key_pair(tmp_path, "mallory").key)
    result = _verify(store, keys)
    assert result.returncode == 2
    assert "signed by an untrusted key" in result.stdout


def test_rotated_keys_are_all_trusted(store: RecordStore, keys: KeyPair, tmp_path: Path) -> None:
    new = make_key_pair(tmp_path, "new")
    store.append(decision(revision="r4"), new.key)
    assert _verify(store, keys).returncode == 2
    assert _verify(store, keys, "--key", str(new.public)).returncode == 0


def test_json_output_lists_problems(store: RecordStore, keys: KeyPair) -> None:
    store.record_path(store.entries(LINEAGE)[0].sha256).unlink()
    result = _verify(store, keys, "--format", "json")
    document = json.loads(result.stdout)
    assert result.returncode == 2
    assert document["lineages"] == {LINEAGE: 3, "models:/other": 1}
    assert document["problems"][0]["lineage"] == LINEAGE
    assert document["problems"][0]["sequence"] == 1


def test_torn_last_line_is_cut_by_the_next_append(store: RecordStore, keys: KeyPair) -> None:
    with open(_index(store), "ab") as handle:
        handle.write(b'{"sequence": 4, "sha')  # a crash in the middle of an append
    assert [entry.sequence for entry in store.entries(LINEAGE)] == [1, 2, 3]
    assert "incomplete line" in _verify(store, keys).stdout
    stored = store.append(decision(revision="r4"), keys.key)
    assert stored.sequence == 4
    assert _verify(store, keys).returncode == 0


_APPENDER = """
import sys
import time
from pathlib import Path
from tests.provenance.conftest import decision
from weightgate.provenance.keys import load_signing_key
from weightgate.provenance.store import RecordStore

store = RecordStore(Path(sys.argv[1]), create=True)
key = load_signing_key(Path(sys.argv[2]))
go = Path(sys.argv[1]).with_name("go")
while not go.exists():  # both writers start together
    time.sleep(0.001)
for number in range(int(sys.argv[3])):
    store.append(decision(revision=f"{sys.argv[4]}-{number}"), key)
"""


def test_two_processes_appending_at_once_lose_nothing(tmp_path: Path, keys: KeyPair) -> None:
    root = tmp_path / "race"
    count = 150
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(root), str(keys.private), str(count), name],
            cwd=Path(__file__).resolve().parents[2],
        )
        for name in ("a", "b")
    ]
    time.sleep(1.5)  # both have imported and wait at the start line
    (tmp_path / "go").touch()
    assert [writer.wait(timeout=300) for writer in writers] == [0, 0]
    store = RecordStore(root)
    entries = store.entries(LINEAGE)
    assert [entry.sequence for entry in entries] == list(range(1, 2 * count + 1))
    revisions = []
    for entry in entries:
        bundle = json.loads(store.record_path(entry.sha256).read_bytes())
        revisions.append(parse_record(base64.b64decode(bundle["dsseEnvelope"]["payload"])).revision)
    assert set(revisions) == {f"{name}-{n}" for name in "ab" for n in range(count)}
    writers_in_order = [str(revision)[0] for revision in revisions]
    switches = sum(a != b for a, b in itertools.pairwise(writers_in_order))
    assert switches > 1, "the two writers never raced; the test proves nothing"
    result = _verify(store, keys)
    assert result.returncode == 0, result.stdout
    assert f"ok: {2 * count} records in 1 lineages" in result.stdout


def test_records_log_shows_who_admitted_what(store: RecordStore) -> None:
    result = run("records", "log", LINEAGE, "--store", store.root)
    assert result.returncode == 0, result.stderr
    assert "#1" in result.stdout and "#3" in result.stdout
    assert "ADMITTED  hf://org/model@r2" in result.stdout
    assert "by kubernetes alice@example.com (review 705ab4f5" in result.stdout
    denied = run("records", "log", "models:/other", "--store", store.root, "--format", "json")
    document = json.loads(denied.stdout)
    assert document[0]["decision"] == "denied"
    assert document[0]["reasons"] == ["pickle.dangerous-global in x.pkl: os.system"]
    assert document[0]["requester"]["groups"] == ["ml-team"]


def test_records_log_of_an_unknown_lineage_exits_1(store: RecordStore) -> None:
    result = run("records", "log", "hf://nobody/nothing", "--store", store.root)
    assert result.returncode == 1
    assert "no records of lineage 'hf://nobody/nothing'" in result.stderr


def test_records_verify_of_a_directory_that_is_no_store_exits_1(
    tmp_path: Path, keys: KeyPair
) -> None:
    result = run("records", "verify", tmp_path, "--key", keys.public)
    assert result.returncode == 1
    assert "not a record store" in result.stderr


def _replace_record(store: RecordStore, keys: KeyPair, sequence: int, payload: bytes) -> None:
    """Put a validly signed but arbitrary payload where record ``sequence`` is."""
    entry = store.entries(LINEAGE)[sequence - 1]
    digest = hashlib.sha256(payload).hexdigest()
    bundle = Bundle(sign_envelope(payload, keys.key), keys.key.public.hint)
    store.record_path(digest).write_bytes(bundle_json(bundle))
    store.record_path(entry.sha256).unlink()
    _index(store).write_text(_index(store).read_text().replace(entry.sha256, digest))


@pytest.mark.parametrize(
    "predicate",
    [
        {"inputAttestations": [{"digest": "not a mapping"}]},
        {"inputAttestations": "a string"},
        {"https://weightgate.dev/chain/v1": []},
    ],
)
def test_malformed_signed_records_are_reported_not_crashed_on(
    store: RecordStore, keys: KeyPair, predicate: dict[str, object]
) -> None:
    payload = statement_payload([Subject("m", "0" * 64)], RECORD_TYPE, predicate)
    _replace_record(store, keys, 2, payload)
    log = run("records", "log", LINEAGE, "--store", store.root)
    assert log.returncode == 1
    assert "Traceback" not in log.stderr
    assert "run `weightgate records verify`" in log.stderr
    result = _verify(store, keys)
    assert result.returncode == 2
    assert f"{LINEAGE} record 2: signed, but not an admission record" in result.stdout


def test_malformed_anchor_is_reported(store: RecordStore, keys: KeyPair) -> None:
    payload = statement_payload([], ANCHOR_TYPE, {"heads": {"not": "a list"}})
    bundle = Bundle(sign_envelope(payload, keys.key), keys.key.public.hint)
    (store.root / "anchors" / "odd.sigstore.json").write_bytes(bundle_json(bundle))
    result = _verify(store, keys)
    assert result.returncode == 2
    assert "anchor odd.sigstore.json: signed, but lists no heads" in result.stdout


def test_a_lineage_created_but_never_appended_to_is_empty_not_broken(
    store: RecordStore, keys: KeyPair
) -> None:
    directory = store.lineage_directory("hf://org/new")
    directory.mkdir()
    (directory / "lineage").write_text("hf://org/new")
    result = _verify(store, keys)
    assert result.returncode == 0, result.stdout
