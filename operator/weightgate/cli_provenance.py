"""The command line's side of provenance: ``sign``, ``verify``, ``keys`` and ``records``.

``weightgate sign`` / ``verify`` read and write model_signing signatures; ``keys generate``
makes a P-256 key pair; ``records verify|log|anchor`` work on a record store. The work is
done in :mod:`weightgate.provenance`; this module parses options, reads keys and passwords,
and renders results. What ``scan`` signs and records is in :mod:`.cli_scan_provenance`.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from weightgate.errors import InputError, VerificationFailed
from weightgate.provenance.bundle import read_bundle
from weightgate.provenance.chain import verify_store
from weightgate.provenance.errors import ModelMismatch
from weightgate.provenance.keys import (
    generate_signing_key,
    load_signing_key,
    load_verifying_key,
    write_key_pair,
)
from weightgate.provenance.manifest import GIT_PATHS
from weightgate.provenance.model_signature import DEFAULT_SIGNATURE_NAME, sign_model, verify_model
from weightgate.provenance.record import (
    RecordSummary,
    parse_record,
)
from weightgate.provenance.store import RecordStore

PASSWORD_VARIABLE = "WEIGHTGATE_KEY_PASSWORD"
STORE_VARIABLE = "WEIGHTGATE_RECORD_STORE"
DEFAULT_POLICY_URI = "https://weightgate.dev/policy/cli-defaults"


def add_commands(commands: Any) -> None:
    """Declare sign, verify, keys and records on the CLI's subcommands."""
    sign = commands.add_parser(
        "sign",
        help="sign a model directory (a model_signing-compatible Sigstore bundle)",
        description="Sign every file of MODEL_DIR. `model_signing verify key` verifies the "
        "result; git paths and the signature itself are left out.",
    )
    sign.add_argument("model", type=Path, metavar="MODEL_DIR")
    sign.add_argument("--key", type=Path, required=True, metavar="KEY.pem", help="private key")
    password_option(sign)
    sign.add_argument(
        "--signature",
        type=Path,
        default=Path(DEFAULT_SIGNATURE_NAME),
        metavar="PATH",
        help=f"where to write the signature (default: {DEFAULT_SIGNATURE_NAME})",
    )
    _ignore_options(sign)

    verify = commands.add_parser(
        "verify",
        help="verify a model directory against a signature (weightgate's or model_signing's)",
        description="Check that SIGNATURE was made by KEY over exactly the files of MODEL_DIR.",
    )
    verify.add_argument("model", type=Path, metavar="MODEL_DIR")
    verify.add_argument("--signature", type=Path, required=True, metavar="PATH")
    verify.add_argument("--key", type=Path, required=True, metavar="PUB.pem", help="public key")
    _ignore_options(verify)

    keys = commands.add_parser("keys", help="make signing keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, parser_class=type(keys))
    generate = key_commands.add_parser(
        "generate",
        help="make an ECDSA P-256 key pair (PEM)",
        description="Write a new ECDSA P-256 private key (mode 0600, encrypted when a password "
        f"is given through --key-password-file or ${PASSWORD_VARIABLE}) and its public key. "
        "Existing files are never overwritten.",
    )
    generate.add_argument("--private-key", type=Path, default=Path("weightgate-key.pem"))
    generate.add_argument("--public-key", type=Path, default=Path("weightgate-pub.pem"))
    password_option(generate)

    records = commands.add_parser("records", help="check and read admission records")
    record_commands = records.add_subparsers(
        dest="records_command", required=True, parser_class=type(records)
    )
    check = record_commands.add_parser(
        "verify",
        help="walk every chain and report edited, deleted, reordered or forged records",
        description="Verify every record of STORE against the trusted public keys, the links "
        "of each lineage's chain, and every anchor. Exit 2 on any problem.",
    )
    check.add_argument("store", type=Path, metavar="STORE")
    check.add_argument(
        "--key",
        type=Path,
        action="append",
        required=True,
        metavar="PUB.pem",
        help="a trusted public key; repeatable (for rotated keys)",
    )
    check.add_argument(
        "--anchor",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an anchor kept outside the store (also checked); repeatable",
    )
    check.add_argument("-f", "--format", choices=["text", "json"], default="text")

    log = record_commands.add_parser(
        "log",
        help="who admitted what, and when, in one lineage",
        description="List the records of LINEAGE, oldest first. This reads records without "
        "checking them; `weightgate records verify` does that.",
    )
    log.add_argument("lineage", metavar="LINEAGE", help="e.g. hf://org/name or models:/name")
    _store_option(log)
    log.add_argument("-f", "--format", choices=["text", "json"], default="text")

    anchor = record_commands.add_parser(
        "anchor",
        help="sign a checkpoint of every chain head (run it periodically)",
        description="Write a signed anchor naming each lineage's newest record, so that a "
        "tail cut off later is detected by `records verify`. Keep copies outside the store.",
    )
    anchor.add_argument("store", type=Path, metavar="STORE")
    anchor.add_argument("--key", type=Path, required=True, metavar="KEY.pem")
    password_option(anchor)


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        type=Path,
        default=Path(os.environ[STORE_VARIABLE]) if os.environ.get(STORE_VARIABLE) else None,
        metavar="STORE",
        help=f"the record store (default: ${STORE_VARIABLE})",
    )


