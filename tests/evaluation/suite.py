"""Run the detectors on labelled cases and summarise: detection, false positives, AUROC.

A *case* is one candidate made from a baseline (an attack at some strength, or a benign
change); each is written by its model's writer (safetensors by default) and compared with
``weightgate.analysis.diff``.
Per attack family and strength the table gives the share the gate failed at its shipped
thresholds (fixed on the benign cases, see ``weightgate.analysis.detectors``), the share
failed or warned about (warning-only detectors included), the share of detections in which
the edited tensor is the one the report names first, and the AUROC of a suspicion score
against all benign cases of the same model. The benign rows give the false-positive rates. A
second table gives each detector's own AUROC per attack family (at or below 0.5: the detector
does not look at that kind of change; another one catches it). Thresholds are never tuned
here on the positives.

Detector scores (the statistic each detector thresholds, at its most suspicious tensor):
manifest = number of structural changes; bit-flips = 1 when it fails; census = 1 - (changed
tensors / tensors) when anything changed; spectral = the largest family spike ratio
(:func:`~weightgate.analysis.detectors.family_spikes`); localisation = the largest share
of a tensor's change in its top 1% of rows or columns. Suspicion (for the first table's
AUROC) = 1 when the manifest or bit-flip detector fails, else the larger of the census score
and r / (r + SPIKE_RATIO) for the spectral ratio r (1/2 at the threshold).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save_file

from weightgate.analysis.detectors import SPIKE_RATIO, family_spikes
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
    scores: dict[str, float]


def detector_scores(report: DiffReport) -> dict[str, float]:
    """Each detector's statistic (module docstring)."""
    status = {verdict.detector: verdict.status for verdict in report.verdicts}
    changed = [change for change in report.changes if not change.identical]
    spikes = family_spikes(report.changes, report.spectra)
    return {
        "manifest": float(
            len(next(v for v in report.verdicts if v.detector == "manifest").tensors)
        ),
        "bit-flips": float(status.get("bit-flips") == "fail"),
        "census": 1 - len(changed) / max(len(report.changes), 1) if changed else 0.0,
        "spectral": max(spikes.values(), default=0.0),
        "localisation": max(
            (max(c.top_rows_share, c.top_columns_share) for c in changed), default=0.0
        ),
    }


def suspicion(scores: dict[str, float]) -> float:
    """The combined score of the module docstring."""
    if scores["manifest"] or scores["bit-flips"]:
        return 1.0
    spike = scores["spectral"]
    spectral = 1.0 if spike == float("inf") else spike / (spike + SPIKE_RATIO)
    return max(scores["census"], spectral)


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
        scores = detector_scores(report)
        outcomes.append(Outcome(case, report.failed, warned, named, suspicion(scores), scores))
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
            raised = [o for o in members if o.failed] or [o for o in members if o.warned]
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


def detector_table(outcomes: list[Outcome]) -> str:
    """Each detector's AUROC per model and attack family, against the model's benign cases."""
    detectors = list(outcomes[0].scores) if outcomes else []
    rows = [
        "| model | attack | n | " + " | ".join(detectors) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in detectors) + " |",
    ]
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.case.positive:
            groups.setdefault((outcome.case.model, outcome.case.family), []).append(outcome)
    for (model, family), members in groups.items():
        negatives = [o for o in outcomes if o.case.model == model and not o.case.positive]
        areas = [
            auroc([o.scores[d] for o in members], [o.scores[d] for o in negatives])
            for d in detectors
        ]
        rows.append(
            f"| {model} | {family} | {len(members)} | "
            + " | ".join(f"{area:.2f}" for area in areas)
            + " |"
        )
    return "\n".join(rows) + "\n"


def benign_maxima(outcomes: list[Outcome]) -> str:
    """Per model, each detector's largest score over the benign cases: where thresholds sit."""
    detectors = list(outcomes[0].scores) if outcomes else []
    rows = [
        "| model (largest benign score) | n | " + " | ".join(detectors) + " |",
        "| --- | --- | " + " | ".join("---" for _ in detectors) + " |",
    ]
    models = dict.fromkeys(o.case.model for o in outcomes)
    for model in models:
        negatives = [o for o in outcomes if o.case.model == model and not o.case.positive]
        if negatives:
            tops = [max(o.scores[d] for o in negatives) for d in detectors]
            rows.append(
                f"| {model} | {len(negatives)} | " + " | ".join(f"{t:.2f}" for t in tops) + " |"
            )
    return "\n".join(rows) + "\n"
