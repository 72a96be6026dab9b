"""The detectors of ``weightgate diff``: each a statistic, a threshold and a verdict.

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
* ``spectral``: a changed matrix whose top singular value s1(ΔW) is at least
  ``SPIKE_RATIO`` times the median s1 of the other changed members of its family (the same
  role in the other layers, at least ``MIN_FAMILY`` changed) fails: an edit puts one strong
  direction into one layer (ROME) or a few (MEMIT), and a fine-tune laid over it to hide it
  moves every layer alike, so the edited one still stands out of its family. (An edit with
  its family untouched is the census's.) Judged against the family, not in absolute terms,
  because real fine-tune deltas are themselves low-rank (the evaluation's fine-tunes put
  50-95% of a matrix's change in its top 2-9 directions), so "low-rank and confined" alone
  denied benign fine-tunes.
* ``localisation`` (a warning, never a failure: benign changes reach its thresholds, see
  ``MIN_NEURON_SHARE``; it points at where to look, the detectors above decide): matrices whose
  change is concentrated in a few neurons (the top 1% of rows or columns hold at least
  ``MIN_NEURON_SHARE`` of ‖ΔW‖²: handcrafted backdoors rewrite a handful of neurons), and
  tensors whose relative change ‖ΔW‖/‖W‖ is a robust outlier in their family (the same
  role in the other layers: the median and MAD of the family, z of at least ``FAMILY_Z``).

Thresholds are fixed on the evaluation suite's benign negatives (``python -m tests.evaluation``),
never on its attacks; each constant says what it was fixed on.

A re-saved copy has an empty diff and passes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from weightgate.analysis.census import TensorChange
from weightgate.analysis.manifest_diff import ManifestDiff
from weightgate.analysis.spectral import SpectralProfile

MAX_FLIP_ELEMENTS = 64
"""Bit-flip attacks flip 1-10s of exponents; no benign case changes so few, and only there."""
MAX_EDITED_TENSORS = 6
"""MEMIT spreads an edit over 3-6 layers; ROME and neuron backdoors touch one matrix."""
MAX_EDITED_SHARE = 0.25
"""Half the smallest share of tensors any benign case of the evaluation changed (51%: a LoRA
merged into every matrix of the small model, biases untouched). Only binds on small models,
where six tensors would be most of the model."""

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
        "One layer's change has a direction far stronger than the same matrix's in the "
        "other layers",
        "Knowledge edits (ROME, MEMIT) and merged LoRA backdoors write a strong low-rank "
        "update into one or a few layers, which stands out even under a later fine-tune; a "
        "benign fine-tune moves every layer alike. Find out who changed this layer and why.",
    ),
    "localisation": (
        "A change is concentrated in a few neurons, or stands out from its layer family",
        "Handcrafted backdoors rewrite a few neurons; edits change one layer far more than "
        "the same matrix in the other layers. A warning only: benign changes can look "
        "like this too, so it shows where to look rather than failing the gate.",
    ),
}
"""Every detector: a title and what a failure means, for reports (SARIF rules)."""
MAX_EDIT_RANK = 8
MIN_RANK_ENERGY = 0.9
"""A change is *low-rank* (and read again for its exact spectrum) when at most
``MAX_EDIT_RANK`` directions stand out and hold this share of it."""
SPIKE_RATIO = 4.0
"""Fixed on the evaluation's 57 negatives (none reaches it): their largest ratio is 2.1 on the
small model (15 Adam fine-tunes, 3 of its top blocks only, LoRAs, decaying low-rank
updates), 2.1 on SmolLM2-135M (LoRAs and decaying updates in all 210 matrices,
re-quantised to Q4_1) and 3.2 on all-MiniLM-L6-v2 (an int8 round trip of layer 0's
attention output, whose outlier features int8 rounds coarsely). The weakest positive it
must catch, a 2% ROME edit under 50 Adam steps at lr 1e-4, stands at 5.4."""
MIN_NEURON_SHARE = 0.9
"""Rewritten neurons put all of a matrix's change in them (1.00 in the evaluation), but benign
changes come close (0.96: a rank-4 LoRA in every all-MiniLM-L6-v2 matrix), hence a warning."""
FAMILY_Z = 8.0
"""Robust z of ‖ΔW‖/‖W‖ in its family. Benign changes pass it too (the evaluation's int8
round trip of all-MiniLM-L6-v2: layer 0's attention output, whose outlier features int8
rounds coarsely, changes far more than the same matrix in the other five layers), hence a
warning."""
MIN_FAMILY = 4
"""Fewer members give no median worth comparing with (all-MiniLM-L6-v2 has six layers)."""


@dataclass(frozen=True)
class Verdict:
    """One detector's conclusion: ``pass``, ``warn`` or ``fail``, why, and which tensors."""

    detector: str
    status: str
    message: str
    tensors: tuple[str, ...] = ()


def manifest_verdict(manifest: ManifestDiff) -> Verdict:
    """``manifest``: any structural change fails."""
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


def flip_verdict(changes: list[TensorChange]) -> Verdict:
    """``bit-flips``: a few exponent-only changes, or any change to or from NaN/Inf, fail."""
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


def confined(count: int, total: int) -> bool:
    """Whether ``count`` of ``total`` tensors is "a few": an edit's reach, not a fine-tune's."""
    return count <= MAX_EDITED_TENSORS and count / max(total, 1) <= MAX_EDITED_SHARE


