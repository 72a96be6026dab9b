"""The command line's side of model sources: `weightgate resolve`, and scanning or diffing a URI.

`weightgate.sources` does the work (resolve, fetch into the cache, materialize); this module
parses the options they share, renders what was resolved, and names the model and its
revision in scan and diff reports. The commands are dispatched from :mod:`weightgate.cli`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from weightgate import sources
from weightgate.errors import InputError
from weightgate.scan.findings import ScanReport
from weightgate.sources import registry
from weightgate.sources.base import DownloadProgress, SourceSettings
from weightgate.sources.model import FetchedModel, ResolvedModel

# RFC 3986 scheme syntax: tells `models:/name/1` from a file called `notes:v2`.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?", re.IGNORECASE)


def add_source_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that resolves or fetches a model URI."""
    group = parser.add_argument_group("model sources (for URI arguments)")
    group.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where fetched files are kept "
        "(default: $WEIGHTGATE_CACHE/models or ~/.cache/weightgate/models)",
    )
    group.add_argument("--timeout", type=float, metavar="SECONDS", help="per network wait")
    group.add_argument("--retries", type=int, metavar="N", help="further attempts on failure")
    group.add_argument(
        "--ca-bundle", type=Path, metavar="PEM", help="CAs to trust for HTTPS sources"
    )
    group.add_argument(
        "--max-model-size",
        type=parse_size,
        metavar="SIZE",
        help="refuse bigger models before downloading, e.g. 10GB, 512MiB, 2Gi",
    )


def add_resolve_command(commands: Any) -> None:
    """Declare `weightgate resolve URI` on the CLI's subcommands."""
    resolve = commands.add_parser(
        "resolve",
        help="pin a model URI to its immutable revision and list its files",
        description="Resolve a model URI (hf://, s3://, models:/, oci://, https://, file://, "
        "pvc://) to its immutable revision. Sources without a revision of their own are "
        "fetched first: their content digest is the revision.",
    )
    resolve.add_argument("reference", metavar="URI", help="the model reference")
    resolve.add_argument(
        "-f", "--format", choices=["text", "json"], default="text", help="output format"
    )
    resolve.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="download progress bar on stderr (default: on a terminal)",
    )
    add_source_options(resolve)


def parse_size(text: str) -> int:
    """`10GB` (powers of 1000), `10GiB` or `10Gi` (powers of 1024), or bytes."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 10GB or 512MiB")
    number, prefix, binary = match.groups()
    if binary and not prefix:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 10GB or 512MiB")
    power = " kmgtp".index(prefix.lower() or " ")
    return int(float(number) * (1024 if binary else 1000) ** power)


def source_settings(
    args: argparse.Namespace, progress: DownloadProgress | None = None
) -> SourceSettings:
    """SourceSettings from the command line and the progress bar; unset options: defaults."""
    settings = SourceSettings(progress=progress)
    if args.cache_dir is not None:
        settings = replace(settings, cache_dir=args.cache_dir)
    if args.timeout is not None:
        if args.timeout <= 0:
            raise InputError("--timeout must be positive")
        settings = replace(settings, timeout=args.timeout)
    if args.retries is not None:
        if args.retries < 0:
            raise InputError("--retries must be 0 or more")
        settings = replace(settings, retries=args.retries)
    if args.ca_bundle is not None:
        if not args.ca_bundle.is_file():
            raise InputError(f"--ca-bundle {args.ca_bundle}: no such file")
        settings = replace(settings, ca_bundle=args.ca_bundle)
    if args.max_model_size is not None:
        settings = replace(settings, max_model_bytes=args.max_model_size)
    return settings


def is_reference(argument: str) -> bool:
    """True when `argument` is a model URI rather than a local path.

    An existing path always wins. Otherwise a known scheme (`models:/name/1`) or any
    `scheme://` is a URI, so an unknown scheme is reported as such; `notes:v2` stays a path.
    """
    if os.path.lexists(argument):
        return False
    scheme, _, rest = argument.partition(":")
    try:
        registry.scheme_of(argument)
    except sources.UnsupportedReference:
        return False
    known = scheme.lower() in registry.SOURCES or scheme.lower() in registry.UNSUPPORTED
    return bool(_SCHEME.fullmatch(scheme)) and (known or rest.startswith("//"))


@contextmanager
def fetched_directory(
    reference: str, settings: SourceSettings
) -> Iterator[tuple[FetchedModel, Path]]:
    """Resolve and fetch `reference`, and lay it out in a temporary directory to read."""
    fetched = sources.fetch(reference, settings)
    # beside the blobs, so materialize hard-links instead of copying across filesystems
    scratch_root = settings.cache_dir / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="weightgate-scan-", dir=scratch_root) as scratch:
        yield fetched, sources.materialize(fetched, Path(scratch))


def check_scanned(report: ScanReport, fetched: FetchedModel) -> None:
    """Raise DigestMismatch unless the scan read exactly the verified bytes of every file."""
    verified = {file.path: file.sha256 for file in fetched.files}
    unread = {path for path, _ in report.errors}
    for result in report.files:
        if verified.get(result.path) != result.sha256:
            raise sources.DigestMismatch(
                f"{fetched.resolved.reference}: {result.path}: the scanned bytes (sha256 "
                f"{result.sha256}) are not the fetched ones ({verified.get(result.path)}); "
                "the cache was modified: remove it and scan again"
            )
    missing = set(verified) - {result.path for result in report.files} - unread
    if missing:
        raise sources.DigestMismatch(
            f"{fetched.resolved.reference}: {', '.join(sorted(missing))} fetched but not scanned"
        )


def check_laid_out(fetched: FetchedModel, directory: Path) -> None:
    """Raise DigestMismatch unless every file laid out in `directory` holds its verified bytes.

    For a command that reads the files in its own order (diff) instead of hashing each one
    as it goes (scan: :func:`check_scanned`): one more read of each file, before it is used.
    """
    reference = fetched.resolved.reference
    for file in fetched.files:
        path = directory.joinpath(*file.path.split("/"))
        try:
            with path.open("rb") as handle:
                sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as error:
            raise sources.SourceError(
                f"{reference}: {file.path}: cannot read it in {directory}: {error}"
            ) from error
        if sha256 != file.sha256:
            raise sources.DigestMismatch(
                f"{reference}: {file.path}: the bytes read (sha256 {sha256}) are not the "
                f"fetched ones ({file.sha256}); the cache was modified: remove it and try again"
            )


def revision_note(fetched: FetchedModel) -> str:
    """Why the revision is what it is, when the source had none of its own."""
    if fetched.resolved.revision is not None:
        return ""
    return "content digest: the source has no revision of its own"


def model_fields(fetched: FetchedModel) -> dict[str, Any]:
    """The model's identity, for JSON reports (`source`) and SARIF run properties."""
    resolved = fetched.resolved
    return {
        "reference": resolved.reference,
        "lineage": resolved.lineage,
        "revision": fetched.revision,
        "revisionIsContentDigest": resolved.revision is None,
        "pinned": resolved.pinned,
        "contentDigest": fetched.content_digest,
    }


