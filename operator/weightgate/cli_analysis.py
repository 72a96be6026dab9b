"""The command line's side of weight analysis: ``weightgate diff BASELINE CANDIDATE``.

The work is :func:`weightgate.analysis.diff.diff_models`; this module declares the command,
fetches either side given as a model URI the way ``scan`` does (:mod:`.cli_sources`: pinned,
fetched into the cache, verified, laid out in a temporary directory), renders the report
(text, JSON or SARIF, naming each fetched side's revision) and maps it to the exit codes
every command uses.
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from weightgate import cli_sources
from weightgate.analysis.diff import diff_models
from weightgate.analysis.report import render_text, report_to_dict
from weightgate.analysis.sarif import diff_to_sarif
from weightgate.errors import InputError
from weightgate.sources.base import DownloadProgress, SourceSettings
from weightgate.sources.model import FetchedModel
from weightgate.version import __version__

_MODEL = (
    "a model directory or file, or a model URI (hf://, s3://, models:/, oci://, https://, "
    "file://, pvc://) to fetch"
)


def add_diff_command(commands: Any) -> None:
    """Declare ``weightgate diff`` on the CLI's subcommands."""
    diff = commands.add_parser(
        "diff",
        help="compare a candidate model with its last admitted version, tensor by tensor",
        description="Compare two versions of a model (directories or files; safetensors, "
        "GGUF or PyTorch zip checkpoints, read without unpickling): tensors added, removed, "
        "renamed, reshaped or re-typed, and per tensor how "
        "many elements changed and how. Either side may be a model URI: it is pinned to its "
        "revision, fetched and verified as `scan` does, and the report names the revision. "
        "Exit 2 when a detector fails.",
    )
    diff.add_argument("baseline", metavar="BASELINE", help=f"the admitted version: {_MODEL}")
    diff.add_argument("candidate", metavar="CANDIDATE", help=f"the new version: {_MODEL}")
    diff.add_argument(
        "-f", "--format", choices=["text", "json", "sarif"], default="text", help="report format"
    )
    diff.add_argument("-o", "--output", type=Path, help="write the report here, not stdout")
    diff.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="download progress bar on stderr (default: on a terminal)",
    )
    cli_sources.add_source_options(diff)


def command_diff(
    args: argparse.Namespace, out: TextIO, progress: DownloadProgress | None = None
) -> int:
    """``weightgate diff``: 0 pass, 2 a detector failed (1 is raised as InputError)."""
    uris = any(map(cli_sources.is_reference, (args.baseline, args.candidate)))
    settings = cli_sources.source_settings(args, progress) if uris else None
    with ExitStack() as stack:
        baseline, baseline_model = _side(args.baseline, settings, stack)
        candidate, candidate_model = _side(args.candidate, settings, stack)
        report = diff_models(
            baseline,
            candidate,
            baseline_name=baseline_model.resolved.reference if baseline_model else None,
            candidate_name=candidate_model.resolved.reference if candidate_model else None,
        )
    models = {
        side: cli_sources.model_fields(model)
        for side, model in (("baseline", baseline_model), ("candidate", candidate_model))
        if model is not None
    }
    if args.format == "json":
        document = report_to_dict(report)
        if models:
            document["sources"] = models
        text = json.dumps(document, indent=2) + "\n"
    elif args.format == "sarif":
        document = diff_to_sarif(report, __version__)
        if models:
            document["runs"][0]["properties"]["models"] = models
        text = json.dumps(document, indent=2) + "\n"
    else:
        notes = (_revision_lines(baseline_model), _revision_lines(candidate_model))
        text = render_text(report, notes=notes)
    if args.output is not None:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.output}: {exc.strerror or exc}") from exc
    else:
        out.write(text)
    return 2 if report.failed else 0


def _side(
    argument: str, settings: SourceSettings | None, stack: ExitStack
) -> tuple[Path, FetchedModel | None]:
    """A local path as given, or a model URI fetched and laid out until ``stack`` closes.

    The diff reads tensors in its own order, not hashing whole files as a scan does, so the
    laid-out files are hashed first: the diff reads exactly the verified bytes.
    """
    if settings is None or not cli_sources.is_reference(argument):
        return Path(argument), None
    fetched, directory = stack.enter_context(cli_sources.fetched_directory(argument, settings))
    cli_sources.check_laid_out(fetched, directory)
    return directory, fetched


def _revision_lines(fetched: FetchedModel | None) -> list[str]:
    return cli_sources.revision_lines(fetched) if fetched else []
