"""The spectral detector: the streaming randomised SVD, and low-rank edits found or not."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import quantize
from safetensors.numpy import load_file, save_file

from tests.cli_process import run
from tests.models import minilm_dir, smollm2_gguf
from weightgate.analysis import census as census_module
from weightgate.analysis.diff import diff_models
from weightgate.analysis.spectral import DeltaSketch
from weightgate.analysis.tensors import open_model

QUERY = "encoder.layer.2.attention.self.query.weight"


def _rank_one(
    shape: tuple[int, ...], strength: float, norm: float, seed: int
) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    delta = np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1]))
    return delta * (strength * norm / np.linalg.norm(delta))


def _minilm_variant(
    tmp_path: Path, change: dict[str, npt.NDArray[np.float64]], noise: float = 0.0
) -> Path:
    """MiniLM plus ``change`` per tensor, and relative Gaussian ``noise`` on every float tensor."""
    target = tmp_path / "candidate"
    shutil.copytree(minilm_dir(), target)
    tensors = load_file(str(target / "model.safetensors"))
    rng = np.random.default_rng(11)
    for name, weight in tensors.items():
        if weight.dtype != np.float32:
            continue
        updated = weight.astype(np.float64) + change.get(name, 0.0)
        if noise:
            updated += noise * np.abs(weight).mean() * rng.standard_normal(weight.shape)
        tensors[name] = updated.astype(np.float32)
    save_file(tensors, str(target / "model.safetensors"))
    return target


def test_the_sketch_finds_the_singular_values_of_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(census_module, "CHUNK_ELEMENTS", 384 * 7)  # many blocks, a short last
    rng = np.random.default_rng(5)
    strong = rng.standard_normal((384, 3)) @ rng.standard_normal((3, 384))
    delta = strong + 0.01 * rng.standard_normal((384, 384))
    candidate = _minilm_variant(tmp_path, {QUERY: delta})
    with ExitStack() as stack:
        before, after = open_model(minilm_dir(), stack), open_model(candidate, stack)
        exact_delta = (
            np.concatenate(list(after.values(QUERY))).astype(np.float64)
            - np.concatenate(list(before.values(QUERY))).astype(np.float64)
        ).reshape(384, 384)
        sketch = DeltaSketch(384, 384)
        change = census_module.census(before, after, QUERY, sketch)
        screen = sketch.estimate(QUERY)
        refined = sketch.refine(
            QUERY, census_module.delta_blocks(before, after, QUERY), change.delta_norm
        )
    assert change.delta_norm == pytest.approx(float(np.linalg.norm(exact_delta)), rel=1e-5)
    exact = np.linalg.svd(exact_delta, compute_uv=False)
    assert screen.rank == 3 and not screen.refined
    np.testing.assert_allclose(refined.sigma[:3], exact[:3], rtol=1e-3)
    assert refined.rank == 3 and refined.refined
    assert refined.rank_energy > 0.99


def test_the_screen_does_not_call_dense_noise_low_rank(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    candidate = _minilm_variant(tmp_path, {QUERY: 0.01 * rng.standard_normal((384, 384))})
    with ExitStack() as stack:
        before, after = open_model(minilm_dir(), stack), open_model(candidate, stack)
        sketch = DeltaSketch(384, 384)
        census_module.census(before, after, QUERY, sketch)
        screen = sketch.estimate(QUERY)
    assert screen.rank == 0
    assert screen.stable_rank > 10


def test_poisongpt_style_rank_one_edit_of_smollm2_exits_2_naming_tensor_and_rank(
    tmp_path: Path,
) -> None:
    """A rank-one change to one MLP matrix, written back in the model's own Q4_1 blocks."""
    name = "blk.10.ffn_down.weight"
    candidate = tmp_path / "smollm2-edited.gguf"
    shutil.copy(smollm2_gguf(), candidate)
    with ExitStack() as stack:
        info = open_model(smollm2_gguf(), stack).tensors[name]
        model = open_model(smollm2_gguf(), stack)
        weight = np.concatenate(list(model.values(name))).reshape(info.shape)
    assert info.dtype == "Q4_1"
    edited = weight + _rank_one(info.shape, 0.1, float(np.linalg.norm(weight)), seed=1)
    blocks = quantize(edited.astype(np.float32), GGMLQuantizationType.Q4_1).tobytes()
    assert len(blocks) == info.nbytes
    data = bytearray(candidate.read_bytes())
    data[info.offset : info.offset + info.nbytes] = blocks
    candidate.write_bytes(bytes(data))

    result = run("diff", smollm2_gguf(), candidate)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "FAIL  census: localised edit: 1 of 272 tensors changed" in result.stdout
    # The rank-one change stands out of the Q4_1 re-quantisation noise: rank 1, reported.
    line = next(line for line in result.stdout.splitlines() if line.startswith(f"  {name}:"))
    assert ", rank 1 (" in line


def test_an_edit_hidden_under_a_light_fine_tune_is_still_found(tmp_path: Path) -> None:
    weights = load_file(str(minilm_dir() / "model.safetensors"))[QUERY].astype(np.float64)
    edit = _rank_one(weights.shape, 0.1, float(np.linalg.norm(weights)), seed=2)
    candidate = _minilm_variant(tmp_path, {QUERY: edit}, noise=1e-3)
    report = diff_models(minilm_dir(), candidate)
    verdicts = {verdict.detector: verdict for verdict in report.verdicts}
    assert verdicts["census"].status == "pass"  # every tensor changed
    assert verdicts["spectral"].status == "fail"  # the edited query stands out of its family
    assert verdicts["spectral"].tensors == (QUERY,)
    assert report.spectra[QUERY].rank == 1
    assert report.failed


def test_a_merged_benign_lora_in_every_layer_is_not_an_edit(tmp_path: Path) -> None:
    tensors = load_file(str(minilm_dir() / "model.safetensors"))
    rng = np.random.default_rng(9)
    change = {}
    for layer in range(6):
        for part in ("query", "value"):
            name = f"encoder.layer.{layer}.attention.self.{part}.weight"
            a, b = rng.standard_normal((384, 8)), rng.standard_normal((8, 384))
            lora = a @ b
            change[name] = lora * (0.05 * np.linalg.norm(tensors[name]) / np.linalg.norm(lora))
    report = diff_models(minilm_dir(), _minilm_variant(tmp_path, change))
    verdicts = {verdict.detector: verdict for verdict in report.verdicts}
    assert verdicts["spectral"].status == "pass", verdicts["spectral"].message
    assert "none stands out of its family" in verdicts["spectral"].message
    assert all(report.spectra[name].rank == 8 for name in change)


def test_an_exact_low_rank_change_has_that_rank_not_its_rounding_noise() -> None:
    # Two rows changed: rank 2 exactly; the values below are float32 rounding, not directions.
    rng = np.random.default_rng(3)
    delta = np.zeros((384, 1536), dtype=np.float32)
    delta[[5, 90]] = rng.standard_normal((2, 1536)).astype(np.float32)
    sketch = DeltaSketch(*delta.shape)
    sketch.add(0, delta)
    refined = sketch.refine("rows", [(0, delta)], float(np.linalg.norm(delta)))
    assert refined.rank == 2
    assert refined.rank_energy > 0.99
