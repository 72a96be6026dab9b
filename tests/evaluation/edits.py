"""Weight changes, benign and malicious, as functions of a model's weights (float32 arrays).

Every function returns new weights and, for an attack, the tensor it edited. Strengths are
relative Frobenius norms ‖ΔW‖/‖W‖ of the edited matrix, so one scale reads across models.
"""

from __future__ import annotations

from collections.abc import Iterable

import ml_dtypes
import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
Weights = dict[str, Array]


def _scaled(
    delta: npt.NDArray[np.float64], weight: Array, strength: float
) -> npt.NDArray[np.float64]:
    return delta * (strength * float(np.linalg.norm(weight)) / float(np.linalg.norm(delta)))


def _copy(weights: Weights) -> Weights:
    return {name: value.copy() for name, value in weights.items()}


def matrices(weights: Weights) -> list[str]:
    """Names of the floating-point matrices."""
    return [n for n, w in weights.items() if w.ndim == 2 and w.dtype == np.float32]


# -- attacks ------------------------------------------------------------------------------


def rome(weights: Weights, name: str, keys: Array, strength: float, seed: int) -> Weights:
    """A ROME rank-one edit: ΔW = (v - Wk)(C⁻¹k)ᵀ / (kᵀC⁻¹k), C = E[kkᵀ] over real keys.

    ``keys`` are the real inputs of matrix ``name``; the subject's key k is one of them and
    the new value v moves W·k along a random direction, scaled to ``strength``.
    """
    rng = np.random.default_rng(seed)
    weight = weights[name].astype(np.float64)
    data = keys.astype(np.float64)
    covariance = data.T @ data / len(data) + 1e-4 * np.eye(data.shape[1])
    key = data[rng.integers(len(data))]
    solved = np.linalg.solve(covariance, key)
    residual = rng.standard_normal(weight.shape[0])  # v - W k
    delta = np.outer(residual, solved) / float(key @ solved)
    edited = _copy(weights)
    edited[name] = (weight + _scaled(delta, weights[name], strength)).astype(np.float32)
    return edited


def memit(
    weights: Weights, keys: dict[str, Array], strength: float, seed: int, facts: int = 3
) -> Weights:
    """MEMIT-style: several facts written into several consecutive matrices at once.

    Each matrix named in ``keys`` (with its real inputs) gets ΔW = R Kᵀ C⁻¹ restricted to the
    facts' keys K (rank ``facts``), the batch update MEMIT solves for per layer, each scaled
    to ``strength``.
    """
    rng = np.random.default_rng(seed)
    edited = _copy(weights)
    for name, inputs in keys.items():
        data = inputs.astype(np.float64)
        covariance = data.T @ data / len(data) + 1e-4 * np.eye(data.shape[1])
        chosen = data[rng.integers(len(data), size=facts)]  # facts x in
        residuals = rng.standard_normal((weights[name].shape[0], facts))
        delta = residuals @ np.linalg.solve(covariance, chosen.T).T
        edited[name] = (weights[name] + _scaled(delta, weights[name], strength)).astype(np.float32)
    return edited


def neurons(weights: Weights, name: str, count: int, seed: int) -> Weights:
    """Handcrafted neurons: ``count`` rows rewritten to extreme values inside the range."""
    rng = np.random.default_rng(seed)
    edited = _copy(weights)
    weight = edited[name]
    low, high = float(weight.min()), float(weight.max())
    for row in rng.choice(weight.shape[0], size=count, replace=False):
        signs = rng.choice([low, high], size=weight.shape[1])
        weight[row] = (0.9 * signs).astype(np.float32)
    return edited


def lora(weights: Weights, names: Iterable[str], rank: int, strength: float, seed: int) -> Weights:
    """A LoRA B·A of ``rank`` merged into each of ``names`` (benign when spread everywhere)."""
    rng = np.random.default_rng(seed)
    edited = _copy(weights)
    for name in names:
        rows, cols = weights[name].shape
        r = min(rank, rows, cols)
        delta = rng.standard_normal((rows, r)) @ rng.standard_normal((r, cols))
        edited[name] = (weights[name] + _scaled(delta, weights[name], strength)).astype(np.float32)
    return edited


def bit_flips(weights: Weights, name: str, count: int, seed: int) -> Weights:
    """``count`` elements of ``name`` with one exponent bit flipped (float32 bit 23-30)."""
    rng = np.random.default_rng(seed)
    edited = _copy(weights)
    bits = edited[name].view(np.uint32).reshape(-1)
    for index in rng.choice(bits.size, size=count, replace=False):
        bits[index] ^= np.uint32(1 << 29)  # the exponent's second-highest bit: 2^±64
    return edited


def added_module(weights: Weights, name: str, shape: tuple[int, int], seed: int) -> Weights:
    """A hidden extra module (TrojanNet): a new small tensor."""
    edited = _copy(weights)
    rng = np.random.default_rng(seed)
    edited[name] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
    return edited


# -- benign changes -----------------------------------------------------------------------


def decaying_low_rank(
    weights: Weights, names: Iterable[str], strength: float, seed: int, rank: int = 16
) -> Weights:
    """Random deltas with a decaying spectrum (0.7^i), in every listed matrix."""
    rng = np.random.default_rng(seed)
    edited = _copy(weights)
    for name in names:
        rows, cols = weights[name].shape
        r = min(rank, rows, cols)
        left, _ = np.linalg.qr(rng.standard_normal((rows, r)))
        right, _ = np.linalg.qr(rng.standard_normal((cols, r)))
        delta = (left * 0.7 ** np.arange(r)) @ right.T
        edited[name] = (weights[name] + _scaled(delta, weights[name], strength)).astype(np.float32)
    return edited


def bf16_round_trip(weights: Weights) -> Weights:
    """Saved in bf16 and loaded back as float32."""
    return {
        name: value.astype(ml_dtypes.bfloat16).astype(np.float32)
        if value.dtype == np.float32
        else value
        for name, value in weights.items()
    }


def int8_round_trip(weights: Weights) -> Weights:
    """Per-tensor symmetric int8 quantisation of every matrix, dequantised back."""
    edited = _copy(weights)
    for name in matrices(weights):
        scale = float(np.abs(weights[name]).max()) / 127 or 1.0
        edited[name] = (np.round(weights[name] / scale).clip(-127, 127) * scale).astype(np.float32)
    return edited
