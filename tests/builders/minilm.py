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


def minilm_variant(tmp_path: Path, name: str, change: Callable[[Arrays], None]) -> Path:
    """A copy of MiniLM's directory whose weights went through ``change`` and were saved."""
    target = tmp_path / name
    shutil.copytree(minilm_dir(), target)
    tensors = load_file(str(target / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(target / "model.safetensors"))
    return target
