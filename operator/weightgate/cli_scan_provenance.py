"""What ``scan`` signs and records: ``--signature``, ``--record-store`` and their options.

A passing scan can sign the model directory with the digests the scan computed (so the
signature covers exactly the bytes that were scanned), and every decision, pass or fail, can
be appended to a record store as a signed admission record: the scanned files, the verdict
and its reasons, the effective policy, the scan report, and who asked (the CI system's actor
and run from its environment, else the local user).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from weightgate.cli_provenance import key_password, password_option
from weightgate.errors import InputError
from weightgate.provenance.keys import SigningKey, load_signing_key
from weightgate.provenance.manifest import GIT_PATHS, FileDigest, ModelManifest, hash_model
from weightgate.provenance.model_signature import sign_model
from weightgate.provenance.record import Attachment, GateDecision, PolicyReference, Requester
from weightgate.provenance.store import RecordStore
from weightgate.scan.findings import ScanReport
from weightgate.scan.reports.json import report_to_dict
from weightgate.scan.settings import ScanSettings
from weightgate.sources.model import FetchedModel

DEFAULT_POLICY_URI = "https://weightgate.dev/policy/cli-defaults"


def add_scan_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``scan`` that sign what it scanned and record its decision."""
    group = parser.add_argument_group("signatures and admission records")
    group.add_argument(
        "--signing-key", type=Path, metavar="KEY.pem", help="signs the signature and the record"
    )
    group.add_argument(
        "--signature",
        type=Path,
        metavar="PATH",
        help="when the gate passes, sign the scanned model directory (model_signing format), "
        "reusing the scan's digests: the signature covers exactly the bytes that were scanned",
    )
    group.add_argument(
        "--record-store",
        type=Path,
        metavar="DIR",
        help="append a signed record of this decision, pass or fail, to the store "
        "(created if missing)",
    )
    group.add_argument(
        "--lineage",
        help="the model's identity without revision (default: the URI's lineage, or the "
        "file:// URI of a local path)",
    )
    password_option(group)


@dataclass(frozen=True)
class ScanProvenance:
    """What ``scan`` signs and records; built before scanning, so a bad key fails fast."""

    key: SigningKey
    signature: Path | None
    store: RecordStore | None
    lineage: str | None
    policy_file: Path | None

    def apply(
        self,
        report: ScanReport,
        settings: ScanSettings,
        model: Path,
        fetched: FetchedModel | None,
        stream: TextIO,
    ) -> None:
        """Sign the scanned model if it passed, then record the decision; say what was done.

        Raises:
            InputError: The model, the signature or the store cannot be written or read.
        """
        passed = not report.failed(settings.fail_on) and not report.errors
        known = {item.path: item.sha256 for item in report.files}
        # The record's manifest first: a signature written into the model comes after it.
        decision = self.decision(report, settings, model, fetched, passed) if self.store else None
        if self.signature is not None:
            if passed:
                sign_model(model, self.key, self.signature, known=known, only_known=True)
                stream.write(f"weightgate: signed the scanned files: {self.signature}\n")
            else:
                stream.write("weightgate: not signed: the gate failed\n")
        if self.store is not None and decision is not None:
            stored = self.store.append(decision, self.key)
            stream.write(
                f"weightgate: record {stored.sequence} of {stored.lineage} written: {stored.path}\n"
            )

    def decision(
        self,
        report: ScanReport,
        settings: ScanSettings,
        model: Path,
        fetched: FetchedModel | None,
        passed: bool,
    ) -> GateDecision:
        """The record's content: the scanned files, the verdict, who asked, under what policy."""
        known = {item.path: item.sha256 for item in report.files}
        if model.is_dir():
            manifest = hash_model(model, GIT_PATHS, known, only_known=True)
        else:
            files = tuple(FileDigest(item.path, item.sha256) for item in report.files)
            manifest = ModelManifest(model.name, files, ())
        local_uri = model.resolve().as_uri()
        policy_document = policy_json(settings)
        scan_json = json.dumps(report_to_dict(report, settings.fail_on), indent=2).encode()
        return GateDecision(
            lineage=self.lineage or (fetched.resolved.lineage if fetched else local_uri),
            resource_uri=fetched.resolved.reference if fetched else local_uri,
            manifest=manifest,
            allowed=passed,
            reasons=scan_reasons(report, settings),
            requester=requester_from_environment(os.environ),
            policy=PolicyReference(
                self.policy_file.resolve().as_uri() if self.policy_file else DEFAULT_POLICY_URI,
                hashlib.sha256(policy_document).hexdigest(),
            ),
            revision=fetched.revision if fetched else None,
            attachments=(
                Attachment("scan-report.json", "application/json", scan_json),
                Attachment("policy.json", "application/json", policy_document),
            ),
        )


