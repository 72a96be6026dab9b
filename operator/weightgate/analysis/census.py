"""The change census of one tensor: how many elements changed, by how much, and how.

Statistics, over the stored elements of a tensor present in both versions:

* ``changed``: elements whose stored bit pattern differs (for block-quantised GGUF types,
  whose decoded value differs): a real fine-tune changes nearly all of them, a surgical
  edit few, a re-save none;
* ``exponent_flips``: changed elements whose bits differ *only* in the exponent field, the
  signature of bit-flip attacks (flipping one exponent bit scales a weight by 2^(2^k));
* ``max_abs_delta``, ``delta_norm`` and ``base_norm`` (so ‖Δ‖/‖W‖), on the decoded values.

Both tensors are read in lockstep, one chunk at a time. Stored bytes are compared first: an
unchanged tensor costs one memory comparison and is never decoded (its norm is not needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from weightgate.analysis.dtypes import ELEMENT_TYPES
from weightgate.analysis.tensor_info import CHUNK_ELEMENTS
from weightgate.analysis.tensors import ModelTensors

_COMPARE_CHUNK = 8 << 20


@dataclass(frozen=True)
class TensorChange:
    """The census of one tensor."""

    name: str
    elements: int
    changed: int
    exponent_flips: int
    max_abs_delta: float
    delta_norm: float
    base_norm: float
    """‖W‖ of the baseline; computed only for changed tensors (0 for identical ones)."""

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


def census(baseline: ModelTensors, candidate: ModelTensors, name: str) -> TensorChange:
    """Compare tensor ``name`` (same shape and dtype in both) element by element."""
    info = baseline.tensors[name]
    if _same_bytes(baseline, candidate, name):
        return TensorChange(name, info.size, 0, 0, 0.0, 0.0, 0.0)
    element = ELEMENT_TYPES.get(info.dtype)
    changed = flips = 0
    max_delta = delta_squares = base_squares = 0.0
    if element is not None:
        step = CHUNK_ELEMENTS * element.itemsize
        pairs = zip(baseline.raw_chunks(name, step), candidate.raw_chunks(name, step), strict=True)
        for old_raw, new_raw in pairs:
            old_bits = np.frombuffer(old_raw, dtype=element.bits)
            new_bits = np.frombuffer(new_raw, dtype=element.bits)
            difference = old_bits ^ new_bits
            moved = difference != 0
            count = int(np.count_nonzero(moved))
            old = element.decode(old_raw)
            base_squares += float(np.dot(old, old))
            if not count:
                continue
            changed += count
            if element.exponent_mask:
                only_exponent = (difference & ~np.array(element.exponent_mask, element.bits)) == 0
                flips += int(np.count_nonzero(moved & only_exponent))
            delta = element.decode(new_raw)[moved] - old[moved]
            max_delta, delta_squares = _accumulate(delta, max_delta, delta_squares)
    else:  # block-quantised: compare decoded values
        pairs_values = zip(baseline.values(name), candidate.values(name), strict=True)
        for old, new in pairs_values:
            base_squares += float(np.dot(old, old))
            moved = old != new
            count = int(np.count_nonzero(moved))
            if count:
                changed += count
                max_delta, delta_squares = _accumulate(
                    new[moved] - old[moved], max_delta, delta_squares
                )
    return TensorChange(
        name, info.size, changed, flips, max_delta, math.sqrt(delta_squares),
        math.sqrt(base_squares),
    )  # fmt: skip


def _same_bytes(baseline: ModelTensors, candidate: ModelTensors, name: str) -> bool:
    pairs = zip(
        baseline.raw_chunks(name, _COMPARE_CHUNK), candidate.raw_chunks(name, _COMPARE_CHUNK),
        strict=True,
    )  # fmt: skip
    return all(
        np.array_equal(np.frombuffer(old, np.uint8), np.frombuffer(new, np.uint8))
        for old, new in pairs
    )


def _accumulate(
    delta: np.ndarray[tuple[int], np.dtype[np.float64]], max_delta: float, squares: float
) -> tuple[float, float]:
    # A change to or from NaN/Inf is the largest change there is.
    magnitude = np.abs(delta)
    magnitude[~np.isfinite(magnitude)] = math.inf
    return max(max_delta, float(magnitude.max())), squares + float(np.dot(magnitude, magnitude))
