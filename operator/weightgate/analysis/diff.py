"""``weightgate diff``: compare a candidate with the last admitted version, decide, report.

Detectors and their verdicts (``fail`` fails the gate, exit 2):

* ``manifest``: any tensor added, removed, renamed, reshaped or re-typed fails — a new
  version of the same model keeps its architecture, and an added module (TrojanNet) or a
  swapped tensor shows here first. When the two share under half of their tensors they are
  different models, not versions: that is an input error (exit 1), not a verdict.
* ``bit-flips``: a tensor in which at most ``MAX_FLIP_ELEMENTS`` elements changed, each only
  in its exponent bits, fails (bit-flip attacks change a handful of exponents; a fine-tune
  moves mantissas everywhere); so does any weight that became (or stopped being) NaN or
  infinite.
* ``census``: weights changed in at least one tensor but in no more than
  ``MAX_EDITED_TENSORS`` tensors, themselves at most ``MAX_EDITED_SHARE`` of all tensors,
  fails as a localised edit (ROME edits one matrix, MEMIT 3-6; a fine-tune changes nearly
  every tensor).
* ``spectral``: a changed matrix whose ΔW has at most ``MAX_EDIT_RANK`` standing-out
  singular directions holding at least ``MIN_RANK_ENERGY`` of its change is *low-rank*;
  low-rank changes confined to at most ``MAX_EDITED_TENSORS`` matrices, at most
  ``MAX_EDITED_SHARE`` of all matrices, fail (an edit, even one followed by a light
  fine-tune that changed everything else a little; a merged benign LoRA is low-rank in every
  adapted matrix, not in a few). See :mod:`.spectral`.

Thresholds are provisional: the evaluation suite fixes them on benign negatives (issue 6).

A re-saved copy has an empty diff and passes.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightgate.analysis.census import TensorChange, census, delta_blocks
from weightgate.analysis.manifest_diff import ManifestDiff, diff_manifests
from weightgate.analysis.spectral import DeltaSketch, SpectralProfile
from weightgate.analysis.tensors import ModelTensors, open_model
from weightgate.errors import InputError

MAX_FLIP_ELEMENTS = 64
MAX_EDITED_TENSORS = 6
MAX_EDITED_SHARE = 0.05
MIN_SHARED_TENSORS = 0.5

DETECTORS = {
    "manifest": (
        "Tensors were added, removed, renamed, reshaped or re-typed",
        "A new version of a model keeps its architecture; an added module or a swapped tensor "
        "shows here. Check where the candidate came from before admitting it.",
    ),
    "bit-flips": (
        "A few weights changed only in their exponent bits, or became NaN or infinite",
        "Bit-flip attacks change a handful of exponents; fine-tunes move mantissas "
        "everywhere. Compare the candidate's provenance with the last admitted version's.",
    ),
    "census": (
        "Weights changed in only a few tensors",
        "Surgical edits (ROME, MEMIT, handcrafted neurons) change one to a few matrices; a "
        "fine-tune changes nearly every tensor. Find out who changed these tensors and why.",
    ),
    "spectral": (
        "A low-rank change is confined to a few matrices",
        "Knowledge edits and merged LoRA backdoors write low-rank updates into a few "
        "matrices; a benign fine-tune or LoRA spreads over every layer.",
    ),
}
"""Every detector: a title and what a failure means, for reports (SARIF rules)."""
MAX_EDIT_RANK = 8
MIN_RANK_ENERGY = 0.5


@dataclass(frozen=True)
class Verdict:
    """One detector's conclusion: ``pass``, ``warn`` or ``fail``, why, and which tensors."""

    detector: str
    status: str
    message: str
    tensors: tuple[str, ...] = ()


