"""Standalone weight statistics: what one model's tensors say without a baseline to diff.

Per tensor, in one pass over its decoded values (:meth:`ModelTensors.values`, a bounded
chunk at a time):

* ``non_finite``: elements that are NaN or infinite (no trained weight is; a NaN poisons
  every activation it touches, and an exponent bit flip can make one);
* ``rms``: ‖W‖/√n over the finite elements;
* ``max_abs``: the largest finite |w|;
* ``kurtosis``: the excess kurtosis m4/m2² - 3 of the finite elements (0 for a normal, large
  when a few weights stand far out of the rest).

Moments are exact and stable: each chunk's mean and its central sums (of d², d³, d⁴) are
taken in float64, then merged into the tensor's running moments with the pairwise update
of Chan, Golub and LeVeque (1979) as extended to the fourth moment by Pébay (2008), so no
raw power sum ever cancels catastrophically.

Family outliers (:func:`family_outliers`): a tensor's family is its role without layer
numbers (:func:`~weightgate.analysis.detectors.family`; families of at least
``MIN_FAMILY``). Within each, the robust z (median and MAD,
:func:`~weightgate.analysis.detectors.family_scores`) of log10 RMS, log10 max|w| and
log10 of the plain kurtosis m4/m2² is taken, above the median only: a layer scaled up
raises its RMS and max|w|, one weight blown up raises all three. The logs
make the scores ratios, so one threshold fits every scale.

Thresholds. Trained models have natural outliers — "super weights" (Yu et al. 2024) put
single weights at a hundred times their tensor's RMS (all-MiniLM-L6-v2's
``encoder.layer.0.output.dense.weight`` holds a 7.9 among weights of RMS 0.045) — so these
are warnings that never fail the gate. The largest family z of each statistic, measured on
the real all-MiniLM-L6-v2 (fp32 safetensors) and SmolLM2-135M (Q4_1 GGUF), is: RMS 3.3 /
3.0, max|w| 17.1 / 8.5, kurtosis 5.7 / 20.2. Each threshold (``OUTLIER_Z``) is at least
twice the larger of the two (``tests/analysis/test_standalone.py`` checks that margin on
both models). Spreads are floored at ``MIN_LOG_SPREAD`` so that a family whose members
agree to within a few percent (untrained norms) does not make a small difference infinite.

What that catches, simulated on every family member of both models from its measured
statistics: a matrix scaled 10x is flagged in 36 of 36 MiniLM and 208 of 210 SmolLM2
matrices (by RMS; SmolLM2's ``blk.0.attn_v`` and ``blk.29.attn_k`` vary too much across
layers); one weight of typical size scaled 10^4x in every matrix of both (by RMS and
max|w|). Vectors (biases, norms) vary more across layers: one scaled 10x is flagged in
25 of MiniLM's 60 and 58 of SmolLM2's 60. Tensors without a family (embeddings, heads)
get only the NaN/Inf count.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from weightgate.analysis.detectors import family, family_scores
from weightgate.analysis.dtypes import Values
from weightgate.analysis.tensor_info import CHUNK_ELEMENTS
from weightgate.analysis.tensors import ModelTensors

OUTLIER_Z = {"rms": 7.0, "max-abs": 35.0, "kurtosis": 45.0}
"""Robust z (on the log10 scale) from which a statistic is an outlier in its family."""
MIN_LOG_SPREAD = 0.02
"""Least spread of a family on the log10 scale (a factor of about 1.05)."""
_BLOCK = 8192
"""Elements whose central powers are taken at once: they stay in the cache as float64,
and stay under OpenBLAS's 10,000-element threshold for threading a dot product (its
threads, fighting the scan's own workers, made the pass ten times slower)."""


@dataclass(frozen=True)
class TensorStats:
    """The standalone statistics of one tensor; see the module docstring."""

    name: str
    elements: int
    non_finite: int
    rms: float
    max_abs: float
    kurtosis: float


@dataclass(frozen=True)
class Outlier:
    """A statistic of one tensor that stands far above the same statistic in its family."""

    name: str
    statistic: str
    """``rms``, ``max-abs`` or ``kurtosis``."""
    value: float
    """The statistic (for ``kurtosis``, the plain kurtosis m4/m2², the excess plus 3)."""
    family_median: float
    """The same statistic's median over the tensor's family."""
    z: float
    """Robust z on the log10 scale; at least ``OUTLIER_Z[statistic]``."""