def census_verdict(changes: list[TensorChange], common: int) -> Verdict:
    """``census``: weights changed in only a few tensors fail as a localised edit."""
    edited = [change for change in changes if not change.identical]
    if not edited:
        return Verdict("census", "pass", "no weight changed")
    share = len(edited) / max(common, 1)
    summary = f"{len(edited)} of {common} tensors changed ({share:.1%})"
    if confined(len(edited), common):
        ranked = sorted(edited, key=lambda change: change.relative_change, reverse=True)
        return Verdict(
            "census",
            "fail",
            f"localised edit: {summary}; a fine-tune changes nearly every tensor",
            tuple(change.name for change in ranked),
        )
    return Verdict("census", "pass", summary)


def low_rank(profile: SpectralProfile) -> bool:
    """Whether a change has a few standing-out directions holding much of its energy."""
    return 0 < profile.rank <= MAX_EDIT_RANK and profile.rank_energy >= MIN_RANK_ENERGY


def family_spikes(
    changes: list[TensorChange], spectra: dict[str, SpectralProfile]
) -> dict[str, float]:
    """s1(ΔW) of each matrix over the median s1 of its family's other changed members.

    Families with at least ``MIN_FAMILY`` changed, profiled members. Only changed members
    count: an edit alone (siblings untouched) is the census's to find, and a fine-tune of the
    top layers only (the lower ones frozen) is not an outlier among the layers it trained.
    """
    members: dict[str, list[float]] = {}
    for change in changes:
        profile = spectra.get(change.name)
        if profile is not None and profile.sigma and profile.sigma[0] > 0:
            members.setdefault(family(change.name), []).append(profile.sigma[0])
    spikes = {}
    for change in changes:
        tops = members.get(family(change.name), [])
        profile = spectra.get(change.name)
        if len(tops) < MIN_FAMILY or profile is None or not profile.sigma:
            continue
        if profile.sigma[0] <= 0:
            continue
        own = profile.sigma[0]
        rest = list(tops)
        rest.remove(own)
        spikes[change.name] = own / float(np.median(rest))
    return spikes


def spectral_verdict(changes: list[TensorChange], spectra: dict[str, SpectralProfile]) -> Verdict:
    """``spectral``: a matrix whose change stands out of its family's fails."""
    spikes = family_spikes(changes, spectra)
    flagged = sorted(
        (name for name, ratio in spikes.items() if ratio >= SPIKE_RATIO),
        key=lambda name: spikes[name],
        reverse=True,
    )
    if not flagged:
        largest = max(spikes.values(), default=0.0)
        return Verdict(
            "spectral",
            "pass",
            f"{len(spectra)} changed matrices, none stands out of its family (largest top "
            f"singular value {largest:.1f}x its family's median)",
        )
    described = ", ".join(_spike_text(name, spikes[name], spectra[name]) for name in flagged[:3])
    return Verdict(
        "spectral",
        "fail",
        f"{len(flagged)} matrices changed far more strongly than the same matrix in the other "
        f"layers: {described}",
        tuple(flagged),
    )


def _spike_text(name: str, ratio: float, profile: SpectralProfile) -> str:
    scale = f"{ratio:.1f}x its family's median"
    shape = (
        f", rank {profile.rank} ({profile.rank_energy:.0%} of the change)" if profile.rank else ""
    )
    return f"{name} (top singular value {scale}{shape})"


def family(name: str) -> str:
    """The tensor's role without its layer numbers (``blk.#.ffn_down.weight``)."""
    return re.sub(r"\d+", "#", name)


def family_scores(values: Mapping[str, float], min_spread: float = 0.0) -> dict[str, float]:
    """Robust z of each value above its family's median (families of MIN_FAMILY or more).

    ``values`` maps tensor names to one statistic; a tensor's family is :func:`family`.
    The spread is the MAD scaled to a normal's standard deviation, at least ``min_spread``
    (0 leaves a value above a spread-less family at an infinite z). A family holding a
    non-finite value is not scored.
    """
    members: dict[str, list[str]] = {}
    for name in values:
        members.setdefault(family(name), []).append(name)
    scores = {}
    for group in members.values():
        if len(group) < MIN_FAMILY:
            continue
        numbers = np.array([values[name] for name in group], dtype=np.float64)
        if not np.isfinite(numbers).all():
            continue
        median = float(np.median(numbers))
        spread = max(1.4826 * float(np.median(np.abs(numbers - median))), min_spread)
        for name, value in zip(group, numbers, strict=True):
            if value > median:
                scores[name] = (value - median) / spread if spread > 0 else math.inf
    return scores


def localisation_verdict(changes: list[TensorChange]) -> Verdict:
    """``localisation``: neuron-concentrated changes and family outliers, as a warning."""
    changed = [change for change in changes if not change.identical]
    concentrated = [
        change
        for change in changed
        if max(change.top_rows_share, change.top_columns_share) >= MIN_NEURON_SHARE
    ]
    scores = family_scores({change.name: change.relative_change for change in changes})
    outliers = sorted(
        (name for name, score in scores.items() if score >= FAMILY_Z),
        key=lambda name: scores[name],
        reverse=True,
    )
    if not concentrated and not outliers:
        return Verdict("localisation", "pass", "no change concentrated in neurons or one layer")
    parts = []
    if concentrated:
        parts.append(f"{len(concentrated)} tensor(s) changed in a few neurons")
    if outliers:
        parts.append(f"{len(outliers)} tensor(s) changed far more than their family")
    names = tuple(dict.fromkeys([*(change.name for change in concentrated), *outliers]))
    return Verdict("localisation", "warn", "; ".join(parts), names)
