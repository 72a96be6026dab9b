"""Run the detectors on labelled cases and summarise: detection, false positives, AUROC.

A *case* is one candidate made from a baseline (an attack at some strength, or a benign
change); each is written by its model's writer (safetensors by default) and compared with
``weightgate.analysis.diff``.
Per attack family and strength the table gives the share the gate failed at its shipped
thresholds, the share failed or warned about (warning-only detectors included), the share in
which the edited tensor is the one the report names first, and the AUROC of a suspicion
score against all benign cases of the same model. The benign rows give the false-positive
rates. Thresholds are never tuned here on the positives.

Suspicion score (for AUROC; the gate itself uses the verdicts): 1 when the manifest or the
bit-flip detector fails; else the larger of 1 - (changed tensors / tensors) when anything
changed and 1 - (low-rank matrices / matrices) when any changed matrix is low-rank; else 0.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save_file

from weightgate.analysis.detectors import low_rank
from weightgate.analysis.diff import DiffReport, diff_models

Weights = dict[str, npt.NDArray[np.float32]]
Writer = Callable[[Weights, Path], None]
"""Writes a candidate's weights into its directory (a copy of the baseline's, safetensors
files left out)."""


@dataclass(frozen=True)
class Case:
    """One candidate: how to make it and what it is."""

    model: str
    family: str
    strength: str
    positive: bool
    edited: tuple[str, ...]
    make: Callable[[], Weights]


@dataclass(frozen=True)
class Outcome:
    """What the gate said about one case: failed, or at least warned."""

    case: Case
    failed: bool
    warned: bool
    named_first: str | None
    score: float


def suspicion(report: DiffReport) -> float:
    """The score of the module docstring."""
    status = {verdict.detector: verdict.status for verdict in report.verdicts}
    if status.get("manifest") == "fail" or status.get("bit-flips") == "fail":
        return 1.0
    scores = [0.0]
    changed = sum(not change.identical for change in report.changes)
    if changed:
        scores.append(1 - changed / max(len(report.changes), 1))
    suspects = sum(p.refined and low_rank(p) for p in report.spectra.values())
    if suspects:
        scores.append(1 - suspects / max(report.matrices, 1))
    return max(scores)


def save_safetensors(weights: Weights, directory: Path) -> None:
    """The default writer: the weights as ``model.safetensors``."""
    save_file(weights, str(directory / "model.safetensors"))


def evaluate(
    baseline: Path, cases: list[Case], workdir: Path, write: Writer = save_safetensors
) -> list[Outcome]:
    """Diff every case's candidate, written by ``write``, against ``baseline`` (a directory
    holding the model)."""
    outcomes = []
    for number, case in enumerate(cases):
        candidate = workdir / f"case-{number}"
        shutil.copytree(baseline, candidate, ignore=shutil.ignore_patterns("*.safetensors"))
        write(case.make(), candidate)
        report = diff_models(baseline, candidate)
        raised = [v for v in report.verdicts if v.status != "pass" and v.tensors]
        failing = [v for v in raised if v.status == "fail"]
        named = (failing or raised)[0].tensors[0] if raised else None
        warned = any(v.status != "pass" for v in report.verdicts)
        outcomes.append(Outcome(case, report.failed, warned, named, suspicion(report)))
        shutil.rmtree(candidate)
    return outcomes


def auroc(positives: list[float], negatives: list[float]) -> float:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney)."""
    if not positives or not negatives:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def table(outcomes: list[Outcome]) -> str:
    """The summary as a Markdown table, one row per model, family and strength."""
    rows = [
        "| model | case | strength | n | gate failed | failed or warned | edited tensor named "
        "first | AUROC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple[str, str, str, bool], list[Outcome]] = {}
    for outcome in outcomes:
        case = outcome.case
        groups.setdefault((case.model, case.family, case.strength, case.positive), []).append(
            outcome
        )
    for (model, family, strength, positive), members in groups.items():
        negatives = [o.score for o in outcomes if o.case.model == model and not o.case.positive]
        failed = sum(o.failed for o in members) / len(members)
        warned = sum(o.warned for o in members) / len(members)
        if positive:
            raised = [o for o in members if o.warned]
            named = sum(o.named_first in o.case.edited for o in raised) / max(len(raised), 1)
            area = auroc([o.score for o in members], negatives)
            rows.append(
                f"| {model} | {family} | {strength} | {len(members)} | {failed:.0%} | "
                f"{warned:.0%} | {named:.0%} | {area:.2f} |"
            )
        else:
            rows.append(
                f"| {model} | benign: {family} | {strength} | {len(members)} | "
                f"{failed:.0%} (false positives) | {warned:.0%} | | |"
            )
    return "\n".join(rows) + "\n"
