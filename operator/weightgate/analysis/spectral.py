"""The spectral profile of a weight change ΔW: a sketch in the census pass, exact if it matters.

For a changed tensor viewed as a matrix (rows = first dimension), the census pass also
takes the range sketch Y = ΔW·Ω with a Gaussian Ω of ``RANGE_WIDTH`` columns, a block of
rows at a time (memory O(rows·k), never the matrix). Y alone *screens*: its singular values
show how many directions stand out of the rest and what share of the change they hold, but
only roughly (one Gaussian draw per direction). A matrix the screen finds low-rank is read
once more to *refine*: with Q = orth(Y), the singular values of Qᵀ·ΔW are those of ΔW's top
part (Halko, Martinsson and Tropp, SIAM Review 2011, algorithms 4.1 and 5.1). A fine-tune
changes every matrix densely, so only the few suspects pay for a second read.

Statistics (``‖·‖`` is the Frobenius norm, exact, from the census):

* ``sigma``: the top ``TOP_K`` singular values of ΔW (estimated unless ``refined``);
* ``stable_rank``: ‖ΔW‖² / s1² (1 for a rank-one edit, large for a dense fine-tune delta);
* ``rank``: how many leading singular values stand out: s_i more than ``RANK_GAP`` times the
  median of the lower half of the top ``TOP_K`` (the noise floor, at least
  ``NUMERICAL_FLOOR`` of s1). Quantisation noise or a
  light fine-tune on top of an edit raises the floor, not this count;
* ``rank_energy``: the share of ‖ΔW‖² in those ``rank`` directions;
* ``entropy``: the Shannon entropy (bits) of s_i² / sum(s_j²) over the top ``TOP_K``.

ROME writes a rank-one ΔW into one matrix, MEMIT low-rank ones into a few, a merged LoRA
backdoor a rank-r one; a fine-tune spreads a dense, slowly decaying spectrum everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.floating[Any]]
TOP_K = 16
RANGE_WIDTH = 24
RANK_GAP = 3.0
NUMERICAL_FLOOR = 1e-4
"""The noise floor is at least this share of s1: a change of exactly rank r leaves values at
float32 rounding level below it, which would otherwise all stand out of a floor near 0."""


@dataclass(frozen=True)
class SpectralProfile:
    """The spectrum of one tensor's change; see the module docstring."""

    name: str
    sigma: tuple[float, ...]
    stable_rank: float
    rank: int
    rank_energy: float
    entropy: float
    refined: bool


@dataclass(frozen=True)
class SingularDirections:
    """ΔW's top singular triplets: ΔW ≈ Σ sigma[i]·left[:, i]·right[i]ᵀ.

    ``left`` (rows x k) lives in the matrix's output space (its first dimension), ``right``
    (k x cols) in its input space; each pair's sign is arbitrary (-u, -v is as good).
    """

    name: str
    sigma: npt.NDArray[np.float64]
    left: npt.NDArray[np.float64]
    right: npt.NDArray[np.float64]


class DeltaSketch:
    """The range sketch Y = ΔW·Ω, fed one block of rows of ΔW at a time."""

    def __init__(self, rows: int, cols: int, seed: int = 0) -> None:
        self.width = min(RANGE_WIDTH, rows, cols)
        rng = np.random.default_rng(seed)
        self.omega = rng.standard_normal((cols, self.width), dtype=np.float32)
        self.range = np.zeros((rows, self.width), dtype=np.float32)

    def add(self, first_row: int, block: Matrix) -> None:
        """Fold rows ``first_row ...`` of ΔW into the sketch."""
        rows = block.astype(np.float32, copy=False)
        self.range[first_row : first_row + rows.shape[0]] = rows @ self.omega

    def estimate(self, name: str) -> SpectralProfile:
        """The screen: statistics from Y alone (scale-free ratios; sigma roughly scaled)."""
        values = np.linalg.svd(self.range.astype(np.float64), compute_uv=False)
        total = float(np.sum(values**2))  # E‖Y‖² = width·‖ΔW‖²
        sigma = values[:TOP_K] / np.sqrt(self.width)
        return spectrum_profile(name, sigma, np.sqrt(total / self.width), refined=False)

    def refine(
        self, name: str, blocks: Iterable[tuple[int, Matrix]], delta_norm: float
    ) -> SpectralProfile:
        """The exact top of the spectrum from a second read of ΔW's row blocks."""
        return self.refine_directions(name, blocks, delta_norm, keep=0)[0]

    def refine_directions(
        self, name: str, blocks: Iterable[tuple[int, Matrix]], delta_norm: float, keep: int
    ) -> tuple[SpectralProfile, SingularDirections]:
        """:meth:`refine`, also keeping the top ``keep`` singular vectors (for the evidence).

        With B = QᵀΔW = U_B·S·V_Bᵀ, ΔW's top left vectors are Q·U_B and its right vectors
        V_B's rows: memory O((rows + cols)·keep) beyond the sketch.
        """
        basis, _ = np.linalg.qr(self.range.astype(np.float64))
        projected = np.zeros((basis.shape[1], self.omega.shape[0]))
        for first_row, block in blocks:
            projected += basis[first_row : first_row + block.shape[0]].T @ block
        left, sigma, right = np.linalg.svd(projected, full_matrices=False)
        profile = spectrum_profile(
            name, np.asarray(sigma[:TOP_K], dtype=np.float64), delta_norm, refined=True
        )
        kept = min(keep, sigma.size)
        directions = SingularDirections(
            name, sigma[:kept].copy(), basis @ left[:, :kept], right[:kept].copy()
        )
        return profile, directions


def spectrum_profile(
    name: str, sigma: npt.NDArray[np.float64], delta_norm: float, *, refined: bool
) -> SpectralProfile:
    """The statistics of the top singular values ``sigma`` of a change of norm ``delta_norm``."""
    total = delta_norm**2
    if total == 0 or sigma.size == 0 or sigma[0] == 0 or not np.isfinite(sigma).all():
        return SpectralProfile(name, (), 0.0, 0, 0.0, 0.0, refined)
    floor = float(np.median(sigma[len(sigma) // 2 :])) if len(sigma) > 1 else 0.0
    floor = max(floor, NUMERICAL_FLOOR * float(sigma[0]))
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
        refined=refined,
    )
