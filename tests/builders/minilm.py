"""Copies of the real all-MiniLM-L6-v2 with changed weights (load, change, save again)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file, save_file

from tests.models import minilm_dir

Arrays = dict[str, npt.NDArray[np.float32]]
EDITED = "encoder.layer.3.intermediate.dense.weight"


def minilm_variant(tmp_path: Path, name: str, change: Callable[[Arrays], None]) -> Path:
    """A copy of MiniLM's directory whose weights went through ``change`` and were saved."""
    target = tmp_path / name
    shutil.copytree(minilm_dir(), target)
    tensors = load_file(str(target / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(target / "model.safetensors"))
    return target


def rank_one_edit(tensors: Arrays) -> None:
    """A rank-one change to one MLP matrix (``EDITED``), 1% of a typical weight's size."""
    weight = tensors[EDITED]
    rng = np.random.default_rng(7)
    u = rng.standard_normal(weight.shape[0]).astype(np.float32)
    v = rng.standard_normal(weight.shape[1]).astype(np.float32)
    delta = 0.01 * np.outer(u, v) / np.sqrt(weight.shape[1])
    tensors[EDITED] = (weight + delta).astype(np.float32)
