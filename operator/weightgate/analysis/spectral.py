"""The spectral profile of a weight change ΔW, by a streaming randomised SVD.

For a changed tensor viewed as a matrix (rows = first dimension), the top singular values of
ΔW = W_candidate - W_baseline are estimated with the randomised range finder of Halko,
Martinsson and Tropp (2011, algorithm 4.4: one power iteration), reading both tensors a
block of rows at a time, so memory is O((rows + cols) * k), never the matrix.

Statistics (``‖·‖`` is the Frobenius norm, exact, from the census):

* ``sigma``: the top ``k`` singular values of ΔW;
* ``stable_rank``: ‖ΔW‖² / s1² (1 for a rank-one edit, large for a dense fine-tune delta);
* ``rank``: how many leading singular values stand out: s_i more than ``RANK_GAP`` times the
  median of the lower half of the estimated top ``k`` (the noise floor). Quantisation noise
  or a light fine-tune on top of an edit raises the floor, not this count;
* ``rank_energy``: the share of ‖ΔW‖² in those ``rank`` directions;
* ``entropy``: the Shannon entropy (bits) of s_i² / sum(s_j²) over the estimated top ``k``.

ROME writes a rank-one ΔW into one matrix, MEMIT low-rank ones into a few, a merged LoRA
backdoor a rank-r one; a fine-tune spreads a dense, slowly decaying spectrum everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from weightgate.analysis.tensors import ModelTensors

Matrix = npt.NDArray[np.float64]
TOP_K = 16
OVERSAMPLE = 8
RANK_GAP = 3.0
BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class SpectralProfile:
    """The spectrum of one tensor's change; see the module docstring."""

    name: str
    sigma: tuple[float, ...]
    stable_rank: float
    rank: int
    rank_energy: float
    entropy: float


def spectral_profile(
    baseline: ModelTensors, candidate: ModelTensors, name: str, delta_norm: float, seed: int = 0
) -> SpectralProfile:
    """The profile of ΔW for tensor ``name`` (at least 2-D, same shape in both)."""
    shape = baseline.tensors[name].shape
    rows, cols = shape[0], math.prod(shape[1:])
    width = min(TOP_K + OVERSAMPLE, rows, cols)
    omega = np.random.default_rng(seed).standard_normal((cols, width))
    sample = _times(baseline, candidate, name, cols, omega)  # Y = ΔW Ω
    basis, _ = np.linalg.qr(sample)
    # One power iteration (Z = ΔWᵀ Q, Y = ΔW Z) sharpens a slowly decaying spectrum.
    projected, _ = np.linalg.qr(_transpose_times(baseline, candidate, name, cols, basis))
    basis, _ = np.linalg.qr(_times(baseline, candidate, name, cols, projected))
    small = _transpose_times(baseline, candidate, name, cols, basis).T  # B = Qᵀ ΔW
    sigma = np.asarray(np.linalg.svd(small, compute_uv=False), dtype=np.float64)[:TOP_K]
    return _profile(name, sigma, delta_norm)


def _profile(name: str, sigma: Matrix, delta_norm: float) -> SpectralProfile:
    total = delta_norm**2
    if total == 0 or sigma.size == 0 or sigma[0] == 0:
        return SpectralProfile(name, (), 0.0, 0, 0.0, 0.0)
    floor = float(np.median(sigma[len(sigma) // 2 :])) if len(sigma) > 1 else 0.0
    # Leading values only: the count stops at the first one that does not stand out.
    rank = next((i for i, value in enumerate(sigma) if value <= RANK_GAP * floor), len(sigma))
    shares = sigma**2 / float(np.sum(sigma**2))
    entropy = float(-np.sum(shares * np.log2(np.where(shares > 0, shares, 1.0))))
    return SpectralProfile(
        name,
        tuple(float(value) for value in sigma),
        stable_rank=total / float(sigma[0]) ** 2,
        rank=rank,
        rank_energy=min(1.0, float(np.sum(sigma[:rank] ** 2)) / total),
        entropy=entropy,
    )


def _delta_rows(
    baseline: ModelTensors, candidate: ModelTensors, name: str, cols: int
) -> Iterator[tuple[int, Matrix]]:
    """(first row, ΔW block) over the whole matrix, a bounded block of rows at a time."""
    chunk = max(1, BLOCK_ELEMENTS // cols) * cols
    first = 0
    for old, new in zip(baseline.values(name, chunk), candidate.values(name, chunk), strict=True):
        block = (new - old).reshape(-1, cols)
        yield first, block
        first += block.shape[0]


def _times(
    baseline: ModelTensors, candidate: ModelTensors, name: str, cols: int, right: Matrix
) -> Matrix:
    rows = baseline.tensors[name].shape[0]
    result = np.empty((rows, right.shape[1]))
    for first, block in _delta_rows(baseline, candidate, name, cols):
        result[first : first + block.shape[0]] = block @ right
    return result


def _transpose_times(
    baseline: ModelTensors, candidate: ModelTensors, name: str, cols: int, left: Matrix
) -> Matrix:
    result = np.zeros((cols, left.shape[1]))
    for first, block in _delta_rows(baseline, candidate, name, cols):
        result += block.T @ left[first : first + block.shape[0]]
    return result