@dataclass
class DiffReport:
    """Everything ``weightgate diff`` found."""

    baseline: str
    candidate: str
    manifest: ManifestDiff
    changes: list[TensorChange] = field(default_factory=list)
    spectra: dict[str, SpectralProfile] = field(default_factory=dict)
    matrices: int = 0
    locations: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Tensor -> (file relative to its model, byte offset of its data): the candidate's, or
    the baseline's for a removed tensor."""
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether any detector failed."""
        return any(verdict.status == "fail" for verdict in self.verdicts)

    @property
    def changed(self) -> list[TensorChange]:
        """The common tensors whose elements changed, largest relative change first."""
        return sorted(
            (change for change in self.changes if not change.identical),
            key=lambda change: change.relative_change,
            reverse=True,
        )


def diff_models(baseline: Path, candidate: Path) -> DiffReport:
    """Compare two model directories (or files) tensor by tensor.

    Raises:
        InputError: Either side is missing, malformed or truncated, or the two are
            different models rather than versions of one.
    """
    with ExitStack() as stack:
        before = open_model(baseline, stack)
        after = open_model(candidate, stack)
        manifest = diff_manifests(before, after)
        shared = len(manifest.common) + len(manifest.renamed)
        if shared < MIN_SHARED_TENSORS * max(len(before.tensors), len(after.tensors)):
            raise InputError(
                f"{baseline} and {candidate} share {shared} of {len(before.tensors)} and "
                f"{len(after.tensors)} tensors: different architectures, not two versions"
            )
        report = DiffReport(str(baseline), str(candidate), manifest)
        for tensors in (before.tensors, after.tensors):  # the candidate's place wins
            report.locations.update({name: (t.file, t.offset) for name, t in tensors.items()})
        report.matrices = sum(_is_matrix(before.tensors[name].shape) for name in manifest.common)

        def compare(name: str) -> tuple[TensorChange, SpectralProfile | None]:
            return _compare(before, after, name)

        # numpy releases the GIL in the work that matters: one tensor per core.
        with ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
            for change, profile in pool.map(compare, manifest.common):
                report.changes.append(change)
                if profile is not None:
                    report.spectra[change.name] = profile
    report.verdicts = [
        _manifest_verdict(manifest),
        _flip_verdict(report.changes),
        _census_verdict(report.changes, len(manifest.common)),
        _spectral_verdict(report.spectra, report.matrices),
    ]
    return report


def _compare(
    before: ModelTensors, after: ModelTensors, name: str
) -> tuple[TensorChange, SpectralProfile | None]:
    """The census of one tensor and, for a changed matrix, the profile of its change."""
    shape = before.tensors[name].shape
    sketch = DeltaSketch(shape[0], math.prod(shape[1:])) if _is_matrix(shape) else None
    change = census(before, after, name, sketch)
    if sketch is None or change.identical or change.non_finite:
        return change, None
    profile = sketch.estimate(name)
    if _low_rank(profile):  # a suspect: read it again for the exact spectrum
        profile = sketch.refine(name, delta_blocks(before, after, name), change.delta_norm)
    return change, profile


def _is_matrix(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and shape[0] >= 2 and math.prod(shape[1:]) >= 2


def _manifest_verdict(manifest: ManifestDiff) -> Verdict:
    if not manifest.structural:
        return Verdict("manifest", "pass", "same tensors, shapes and types")
    parts = []
    for label, items in (
        ("added", manifest.added),
        ("removed", manifest.removed),
        ("renamed", [f"{old} -> {new}" for old, new in manifest.renamed]),
        (
            "reshaped",
            [f"{name} {list(old)} -> {list(new)}" for name, old, new in manifest.reshaped],
        ),
        ("re-typed", [f"{name} {old} -> {new}" for name, old, new in manifest.retyped]),
    ):
        if items:
            parts.append(f"{len(items)} {label}")
    names = (
        *manifest.added, *manifest.removed, *(new for _, new in manifest.renamed),
        *(name for name, _, _ in manifest.reshaped), *(name for name, _, _ in manifest.retyped),
    )  # fmt: skip
    return Verdict("manifest", "fail", "tensors " + ", ".join(parts), tuple(names))


def _flip_verdict(changes: list[TensorChange]) -> Verdict:
    broken = [change for change in changes if change.non_finite]
    if broken:
        total = sum(change.non_finite for change in broken)
        return Verdict(
            "bit-flips",
            "fail",
            f"{total} element(s) became or stopped being NaN or infinite",
            tuple(change.name for change in broken),
        )
    flipped = [
        change
        for change in changes
        if 0 < change.changed <= MAX_FLIP_ELEMENTS and change.exponent_flips == change.changed
    ]
    if not flipped:
        return Verdict("bit-flips", "pass", "no tensor changed only in a few exponents")
    total = sum(change.exponent_flips for change in flipped)
    return Verdict(
        "bit-flips",
        "fail",
        f"{total} element(s) changed only in their exponent bits, in {len(flipped)} tensor(s)",
        tuple(change.name for change in flipped),
    )


def _census_verdict(changes: list[TensorChange], common: int) -> Verdict:
    edited = [change for change in changes if not change.identical]
    if not edited:
        return Verdict("census", "pass", "no weight changed")
    share = len(edited) / max(common, 1)
    summary = f"{len(edited)} of {common} tensors changed ({share:.1%})"
    if len(edited) <= MAX_EDITED_TENSORS and share <= MAX_EDITED_SHARE:
        ranked = sorted(edited, key=lambda change: change.relative_change, reverse=True)
        return Verdict(
            "census",
            "fail",
            f"localised edit: {summary}; a fine-tune changes nearly every tensor",
            tuple(change.name for change in ranked),
        )
    return Verdict("census", "pass", summary)


def _low_rank(profile: SpectralProfile) -> bool:
    return 0 < profile.rank <= MAX_EDIT_RANK and profile.rank_energy >= MIN_RANK_ENERGY


def _spectral_verdict(spectra: dict[str, SpectralProfile], matrices: int) -> Verdict:
    low_rank = [profile for profile in spectra.values() if profile.refined and _low_rank(profile)]
    if not low_rank:
        return Verdict("spectral", "pass", f"{len(spectra)} changed matrices, none low-rank")
    share = len(low_rank) / max(matrices, 1)
    described = ", ".join(
        f"{p.name} (rank {p.rank}, {p.rank_energy:.0%} of the change)" for p in low_rank[:3]
    )
    summary = f"{len(low_rank)} of {matrices} matrices changed by a low-rank update: {described}"
    if len(low_rank) <= MAX_EDITED_TENSORS and share <= MAX_EDITED_SHARE:
        ranked = sorted(low_rank, key=lambda profile: profile.rank_energy, reverse=True)
        return Verdict(
            "spectral", "fail", f"low-rank edit: {summary}", tuple(p.name for p in ranked)
        )
    return Verdict("spectral", "pass", f"spread, not confined: {summary}")


def report_to_dict(report: DiffReport) -> dict[str, Any]:
    """The JSON form of a report."""
    manifest = report.manifest
    return {
        "baseline": report.baseline,
        "candidate": report.candidate,
        "passed": not report.failed,
        "verdicts": [
            {
                "detector": v.detector,
                "status": v.status,
                "message": v.message,
                "tensors": list(v.tensors),
            }
            for v in report.verdicts
        ],
        "manifest": {
            "added": list(manifest.added),
            "removed": list(manifest.removed),
            "renamed": [list(pair) for pair in manifest.renamed],
            "reshaped": [
                {"tensor": name, "baseline": list(old), "candidate": list(new)}
                for name, old, new in manifest.reshaped
            ],
            "retyped": [
                {"tensor": name, "baseline": old, "candidate": new}
                for name, old, new in manifest.retyped
            ],
            "files": [{"path": path, "change": change} for path, change in manifest.files],
        },
        "tensors": {
            "compared": len(report.changes),
            "identical": sum(change.identical for change in report.changes),
            "changed": [
                {
                    "tensor": change.name,
                    "elements": change.elements,
                    "changed": change.changed,
                    "changedFraction": change.changed_fraction,
                    "exponentFlips": change.exponent_flips,
                    "nonFinite": change.non_finite,
                    "maxAbsDelta": _number(change.max_abs_delta),
                    "relativeChange": _number(change.relative_change),
                    **_spectrum_dict(report.spectra.get(change.name)),
                }
                for change in report.changed
            ],
        },
    }


def _spectrum_dict(profile: SpectralProfile | None) -> dict[str, Any]:
    if profile is None:
        return {}
    return {
        "spectrum": {
            "rank": profile.rank,
            "rankEnergy": profile.rank_energy,
            "stableRank": profile.stable_rank,
            "entropy": profile.entropy,
            "sigma": list(profile.sigma),
        }
    }


def render_text(report: DiffReport, limit: int = 20) -> str:
    """The human form: verdicts first, then what changed."""
    lines = [f"baseline  {report.baseline}", f"candidate {report.candidate}", ""]
    for verdict in report.verdicts:
        lines.append(f"{verdict.status.upper():<5} {verdict.detector}: {verdict.message}")
        lines.extend(f"      {name}" for name in verdict.tensors[:limit])
    changed = report.changed
    identical = sum(change.identical for change in report.changes)
    lines.append("")
    lines.append(
        f"{len(report.changes)} tensors compared: {identical} identical, {len(changed)} changed"
    )
    for change in changed[:limit]:
        lines.append(
            f"  {change.name}: {change.changed}/{change.elements} elements "
            f"({change.changed_fraction:.2%}), |d|max {change.max_abs_delta:.3g}, "
            f"|D|/|W| {change.relative_change:.3g}"
            + (f", {change.exponent_flips} exponent-only" if change.exponent_flips else "")
            + (f", {change.non_finite} non-finite" if change.non_finite else "")
            + _spectrum_text(report.spectra.get(change.name))
        )
    if len(changed) > limit:
        lines.append(f"  ... {len(changed) - limit} more (--format json lists all)")
    for path, what in report.manifest.files:
        lines.append(f"file {what}: {path}")
    lines.append("")
    lines.append("FAIL: the gate failed" if report.failed else "PASS: no detector failed")
    return "\n".join(lines) + "\n"


def _spectrum_text(profile: SpectralProfile | None) -> str:
    if profile is None:
        return ""
    return (
        f", rank {profile.rank} ({profile.rank_energy:.0%}), stable rank {profile.stable_rank:.3g}"
    )


def _number(value: float) -> float | str:
    # JSON has no NaN or Infinity; say them as text.
    return value if math.isfinite(value) else str(value)
