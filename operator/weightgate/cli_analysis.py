"""The command line's side of weight analysis: ``weightgate diff BASELINE CANDIDATE``.

The work is :func:`weightgate.analysis.diff.diff_models`; this module declares the command,
renders the report (text, JSON or SARIF) and maps it to the exit codes every command uses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from weightgate.analysis.diff import diff_models
from weightgate.analysis.report import render_text, report_to_dict
from weightgate.analysis.sarif import diff_to_sarif
from weightgate.errors import InputError
from weightgate.version import __version__


def add_diff_command(commands: Any) -> None:
    """Declare ``weightgate diff`` on the CLI's subcommands."""
    diff = commands.add_parser(
        "diff",
        help="compare a candidate model with its last admitted version, tensor by tensor",
        description="Compare two versions of a model (directories or files; safetensors, "
        "GGUF or PyTorch zip checkpoints, read without unpickling): tensors added, removed, "
        "renamed, reshaped or re-typed, and per tensor how many elements changed and how. "
        "Exit 2 when a detector fails.",
    )
    diff.add_argument("baseline", type=Path, metavar="BASELINE")
    diff.add_argument("candidate", type=Path, metavar="CANDIDATE")
    diff.add_argument("-f", "--format", choices=["text", "json", "sarif"], default="text")
    diff.add_argument("-o", "--output", type=Path, help="write the report here, not stdout")


def command_diff(args: argparse.Namespace, out: TextIO) -> int:
    """``weightgate diff``: 0 pass, 2 a detector failed (1 is raised as InputError)."""
    report = diff_models(args.baseline, args.candidate)
    if args.format == "json":
        text = json.dumps(report_to_dict(report), indent=2) + "\n"
    elif args.format == "sarif":
        text = json.dumps(diff_to_sarif(report, __version__), indent=2) + "\n"
    else:
        text = render_text(report)
    if args.output is not None:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.output}: {exc.strerror or exc}") from exc
    else:
        out.write(text)
    return 2 if report.failed else 0
