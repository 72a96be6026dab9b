"""``python -m tests.evaluation``: build every case, run the detectors, print the table."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from safetensors.numpy import save_file

from tests.conftest import CORPUS
from tests.evaluation import cases
from tests.evaluation.gguf_candidates import gguf_writer
from tests.evaluation.suite import Outcome, benign_maxima, detector_table, evaluate, table
from tests.models import smollm2_gguf


def run_all(work: Path, corpus: Path = CORPUS) -> list[Outcome]:
    """Every case of every model, evaluated in ``work`` (``corpus``: the shared corpus)."""
    small_dir = work / "small-base"
    small_dir.mkdir()
    base = cases.trained_small_model()
    save_file(base, str(small_dir / "model.safetensors"))
    outcomes = evaluate(small_dir, cases.small_model_cases(base), work)
    minilm_dir = work / "minilm-base"
    minilm_dir.mkdir()
    minilm, minilm_cases = cases.minilm_cases(corpus)
    save_file(minilm, str(minilm_dir / "model.safetensors"))
    outcomes += evaluate(minilm_dir, minilm_cases, work)
    smollm2_dir = work / "smollm2-base"
    smollm2_dir.mkdir()
    smollm2_file = Path(shutil.copy(smollm2_gguf(), smollm2_dir))
    smollm2, smollm2_cases = cases.smollm2_cases(corpus)
    write = gguf_writer(smollm2_file, smollm2.weights)
    return outcomes + evaluate(smollm2_dir, smollm2_cases, work, write)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="weightgate-evaluation-") as scratch:
        outcomes = run_all(Path(scratch))
    sys.stdout.write(
        table(outcomes) + "\n" + detector_table(outcomes) + "\n" + benign_maxima(outcomes)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