def revision_lines(fetched: FetchedModel) -> list[str]:
    """The revision a fetched model was pinned to, and the reference that always means it."""
    note = revision_note(fetched)
    lines = [f"Revision: {fetched.revision} ({note})" if note else f"Revision: {fetched.revision}"]
    if fetched.resolved.pinned != fetched.resolved.reference:
        lines.append(f"Pinned:   {fetched.resolved.pinned}")
    return lines


def text_header(fetched: FetchedModel) -> str:
    """The first lines of a text report on a fetched model."""
    lines = [f"Model:    {fetched.resolved.reference}", *revision_lines(fetched)]
    return "\n".join(lines) + "\n"


def command_resolve(args: argparse.Namespace, progress: DownloadProgress | None) -> str:
    """Run `weightgate resolve`: the rendered resolution (fetching first if needed)."""
    settings = source_settings(args, progress)
    resolved = sources.resolve(args.reference, settings)
    fetched = sources.fetch(resolved, settings) if resolved.revision is None else None
    if args.format == "json":
        return json.dumps(resolution_to_dict(resolved, fetched), indent=2) + "\n"
    return render_resolution(resolved, fetched)


def resolution_to_dict(resolved: ResolvedModel, fetched: FetchedModel | None) -> dict[str, Any]:
    """What `weightgate resolve --format json` prints."""
    digests = {file.path: file.sha256 for file in fetched.files} if fetched else {}
    return {
        "reference": resolved.reference,
        "lineage": resolved.lineage,
        "revision": fetched.revision if fetched else resolved.revision,
        "revisionIsContentDigest": resolved.revision is None,
        "pinned": resolved.pinned,
        "totalBytes": resolved.total_size,
        "files": [
            {"path": file.path, "size": file.size, "sha256": file.sha256 or digests.get(file.path)}
            for file in resolved.files
        ],
    }


def render_resolution(resolved: ResolvedModel, fetched: FetchedModel | None) -> str:
    """What `weightgate resolve` prints on a terminal."""
    document = resolution_to_dict(resolved, fetched)
    revision = document["revision"]
    if fetched is not None and revision_note(fetched):
        revision += f"  ({revision_note(fetched)}; fetched to compute it)"
    count = len(resolved.files)
    lines = [
        f"reference  {resolved.reference}",
        f"lineage    {resolved.lineage}",
        f"revision   {revision}",
        f"pinned     {resolved.pinned}",
        f"files      {count} {'file' if count == 1 else 'files'}, {resolved.total_size:,} bytes",
    ]
    width = max(len(f"{file.size:,}") for file in resolved.files) if resolved.files else 1
    for file in document["files"]:
        digest = file["sha256"] or "sha256 unknown until fetched"
        lines.append(f"  {file['size']:>{width},}  {digest}  {file['path']}")
    return "\n".join(lines) + "\n"
