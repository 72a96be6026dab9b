"""Candidates of a GGUF model, written back in the model's own blocks.

An edit works on dequantised float32 weights (:mod:`.edits`); the candidate is the baseline
file with every *changed* tensor re-quantised to its own type (``gguf.quants.quantize``,
llama.cpp's reference) and written over its old bytes; every other byte stays as it was.
Re-quantising an unchanged Q4_1 tensor of SmolLM2 gives back its stored bytes exactly (all
3.3 million blocks, checked once), so a change is all the edit's (and the re-quantisation's,
in the tensors it touched).

Bit flips in a block-quantised file hit the stored bytes, not float32 elements:
:func:`scale_flips` flips the highest exponent bit of the float16 scale of a few Q4_1
blocks, the flip that turns a block of weights into values thousands of times larger. The
census compares block-quantised tensors by decoded value, so no element of such a tensor
counts as an exponent-only flip: these flips are the census's to catch, not ``bit-flips``'.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize, quantize

from tests.evaluation.suite import Weights, Writer
from weightgate.analysis.tensors import open_model

SCALE_EXPONENT_BIT = np.uint16(1 << 14)
"""The highest exponent bit of a float16: a scale under 2 becomes 2^16 times larger."""


def gguf_writer(model_file: Path, base: Weights) -> Writer:
    """A writer of candidates of ``model_file`` (whose dequantised weights are ``base``):
    it rewrites, in the copy of the file in a candidate directory, the tensors that differ
    from ``base``."""
    with ExitStack() as stack:
        infos = open_model(model_file, stack).tensors

    def write(weights: Weights, directory: Path) -> None:
        if weights.keys() != infos.keys():
            raise ValueError("a GGUF candidate keeps the baseline's tensors")
        with (directory / model_file.name).open("r+b") as handle:
            for name, info in infos.items():
                if weights[name] is base[name] or np.array_equal(weights[name], base[name]):
                    continue
                stored = quantize(weights[name], GGMLQuantizationType[info.dtype]).tobytes()
                if len(stored) != info.nbytes:
                    raise ValueError(f"{name}: {len(stored)} bytes, stored {info.nbytes}")
                handle.seek(info.offset)
                handle.write(stored)

    return write


def scale_flips(weights: Weights, name: str, count: int, seed: int) -> Weights:
    """``count`` Q4_1 blocks of ``name`` with :data:`SCALE_EXPONENT_BIT` of their scale
    flipped, as the dequantised weights of the flipped blocks."""
    kind = GGMLQuantizationType.Q4_1
    _, block_bytes = GGML_QUANT_SIZES[kind]
    weight = weights[name]
    blocks = quantize(weight, kind).reshape(-1, block_bytes)  # per block: d, m (f16), nibbles
    scales = blocks[:, :2].copy().view(np.uint16)  # (blocks, 1), little-endian like GGUF
    rng = np.random.default_rng(seed)
    for block in rng.choice(len(blocks), size=count, replace=False):
        scales[block, 0] ^= SCALE_EXPONENT_BIT
    blocks[:, :2] = scales.view(np.uint8)
    edited = dict(weights)
    edited[name] = dequantize(blocks.reshape(weight.shape[0], -1), kind).reshape(weight.shape)
    return edited