@dataclass
class _Moments:
    """Count, mean and central sums M2, M3, M4 of the values seen so far."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    m4: float = 0.0

    def add(self, values: Values) -> None:
        """Fold in a chunk of finite values."""
        count = values.size
        mean = float(values.sum(dtype=np.float64)) / count
        m2 = m3 = m4 = 0.0
        centred = np.empty(min(count, _BLOCK))
        squared = np.empty_like(centred)
        for start in range(0, count, _BLOCK):
            block = values[start : start + _BLOCK]
            d, d2 = centred[: block.size], squared[: block.size]
            np.subtract(block, mean, out=d, dtype=np.float64)
            np.multiply(d, d, out=d2)
            m2 += float(d2.sum())
            m3 += float(np.dot(d2, d))
            m4 += float(np.dot(d2, d2))
        self._merge(count, mean, m2, m3, m4)

    def _merge(self, nb: int, mean_b: float, m2b: float, m3b: float, m4b: float) -> None:
        # Pébay (2008), eqs. 3.1 and 3.2 with p = 2, 3, 4.
        na, n = self.count, self.count + nb
        delta = mean_b - self.mean
        ratio = delta / n
        m4 = (
            self.m4 + m4b
            + delta * ratio**3 * na * nb * (na * na - na * nb + nb * nb)
            + 6 * ratio**2 * (na * na * m2b + nb * nb * self.m2)
            + 4 * ratio * (na * m3b - nb * self.m3)
        )  # fmt: skip
        m3 = (
            self.m3 + m3b
            + delta * ratio**2 * na * nb * (na - nb)
            + 3 * ratio * (na * m2b - nb * self.m2)
        )  # fmt: skip
        self.m2 += m2b + delta * ratio * na * nb
        self.m3, self.m4 = m3, m4
        self.mean += ratio * nb
        self.count = n


def tensor_stats(
    model: ModelTensors, name: str, chunk_elements: int = CHUNK_ELEMENTS
) -> TensorStats:
    """The statistics of tensor ``name``, in one pass over its values."""
    moments = _Moments()
    non_finite = 0
    largest = 0.0
    for chunk in model.values(name, chunk_elements):
        values = chunk
        if not np.isfinite(chunk).all():  # rare: count them, then leave them out
            finite = np.isfinite(chunk)
            non_finite += chunk.size - int(np.count_nonzero(finite))
            values = chunk[finite]
        if values.size:
            largest = max(largest, float(values.max()), -float(values.min()))
            moments.add(values)
    count = moments.count
    rms = math.sqrt(moments.m2 / count + moments.mean**2) if count else 0.0
    # A constant tensor has no spread to be tailed: it counts as normal (0).
    kurtosis = count * moments.m4 / moments.m2**2 - 3 if moments.m2 > 0 else 0.0
    return TensorStats(name, model.tensors[name].size, non_finite, rms, largest, kurtosis)


def model_stats(model: ModelTensors, workers: int | None = None) -> list[TensorStats]:
    """Every tensor's statistics, ``workers`` tensors at once (default: one per core)."""
    workers = workers or len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # numpy releases the GIL in the work that matters.
        return list(pool.map(lambda name: tensor_stats(model, name), model.tensors))


def family_outliers(stats: list[TensorStats]) -> list[Outlier]:
    """Statistics standing ``OUTLIER_Z`` or more above their family, highest z first."""
    found = []
    for statistic, scores in family_z(stats).items():
        values = {s.name: _statistic(s, statistic) for s in stats}
        members: dict[str, list[float]] = {}
        for name, value in values.items():
            members.setdefault(family(name), []).append(value)
        found += [
            Outlier(name, statistic, values[name], float(np.median(members[family(name)])), z)
            for name, z in scores.items()
            if z >= OUTLIER_Z[statistic]
        ]
    return sorted(found, key=lambda outlier: outlier.z, reverse=True)


def family_z(stats: list[TensorStats]) -> dict[str, dict[str, float]]:
    """Per statistic, the robust z of every tensor above its family's median (log10 scale)."""
    result = {}
    for statistic in OUTLIER_Z:
        logs = {
            s.name: math.log10(value)
            for s in stats
            if (value := _statistic(s, statistic)) > 0  # all-zero tensors have no log
        }
        result[statistic] = family_scores(logs, MIN_LOG_SPREAD)
    return result


def _statistic(stats: TensorStats, statistic: str) -> float:
    if statistic == "rms":
        return stats.rms
    if statistic == "max-abs":
        return stats.max_abs
    return stats.kurtosis + 3  # the plain kurtosis m4/m2², >= 1 (3 for a constant tensor)
