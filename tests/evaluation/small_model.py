"""A small residual MLP trained with numpy: a real model whose fine-tunes are real gradients.

``x -> E -> 12 x [h += W2·tanh(W1·h + b1) + b2] -> H -> logits``, 51 tensors of which 26
matrices, named as a checkpoint names them. It learns a Gaussian-mixture classification
task with minibatch Adam and hand-written backpropagation. A *fine-tune* continues training
on a shifted task from the trained weights, so its change is exactly what gradient descent
does to this model. ``block_inputs`` gives what each block's first matrix sees (the keys a
ROME-style edit of that matrix needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
Weights = dict[str, Array]
INPUTS, WIDTH, HIDDEN, BLOCKS, CLASSES = 32, 64, 128, 12, 10


@dataclass(frozen=True)
class Task:
    """Class centres and the noise around them."""

    centres: Array
    noise: float = 1.0

    def sample(self, rng: np.random.Generator, count: int) -> tuple[Array, npt.NDArray[np.int64]]:
        """``count`` labelled points."""
        labels = rng.integers(0, len(self.centres), size=count)
        noise = rng.standard_normal((count, INPUTS)).astype(np.float32)
        return (self.centres[labels] + self.noise * noise).astype(np.float32), labels


def base_task() -> Task:
    """The task the base model learns."""
    rng = np.random.default_rng(0)
    return Task((0.6 * rng.standard_normal((CLASSES, INPUTS))).astype(np.float32))


def shifted_task(task: Task, seed: int, moved: int = 3) -> Task:
    """The task with ``moved`` class centres displaced: what a fine-tune adapts to."""
    rng = np.random.default_rng(1000 + seed)
    centres = task.centres.copy()
    for label in rng.choice(CLASSES, size=moved, replace=False):
        centres[label] += (0.6 * rng.standard_normal(INPUTS)).astype(np.float32)
    return Task(centres, task.noise)


def initial_weights(seed: int) -> Weights:
    """Small-output residual initialisation, so the stream stays stable through 12 blocks."""
    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, int], scale: float) -> Array:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    weights = {"embed.weight": normal((WIDTH, INPUTS), INPUTS**-0.5)}
    for block in range(BLOCKS):
        weights[f"blocks.{block}.up.weight"] = normal((HIDDEN, WIDTH), WIDTH**-0.5)
        weights[f"blocks.{block}.up.bias"] = np.zeros(HIDDEN, dtype=np.float32)
        weights[f"blocks.{block}.down.weight"] = normal((WIDTH, HIDDEN), 0.3 * HIDDEN**-0.5)
        weights[f"blocks.{block}.down.bias"] = np.zeros(WIDTH, dtype=np.float32)
    weights["head.weight"] = normal((CLASSES, WIDTH), WIDTH**-0.5)
    weights["head.bias"] = np.zeros(CLASSES, dtype=np.float32)
    return weights


def _forward(weights: Weights, points: Array) -> tuple[list[Array], list[Array], Array]:
    """(stream before each block and after the last, hidden activations, logits)."""
    stream = [points @ weights["embed.weight"].T]
    hidden = []
    for block in range(BLOCKS):
        up = (
            stream[-1] @ weights[f"blocks.{block}.up.weight"].T + weights[f"blocks.{block}.up.bias"]
        )
        hidden.append(np.tanh(up))
        down = hidden[-1] @ weights[f"blocks.{block}.down.weight"].T
        stream.append(stream[-1] + down + weights[f"blocks.{block}.down.bias"])
    logits = stream[-1] @ weights["head.weight"].T + weights["head.bias"]
    return stream, hidden, logits


def logits(weights: Weights, points: Array) -> Array:
    """The model's outputs."""
    return _forward(weights, points)[2]


def block_inputs(weights: Weights, task: Task, block: int, seed: int, count: int = 4096) -> Array:
    """What ``blocks.{block}.up.weight`` sees on ``count`` points of ``task``."""
    points, _ = task.sample(np.random.default_rng(seed), count)
    return _forward(weights, points)[0][block]


def accuracy(weights: Weights, task: Task, seed: int = 99, count: int = 4096) -> float:
    """Share of fresh points classified correctly."""
    points, labels = task.sample(np.random.default_rng(seed), count)
    return float((logits(weights, points).argmax(axis=1) == labels).mean())


def train(
    weights: Weights,
    task: Task,
    *,
    steps: int,
    lr: float,
    seed: int,
    batch: int = 128,
    only: tuple[str, ...] = (),
) -> Weights:
    """Minibatch Adam on softmax cross-entropy; returns new weights (``weights`` is kept).

    ``only``: train just the tensors whose names start with one of these (the rest frozen).
    """
    rng = np.random.default_rng(seed)
    current = {name: value.copy() for name, value in weights.items()}
    first = {name: np.zeros_like(value) for name, value in current.items()}
    second = {name: np.zeros_like(value) for name, value in current.items()}
    for step in range(1, steps + 1):
        points, labels = task.sample(rng, batch)
        grads = _gradients(current, points, labels)
        for name, gradient in grads.items():
            if only and not name.startswith(only):
                continue
            first[name] = 0.9 * first[name] + 0.1 * gradient
            second[name] = 0.999 * second[name] + 0.001 * gradient**2
            update = (first[name] / (1 - 0.9**step)) / (
                np.sqrt(second[name] / (1 - 0.999**step)) + 1e-8
            )
            current[name] = (current[name] - lr * update).astype(np.float32)
    return current


def _gradients(weights: Weights, points: Array, labels: npt.NDArray[np.int64]) -> Weights:
    stream, hidden, out = _forward(weights, points)
    probabilities = np.exp(out - out.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    probabilities[np.arange(len(labels)), labels] -= 1
    d_out = probabilities / len(labels)
    grads = {"head.weight": d_out.T @ stream[-1], "head.bias": d_out.sum(axis=0)}
    d_stream = d_out @ weights["head.weight"]
    for block in reversed(range(BLOCKS)):
        name = f"blocks.{block}"
        grads[f"{name}.down.weight"] = d_stream.T @ hidden[block]
        grads[f"{name}.down.bias"] = d_stream.sum(axis=0)
        d_up = (d_stream @ weights[f"{name}.down.weight"]) * (1 - hidden[block] ** 2)
        grads[f"{name}.up.weight"] = d_up.T @ stream[block]
        grads[f"{name}.up.bias"] = d_up.sum(axis=0)
        d_stream = d_stream + d_up @ weights[f"{name}.up.weight"]
    grads["embed.weight"] = d_stream.T @ points
    return grads