def password_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--key-password-file``, for every command that reads a private key."""
    parser.add_argument(
        "--key-password-file",
        type=Path,
        metavar="FILE",
        help=f"the private key's password (default: ${PASSWORD_VARIABLE}; none if unset)",
    )


def _ignore_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ignore-path",
        action="append",
        default=[],
        metavar="PATH",
        help="a file or directory to leave out, relative to MODEL_DIR; repeatable",
    )
    parser.add_argument(
        "--no-ignore-git-paths",
        dest="ignore_git_paths",
        action="store_false",
        help=f"include {', '.join(GIT_PATHS)} (left out by default, as model_signing does)",
    )


# -- commands ---------------------------------------------------------------------------


def command_sign(args: argparse.Namespace, out: TextIO) -> int:
    """``weightgate sign``."""
    key = load_signing_key(args.key, key_password(args))
    manifest = sign_model(
        args.model,
        key,
        args.signature,
        ignore_paths=args.ignore_path,
        ignore_git_paths=args.ignore_git_paths,
    )
    out.write(
        f"signed {len(manifest.files)} files of {args.model} "
        f"(root sha256:{manifest.root_digest()}) -> {args.signature}\n"
    )
    return 0


def command_verify(args: argparse.Namespace, out: TextIO) -> int:
    """``weightgate verify``; a mismatch lists every differing file before failing."""
    key = load_verifying_key(args.key)
    try:
        manifest = verify_model(
            args.model,
            args.signature,
            key,
            ignore_paths=args.ignore_path,
            ignore_git_paths=args.ignore_git_paths,
        )
    except ModelMismatch as exc:
        for line in exc.differences:
            out.write(f"  {line}\n")
        raise
    out.write(
        f"verified: {len(manifest.files)} files of {args.model} match {args.signature} "
        f"(root sha256:{manifest.root_digest()})\n"
    )
    return 0


def command_keys(args: argparse.Namespace, out: TextIO) -> int:
    """``weightgate keys generate``."""
    password = key_password(args)
    write_key_pair(generate_signing_key(), args.private_key, args.public_key, password)
    encrypted = "encrypted" if password else "not encrypted"
    out.write(f"wrote {args.private_key} (private, {encrypted}) and {args.public_key}\n")
    return 0


def command_records(args: argparse.Namespace, out: TextIO) -> int:
    """``weightgate records verify|log|anchor``."""
    if args.records_command == "verify":
        keys = [load_verifying_key(path) for path in args.key]
        report = verify_store(RecordStore(args.store), keys, args.anchor)
        if args.format == "json":
            document = {
                "store": str(args.store),
                "lineages": report.records,
                "anchors": report.anchors,
                "problems": [asdict(problem) for problem in report.problems],
            }
            out.write(json.dumps(document, indent=2) + "\n")
        else:
            for problem in report.problems:
                out.write(f"PROBLEM {problem}\n")
            total = sum(report.records.values())
            verdict = "FAILED" if report.problems else "ok"
            out.write(
                f"{verdict}: {total} records in {len(report.records)} lineages, "
                f"{report.anchors} anchors, {len(report.problems)} problems\n"
            )
        return 2 if report.problems else 0
    if args.records_command == "anchor":
        store = RecordStore(args.store)
        path = store.write_anchor(load_signing_key(args.key, key_password(args)))
        out.write(f"anchored every chain head: {path}\n")
        return 0
    if args.store is None:
        raise InputError(f"records log: give --store or set ${STORE_VARIABLE}")
    summaries = lineage_log(RecordStore(args.store), args.lineage)
    if args.format == "json":
        out.write(json.dumps([_summary_dict(item) for item in summaries], indent=2) + "\n")
    else:
        out.write(render_log(args.lineage, summaries))
    return 0


def lineage_log(store: RecordStore, lineage: str) -> list[RecordSummary]:
    """The records of ``lineage``, oldest first (read, not verified).

    Raises:
        InputError: No such lineage, or a record is missing or unreadable.
    """
    entries = store.entries(lineage)
    if not entries:
        raise InputError(f"{store.root}: no records of lineage {lineage!r}")
    summaries = []
    for entry in entries:
        path = store.record_path(entry.sha256)
        try:
            payload = read_bundle(path, path.name).envelope.payload
            summaries.append(parse_record(payload))
        except VerificationFailed as exc:
            raise InputError(f"{path}: {exc}; run `weightgate records verify`") from exc
    return summaries


def render_log(lineage: str, summaries: list[RecordSummary]) -> str:
    """One block per record: when, what, who, why."""
    lines = [f"lineage {lineage}: {len(summaries)} records (unverified; see records verify)"]
    for item in summaries:
        who = item.requester
        decision = "ADMITTED" if item.allowed else "DENIED"
        lines.append(f"#{item.link.sequence}  {item.time}  {decision}  {item.resource_uri}")
        lines.append(
            f"    by {who.get('kind', '?')} {who.get('name', '?')}"
            + (f" (review {item.admission_uid})" if item.admission_uid else "")
        )
        if item.revision:
            lines.append(f"    revision {item.revision}")
        lines.append(f"    model sha256:{item.root_digest}")
        lines.extend(f"    reason: {reason}" for reason in item.reasons)
    return "\n".join(lines) + "\n"


def _summary_dict(item: RecordSummary) -> dict[str, Any]:
    return {
        "sequence": item.link.sequence,
        "previous": item.link.previous,
        "time": item.time,
        "decision": "admitted" if item.allowed else "denied",
        "reasons": list(item.reasons),
        "requester": dict(item.requester),
        "resourceUri": item.resource_uri,
        "revision": item.revision,
        "rootDigest": item.root_digest,
        "admissionReviewUid": item.admission_uid,
        "policy": dict(item.policy),
    }


def key_password(args: argparse.Namespace) -> bytes | None:
    """The private key's password: --key-password-file, else $WEIGHTGATE_KEY_PASSWORD, else none.

    Raises:
        InputError: The password file cannot be read.
    """
    if args.key_password_file is not None:
        try:
            return args.key_password_file.read_bytes().rstrip(b"\r\n") or None
        except OSError as exc:
            raise InputError(f"{args.key_password_file}: {exc.strerror or exc}") from exc
    value = os.environ.get(PASSWORD_VARIABLE)
    return value.encode("utf-8") if value else None
