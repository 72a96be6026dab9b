"""``weightgate diff``: compare a candidate with the last admitted version, tensor by tensor.

Both models are opened for streaming (:mod:`.tensors`); their tensor lists are compared
(:mod:`.manifest_diff`); every common tensor gets its census (:mod:`.census`) and, if it is
a changed matrix, the profile of its change (:mod:`.spectral`), two tensors at once; then each
detector gives its verdict (:mod:`.detectors`), and for a language model the evidence names
candidate trigger and target tokens (:mod:`.evidence`, informational). The report renders
as text, JSON (:mod:`.report`) or SARIF (:mod:`.sarif`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from threadpoolctl import threadpool_limits

from weightgate.analysis.census import TensorChange, census, delta_blocks
from weightgate.analysis.detectors import (
    Verdict,
    census_verdict,
    flip_verdict,
    localisation_verdict,
    low_rank,
    manifest_verdict,
    spectral_verdict,
)
from weightgate.analysis.evidence import DIRECTIONS, Evidence, SuspectDirections, read_evidence
from weightgate.analysis.manifest_diff import ManifestDiff, diff_manifests
from weightgate.analysis.spectral import TOP_K, DeltaSketch, SingularDirections, SpectralProfile
from weightgate.analysis.tensors import ModelTensors, open_model
from weightgate.errors import InputError

MIN_SHARED_TENSORS = 0.5
"""Two models sharing fewer of their tensors are different architectures, not versions."""
MIN_PROFILED_SIDE = 2 * TOP_K
"""A matrix whose whole spectrum fits in the profile's window (a 10-class head) has no
noise floor to stand out from: its rank says nothing, so it is not profiled."""


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
    evidence: Evidence | None = None
    """Candidate trigger and target tokens (:mod:`.evidence`): informational, never a verdict."""

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


def diff_models(
    baseline: Path,
    candidate: Path,
    *,
    baseline_name: str | None = None,
    candidate_name: str | None = None,
) -> DiffReport:
    """Compare two model directories (or files) tensor by tensor.

    A name is what the report and errors call a model whose path means nothing to the user
    (a fetched model laid out in a temporary directory: its URI); by default, the path.

    Raises:
        InputError: Either side is missing, malformed or truncated, or the two are
            different models rather than versions of one.
    """
    before_name, after_name = baseline_name or str(baseline), candidate_name or str(candidate)
    with ExitStack() as stack:
        before = open_model(baseline, stack, name=baseline_name)
        after = open_model(candidate, stack, name=candidate_name)
        manifest = diff_manifests(before, after)
        shared = len(manifest.common) + len(manifest.renamed)
        if shared < MIN_SHARED_TENSORS * max(len(before.tensors), len(after.tensors)):
            raise InputError(
                f"{before_name} and {after_name} share {shared} of "
                f"{len(before.tensors)} and {len(after.tensors)} tensors: different "
                "architectures, not two versions"
            )
        report = DiffReport(before_name, after_name, manifest)
        for tensors in (before.tensors, after.tensors):  # the candidate's place wins
            report.locations.update({name: (t.file, t.offset) for name, t in tensors.items()})
        report.matrices = sum(_is_matrix(before.tensors[name].shape) for name in manifest.common)

        suspects = SuspectDirections(after)

        def compare(name: str) -> tuple[TensorChange, SpectralProfile | None]:
            change, profile, kept = _compare(before, after, name)
            if kept is not None:  # in the worker: what is not kept is freed right away
                suspects.add(change, kept)
            return change, profile

        # numpy releases the GIL in the work that matters: one tensor per core, each with one
        # BLAS thread (a BLAS pool per worker on the same cores made SmolLM2 diffs 3-8x slower).
        with (
            threadpool_limits(limits=1, user_api="blas"),
            ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool,
        ):
            for change, profile in pool.map(compare, manifest.common):
                report.changes.append(change)
                if profile is not None:
                    report.spectra[change.name] = profile
        report.evidence = read_evidence(before, after, report.changes, report.spectra, suspects)
    report.verdicts = [
        manifest_verdict(manifest),
        flip_verdict(report.changes),
        census_verdict(report.changes, len(manifest.common)),
        spectral_verdict(report.changes, report.spectra),
        localisation_verdict(report.changes),
    ]
    return report


_Compared = tuple[TensorChange, SpectralProfile | None, SingularDirections | DeltaSketch | None]


def _compare(before: ModelTensors, after: ModelTensors, name: str) -> _Compared:
    """The census of one tensor and, for a changed matrix, the profile of its change.

    For the evidence, a suspect also gives its top singular directions, another profiled
    change the sketch of it taken in the census pass.
    """
    shape = before.tensors[name].shape
    profiled = _is_matrix(shape) and min(shape[0], math.prod(shape[1:])) >= MIN_PROFILED_SIDE
    sketch = DeltaSketch(shape[0], math.prod(shape[1:])) if profiled else None
    change = census(before, after, name, sketch)
    if sketch is None or change.identical or change.non_finite:
        return change, None, None
    profile = sketch.estimate(name)
    if low_rank(profile):  # a suspect: read it again for the exact spectrum
        blocks = delta_blocks(before, after, name)
        profile, directions = sketch.refine_directions(name, blocks, change.delta_norm, DIRECTIONS)
        return change, profile, directions
    return change, profile, sketch


def _is_matrix(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and shape[0] >= 2 and math.prod(shape[1:]) >= 2
