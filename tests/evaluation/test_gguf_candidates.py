"""GGUF candidates are the baseline's bytes, except for the tensors an edit changed."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

from tests.evaluation import edits, llama
from tests.evaluation.gguf_candidates import SCALE_EXPONENT_BIT, gguf_writer, scale_flips
from tests.evaluation.suite import Weights, Writer
from tests.models import smollm2_gguf
from weightgate.analysis.tensor_info import TensorInfo
from weightgate.analysis.tensors import open_model

TARGET = "blk.10.ffn_up.weight"


@pytest.fixture(scope="module")
def baseline() -> tuple[Weights, dict[str, TensorInfo]]:
    with ExitStack() as stack:
        model = open_model(smollm2_gguf(), stack)
        return llama.dequantised(model), dict(model.tensors)


def _candidate(tmp_path: Path, write: Writer, weights: Weights) -> bytes:
    shutil.copy(smollm2_gguf(), tmp_path)
    write(weights, tmp_path)
    return (tmp_path / smollm2_gguf().name).read_bytes()


def _differing(before: bytes, after: bytes) -> np.ndarray:
    return np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))


def test_a_resave_and_a_requantised_copy_are_the_baseline_bytes(
    tmp_path: Path, baseline: tuple[Weights, dict[str, TensorInfo]]
) -> None:
    base, _ = baseline
    write = gguf_writer(smollm2_gguf(), base)
    original = smollm2_gguf().read_bytes()
    assert _candidate(tmp_path, write, dict(base)) == original
    # Every tensor handed over as a new (equal) array: none is rewritten.
    assert _candidate(tmp_path, write, {n: w.copy() for n, w in base.items()}) == original


def test_an_edit_rewrites_only_its_tensor(
    tmp_path: Path, baseline: tuple[Weights, dict[str, TensorInfo]]
) -> None:
    base, infos = baseline
    edited = edits.lora(base, [TARGET], 4, 0.05, seed=0)
    after = _candidate(tmp_path, gguf_writer(smollm2_gguf(), base), edited)
    changed = _differing(smollm2_gguf().read_bytes(), after)
    info = infos[TARGET]
    assert changed.size > 0
    assert info.offset <= changed.min() and changed.max() < info.offset + info.nbytes


def test_scale_flips_flip_one_exponent_bit_of_a_few_stored_scales(
    tmp_path: Path, baseline: tuple[Weights, dict[str, TensorInfo]]
) -> None:
    """Q4_1 blocks are 20 bytes: a float16 scale d, a float16 minimum m, 16 bytes of nibbles.
    The candidate differs in the high byte of three blocks' d, by the exponent bit only."""
    base, infos = baseline
    before = smollm2_gguf().read_bytes()
    flipped = scale_flips(base, TARGET, 3, seed=4)
    after = _candidate(tmp_path, gguf_writer(smollm2_gguf(), base), flipped)
    changed = _differing(before, after)
    info = infos[TARGET]
    assert changed.size == 3
    assert all((offset - info.offset) % 20 == 1 for offset in changed)
    assert all(before[offset] ^ after[offset] == SCALE_EXPONENT_BIT >> 8 for offset in changed)
    moved = flipped[TARGET] != base[TARGET]
    assert 0 < moved.sum() <= 3 * 32
    assert np.abs(flipped[TARGET]).max() > 1000 * np.abs(base[TARGET]).max()
