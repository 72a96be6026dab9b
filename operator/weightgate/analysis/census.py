"""The change census of one tensor: how many elements changed, by how much, and how.

Statistics, over the stored elements of a tensor present in both versions:

* ``changed``: elements whose stored bit pattern differs (for block-quantised GGUF types,
  whose decoded value differs): a real fine-tune changes nearly all of them, a surgical
  edit few, a re-save none;
* ``exponent_flips``: changed elements whose bits differ *only* in the exponent field, the
  signature of bit-flip attacks (flipping one exponent bit scales a weight by 2^(2^k));
* ``non_finite``: changed elements that are or were NaN or infinite;
* ``max_abs_delta``, ``delta_norm`` and ``base_norm`` (so ‖Δ‖/‖W‖), on the decoded values;
* for matrices, ``top_rows_share`` and ``top_columns_share``: the share of ‖Δ‖² in the 1% of
  rows (columns) that changed most, at least one: near 1 when a few neurons were rewritten
  (handcrafted backdoors), near 0.01-0.05 for the dense change of a fine-tune;
* for matrices, ``changed_rows`` and ``largest_rows``: how many rows changed at all, and the
  ``CHANGED_ROWS`` with the largest ‖Δrow‖ (the evidence lists an embedding's this way).

Both tensors are read in lockstep, one block of rows at a time, and the same pass feeds the
spectral sketch of ΔW (:class:`~weightgate.analysis.spectral.DeltaSketch`) for matrices.
Stored bytes are compared first: an unchanged tensor costs one comparison, never a decode.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from weightgate.analysis.dtypes import ELEMENT_TYPES, Values
from weightgate.analysis.spectral import DeltaSketch
from weightgate.analysis.tensor_info import CHUNK_ELEMENTS
from weightgate.analysis.tensors import ModelTensors

_COMPARE_CHUNK = 8 << 20
CHANGED_ROWS = 16
"""Rows a matrix's census keeps by ‖Δrow‖ (an embedding's changed token rows, listed)."""
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TensorChange:
    """The census of one tensor."""

    name: str
    elements: int
    changed: int
    exponent_flips: int
    non_finite: int
    max_abs_delta: float
    delta_norm: float
    base_norm: float
    """‖W‖ of the baseline; computed only for changed tensors (0 for identical ones)."""
    top_rows_share: float = 0.0
    top_columns_share: float = 0.0
    changed_rows: int = 0
    """Rows (first dimension) with any change; matrices only."""
    largest_rows: tuple[tuple[int, float], ...] = ()
    """(row, ‖Δrow‖) of the ``CHANGED_ROWS`` most changed rows, largest first."""

    @property
    def identical(self) -> bool:
        """No element changed (bitwise, or by value for quantised types)."""
        return self.changed == 0

    @property
    def changed_fraction(self) -> float:
        """Changed elements over all elements."""
        return self.changed / self.elements if self.elements else 0.0

    @property
    def relative_change(self) -> float:
        """‖Δ‖/‖W‖ (infinite when the baseline is all zeros and something changed)."""
        if self.base_norm > 0:
            return self.delta_norm / self.base_norm
        return 0.0 if self.delta_norm == 0 else math.inf


class _Tally:
    def __init__(self) -> None:
        self.changed = self.flips = self.non_finite = 0
        self.max_delta = self.delta_squares = self.base_squares = 0.0

    def add(self, old: Values, new: Values, moved: Mask) -> Values:
        """Count one chunk; returns ΔW for it (0 where unchanged or not finite)."""
        self.base_squares += _squares(old)
        count = int(np.count_nonzero(moved))
        if not count:
            return np.zeros_like(old)
        self.changed += count
        delta = new - old
        largest = float(np.abs(delta).max())
        if not math.isfinite(largest):  # rare: NaN or Inf on either side
            delta[~moved] = 0  # NaN - NaN with equal bits is no change
            bad = ~np.isfinite(delta)
            self.non_finite += int(np.count_nonzero(bad))
            delta[bad] = 0
            largest = math.inf if bad.any() else float(np.abs(delta).max())
        self.max_delta = max(self.max_delta, largest)
        self.delta_squares += _squares(delta)
        return delta


def census(
    baseline: ModelTensors, candidate: ModelTensors, name: str, sketch: DeltaSketch | None = None
) -> TensorChange:
    """Compare tensor ``name`` (same shape and dtype in both); feed ``sketch`` if given."""
    info = baseline.tensors[name]
    if _same_bytes(baseline, candidate, name):
        return TensorChange(name, info.size, 0, 0, 0, 0.0, 0.0, 0.0)
    tally = _Tally()
    first_row = 0
    cols = _columns(info.shape, info.size)
    matrix = len(info.shape) > 1
    row_energy = np.zeros(info.shape[0] if matrix else 0)
    column_energy = np.zeros(cols if matrix else 0)
    for old, new, moved, flips in _chunks(baseline, candidate, name):
        tally.flips += flips
        block = tally.add(old, new, moved).reshape(-1, cols)
        if matrix:
            square = block * block
            row_energy[first_row : first_row + block.shape[0]] = square.sum(axis=1)
            column_energy += square.sum(axis=0)
        if sketch is not None:
            sketch.add(first_row, block)
        first_row += block.shape[0]
    return TensorChange(
        name, info.size, tally.changed, tally.flips, tally.non_finite, tally.max_delta,
        math.sqrt(tally.delta_squares), math.sqrt(tally.base_squares),
        _top_share(row_energy), _top_share(column_energy),
        int(np.count_nonzero(row_energy)), _largest_rows(row_energy),
    )  # fmt: skip


def _largest_rows(energy: Values) -> tuple[tuple[int, float], ...]:
    """(row, sqrt(energy)) of the ``CHANGED_ROWS`` largest nonzero entries (ties by row)."""
    changed = np.flatnonzero(energy)
    top = changed[np.argsort(-energy[changed], kind="stable")[:CHANGED_ROWS]]
    return tuple((int(row), math.sqrt(energy[row])) for row in top)


def _top_share(energy: Values) -> float:
    """The share of the total in the largest 1% of entries (at least one)."""
    total = float(energy.sum())
    if not energy.size or total <= 0:
        return 0.0
    count = max(1, energy.size // 100)
    return float(np.partition(energy, energy.size - count)[-count:].sum()) / total


def delta_blocks(
    baseline: ModelTensors, candidate: ModelTensors, name: str
) -> Iterator[tuple[int, Values]]:
    """(first row, block of ΔW) over a matrix, as the census saw it (non-finite -> 0)."""
    info = baseline.tensors[name]
    cols = _columns(info.shape, info.size)
    first_row = 0
    for old, new, moved, _ in _chunks(baseline, candidate, name):
        delta = np.where(moved, new - old, 0)
        delta[~np.isfinite(delta)] = 0
        block = delta.reshape(-1, cols)
        yield first_row, block
        first_row += block.shape[0]


def _columns(shape: tuple[int, ...], size: int) -> int:
    return math.prod(shape[1:]) if len(shape) > 1 else max(size, 1)


def _chunks(
    baseline: ModelTensors, candidate: ModelTensors, name: str
) -> Iterator[tuple[Values, Values, Mask, int]]:
    """(old, new, changed mask, exponent-only flips) per block of whole rows, in lockstep."""
    info = baseline.tensors[name]
    cols = _columns(info.shape, info.size)
    chunk = max(1, CHUNK_ELEMENTS // cols) * cols if len(info.shape) > 1 else CHUNK_ELEMENTS
    kind = ELEMENT_TYPES.get(info.dtype)
    if kind is None:  # block-quantised: compare decoded values
        pairs = zip(baseline.values(name, chunk), candidate.values(name, chunk), strict=True)
        for old, new in pairs:
            yield old, new, old != new, 0
        return
    step = chunk * kind.itemsize
    raw = zip(baseline.raw_chunks(name, step), candidate.raw_chunks(name, step), strict=True)
    keep = np.array(~kind.exponent_mask & ((1 << (8 * kind.itemsize)) - 1), dtype=kind.bits)
    for old_raw, new_raw in raw:
        difference = np.frombuffer(old_raw, kind.bits) ^ np.frombuffer(new_raw, kind.bits)
        moved = difference != 0
        flips = 0
        if kind.exponent_mask:
            # Elements with no bit outside the exponent changed, minus those with none at all.
            unmoved = difference.size - int(np.count_nonzero(moved))
            flips = int(np.count_nonzero((difference & keep) == 0)) - unmoved
        yield kind.decode(old_raw), kind.decode(new_raw), moved, flips


def _same_bytes(baseline: ModelTensors, candidate: ModelTensors, name: str) -> bool:
    pairs = zip(
        baseline.raw_chunks(name, _COMPARE_CHUNK), candidate.raw_chunks(name, _COMPARE_CHUNK),
        strict=True,
    )  # fmt: skip
    return all(old == new for old, new in pairs)


def _squares(values: Values) -> float:
    # float32 dot products lose little over a chunk; the sum over chunks is in float64.
    return float(np.dot(values, values))
