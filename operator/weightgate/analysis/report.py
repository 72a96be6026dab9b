"""The text and JSON forms of a ``weightgate diff`` report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from weightgate.analysis.diff import DiffReport
from weightgate.analysis.evidence import (
    DirectionEvidence,
    Evidence,
    Readout,
    RowChanges,
    TokenScore,
)
from weightgate.analysis.spectral import SpectralProfile


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
                    "topRowsShare": change.top_rows_share,
                    "topColumnsShare": change.top_columns_share,
                    "maxAbsDelta": _number(change.max_abs_delta),
                    "relativeChange": _number(change.relative_change),
                    **_spectrum_dict(report.spectra.get(change.name)),
                }
                for change in report.changed
            ],
        },
        "evidence": evidence_to_dict(report.evidence),
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


def render_text(
    report: DiffReport,
    limit: int = 20,
    notes: tuple[Sequence[str], Sequence[str]] = ((), ()),
) -> str:
    """The human form: verdicts first, then what changed.

    ``notes`` are lines shown under the baseline's and the candidate's name (for a fetched
    model, its revision).
    """
    lines = []
    for label, name, side_notes in zip(
        ("baseline ", "candidate"), (report.baseline, report.candidate), notes, strict=True
    ):
        lines.append(f"{label} {name}")
        lines.extend(f"{'':10}{note}" for note in side_notes)
    lines.append("")
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
    lines.extend(_evidence_text(report.evidence))
    lines.append("")
    lines.append("FAIL: the gate failed" if report.failed else "PASS: no detector failed")
    return "\n".join(lines) + "\n"


def _spectrum_text(profile: SpectralProfile | None) -> str:
    if profile is None:
        return ""
    return (
        f", rank {profile.rank} ({profile.rank_energy:.0%}), stable rank {profile.stable_rank:.3g}"
    )


def _evidence_text(evidence: Evidence | None) -> list[str]:
    """The evidence section: only when there is something to show."""
    if evidence is None or not (evidence.directions or evidence.rows):
        return []
    source = evidence.tokenizer or "none, token ids only"
    lines = ["", f"Evidence (informational; tokens from {source}):"]
    if evidence.note:
        lines.append(f"  note: {evidence.note}")
    for direction in evidence.directions:
        kind = "low-rank suspect" if direction.suspect else "most changed"
        lines.append(
            f"  {direction.tensor} direction {direction.index} "
            f"(sigma {direction.sigma:.3g}, {kind}):"
        )
        for label, readout in (("targets", direction.targets), ("triggers", direction.triggers)):
            lines.extend(_readout_text(label, readout))
    for rows in evidence.rows:
        listed = ", ".join(f"{_token_text(t)} {t.score:.3g}" for t in rows.top)
        lines.append(f"  {rows.tensor}: {rows.changed_rows} of {rows.rows} rows changed: {listed}")
    return lines


def _readout_text(label: str, readout: Readout | None) -> list[str]:
    if readout is None:
        return []
    return [
        f"    {label if sign == '+' else '':<8} {sign} "
        + ", ".join(f"{_token_text(t)} {t.score:.2f}" for t in matches)
        for sign, matches in (("+", readout.positive), ("-", readout.negative))
    ]


def _token_text(token: TokenScore) -> str:
    # repr() shows whitespace and escapes control characters a hostile vocabulary may hold.
    return f"{token.token!r}#{token.id}" if token.token is not None else f"#{token.id}"


def _number(value: float) -> float | str:
    # JSON has no NaN or Infinity; say them as text.
    return value if math.isfinite(value) else str(value)


def evidence_to_dict(evidence: Evidence | None) -> dict[str, Any] | None:
    """The JSON form (field names in the module docstring)."""
    if evidence is None:
        return None
    return {
        "embedding": evidence.embedding,
        "unembedding": evidence.unembedding,
        "hiddenSize": evidence.width,
        "tokenizer": evidence.tokenizer,
        "note": evidence.note,
        "directions": [_direction_dict(direction) for direction in evidence.directions],
        "embeddingRows": [_rows_dict(rows) for rows in evidence.rows],
    }


def tensor_evidence_dict(evidence: Evidence | None, tensor: str) -> dict[str, Any] | None:
    """The evidence about one tensor (its directions, or its changed rows), or None."""
    if evidence is None:
        return None
    directions = [_direction_dict(d) for d in evidence.directions if d.tensor == tensor]
    rows = [_rows_dict(rows) for rows in evidence.rows if rows.tensor == tensor]
    if not directions and not rows:
        return None
    return {"tokenizer": evidence.tokenizer, "directions": directions, "embeddingRows": rows}


def _direction_dict(direction: DirectionEvidence) -> dict[str, Any]:
    return {
        "tensor": direction.tensor,
        "direction": direction.index,
        "sigma": direction.sigma,
        "suspect": direction.suspect,
        "targets": _readout_dict(direction.targets),
        "triggers": _readout_dict(direction.triggers),
    }


def _readout_dict(readout: Readout | None) -> dict[str, Any] | None:
    if readout is None:
        return None
    return {
        sign: [{"id": t.id, "token": t.token, "cosine": t.score} for t in matches]
        for sign, matches in (("positive", readout.positive), ("negative", readout.negative))
    }


def _rows_dict(rows: RowChanges) -> dict[str, Any]:
    return {
        "tensor": rows.tensor,
        "rows": rows.rows,
        "changedRows": rows.changed_rows,
        "top": [{"id": t.id, "token": t.token, "deltaNorm": t.score} for t in rows.top],
    }