def scan_provenance(args: argparse.Namespace, is_reference: bool) -> ScanProvenance | None:
    """What ``scan``'s options ask to sign and record, or None.

    Raises:
        InputError: Options that do not go together, or an unusable key or store.
    """
    if args.record_store is None and args.signature is None:
        if args.signing_key is not None:
            raise InputError("--signing-key needs --signature or --record-store")
        return None
    if args.signing_key is None:
        raise InputError("--signature and --record-store need --signing-key")
    if args.signature is not None and (is_reference or not Path(args.path).is_dir()):
        raise InputError(
            "--signature signs a local model directory; for a model URI use --record-store"
        )
    key = load_signing_key(args.signing_key, key_password(args))
    store = RecordStore(args.record_store, create=True) if args.record_store else None
    policy = Path(args.policy) if args.policy else None
    return ScanProvenance(key, args.signature, store, args.lineage, policy)


def scan_reasons(report: ScanReport, settings: ScanSettings) -> tuple[str, ...]:
    """Why the gate failed: each finding at or above the threshold, each unreadable file."""
    reasons = [
        f"{finding.rule} in {finding.path}: {finding.message}"
        for finding in report.findings
        if finding.severity >= settings.fail_on
    ]
    reasons += [f"could not scan {path}: {reason}" for path, reason in report.errors]
    return tuple(reasons)


def policy_json(settings: ScanSettings) -> bytes:
    """The effective gate settings as canonical JSON (the record's policy digest covers it)."""
    document = {
        "failOn": settings.fail_on.label,
        "allowGlobals": sorted(settings.allowed_globals),
        "limits": asdict(settings.limits),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def requester_from_environment(environ: Mapping[str, str]) -> Requester:
    """Who runs this: the CI system's actor and run when there is one, else the local user."""
    if environ.get("GITHUB_ACTIONS") == "true":
        server = environ.get("GITHUB_SERVER_URL", "https://github.com")
        repository, run = environ.get("GITHUB_REPOSITORY", ""), environ.get("GITHUB_RUN_ID", "")
        return Requester(
            "ci",
            environ.get("GITHUB_ACTOR", ""),
            {
                "system": "github-actions",
                "repository": repository,
                "ref": environ.get("GITHUB_REF", ""),
                "workflow": environ.get("GITHUB_WORKFLOW_REF", ""),
                "run": f"{server}/{repository}/actions/runs/{run}" if run else "",
            },
        )
    if environ.get("GITLAB_CI") == "true":
        return Requester(
            "ci",
            environ.get("GITLAB_USER_LOGIN", ""),
            {
                "system": "gitlab-ci",
                "repository": environ.get("CI_PROJECT_PATH", ""),
                "ref": environ.get("CI_COMMIT_REF_NAME", ""),
                "run": environ.get("CI_JOB_URL", ""),
            },
        )
    if environ.get("JENKINS_URL"):
        return Requester(
            "ci",
            environ.get("BUILD_USER_ID", "") or environ.get("JOB_NAME", ""),
            {
                "system": "jenkins",
                "job": environ.get("JOB_NAME", ""),
                "run": environ.get("BUILD_URL", ""),
            },
        )
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Requester("user", user, {"host": socket.gethostname()})
