"""Standalone weight statistics on the real models: exact moments, no benign outliers, attacks.

The thresholds are calibrated on the two real models (see the module docstring of
:mod:`weightgate.analysis.standalone`); these tests hold them to their margin and show that
a NaN, one weight blown up and one layer scaled up in a real MiniLM copy are each named.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tests.builders.minilm import Arrays, minilm_variant
from tests.models import minilm_dir, smollm2_gguf
from weightgate.analysis.standalone import (
    OUTLIER_Z,
    TensorStats,
    family_outliers,
    family_z,
    model_stats,
    tensor_stats,
)
from weightgate.analysis.tensors import open_model

HEAVY = "encoder.layer.0.output.dense.weight"
"""MiniLM's super-weight matrix: one 7.9 among weights of RMS 0.045 (kurtosis ~1600)."""
BLOWN_UP = "encoder.layer.3.intermediate.dense.weight"
SCALED = "encoder.layer.4.attention.self.value.weight"
POISONED = "encoder.layer.2.attention.self.key.weight"


def _stats(path: Path) -> list[TensorStats]:
    with ExitStack() as stack:
        return model_stats(open_model(path, stack))


def _expected(values: np.ndarray) -> tuple[float, float, float]:
    """RMS, max |w| and excess kurtosis, the textbook two-pass way in float64."""
    x = values.astype(np.float64).reshape(-1)
    d = x - x.mean()
    m2, m4 = float(np.mean(d**2)), float(np.mean(d**4))
    return float(np.sqrt(np.mean(x * x))), float(np.abs(x).max()), m4 / m2**2 - 3


def test_moments_merged_over_small_chunks_match_numpy() -> None:
    arrays = load_file(str(minilm_dir() / "model.safetensors"))
    with ExitStack() as stack:
        model = open_model(minilm_dir(), stack)
        for name in (
            HEAVY,
            "encoder.layer.5.output.LayerNorm.weight",
            "embeddings.word_embeddings.weight",
        ):
            got = tensor_stats(model, name, chunk_elements=1000)
            rms, largest, kurtosis = _expected(arrays[name])
            assert got.non_finite == 0
            assert got.rms == pytest.approx(rms, rel=1e-9)
            assert got.max_abs == largest
            assert got.kurtosis == pytest.approx(kurtosis, rel=1e-9)
    assert got.elements == arrays[name].size


def test_moments_stay_exact_far_from_zero(tmp_path: Path) -> None:
    # Raw power sums of 1000 + N(0, 0.001) lose every digit of the spread; merged central
    # moments keep them.
    values = 1000.0 + 0.001 * np.random.default_rng(3).standard_t(5, 200_003)
    save_file({"w": values}, str(tmp_path / "w.safetensors"))
    with ExitStack() as stack:
        got = tensor_stats(open_model(tmp_path, stack), "w", chunk_elements=4099)
    rms, _, kurtosis = _expected(values)
    assert got.rms == pytest.approx(rms, rel=1e-12)
    assert got.kurtosis == pytest.approx(kurtosis, rel=1e-6)
    assert got.kurtosis > 1  # heavy-tailed: Student's t with 5 degrees of freedom


@pytest.mark.parametrize("path", [minilm_dir(), smollm2_gguf()], ids=["minilm", "smollm2"])
def test_real_models_have_no_outlier_and_twice_the_margin(path: Path) -> None:
    stats = _stats(path)
    assert all(item.non_finite == 0 for item in stats)
    assert family_outliers(stats) == []
    for statistic, scores in family_z(stats).items():
        assert len(scores) >= 20  # families were formed and scored
        largest = max(scores.values())
        assert 2 * largest <= OUTLIER_Z[statistic], (statistic, largest)


def test_the_super_weight_matrix_is_no_outlier() -> None:
    stats = {item.name: item for item in _stats(minilm_dir())}
    assert stats[HEAVY].max_abs > 100 * stats[HEAVY].rms
    assert stats[HEAVY].kurtosis > 1000


def test_nan_and_inf_are_counted(tmp_path: Path) -> None:
    def poison(tensors: Arrays) -> None:
        tensors[POISONED][3, 7] = np.nan
        tensors[POISONED][5, :2] = np.inf

    stats = {item.name: item for item in _stats(minilm_variant(tmp_path, "nan", poison))}
    assert stats[POISONED].non_finite == 3
    assert [name for name, item in stats.items() if item.non_finite] == [POISONED]
    clean = {item.name: item for item in _stats(minilm_dir())}[POISONED]
    assert stats[POISONED].rms == pytest.approx(clean.rms, rel=1e-3)  # finite values only


def _blow_up_one_weight(tensors: Arrays) -> None:
    weight = tensors[BLOWN_UP]
    rms = np.sqrt(np.mean(weight.astype(np.float64) ** 2))
    typical = np.unravel_index(np.argmin(np.abs(np.abs(weight) - rms)), weight.shape)
    weight[typical] *= np.float32(1e4)


def test_one_weight_blown_up_is_a_family_outlier(tmp_path: Path) -> None:
    outliers = family_outliers(_stats(minilm_variant(tmp_path, "weight", _blow_up_one_weight)))
    assert {outlier.name for outlier in outliers} == {BLOWN_UP}
    # One weight of 10^4 RMS among 590k lifts the RMS 13-fold and the kurtosis far more;
    # max |w| stands out less (MiniLM's super weights spread that family's log max |w|).
    flagged = {outlier.statistic: outlier for outlier in outliers}
    assert set(flagged) >= {"rms", "kurtosis"}
    assert flagged["rms"].value > 10 * flagged["rms"].family_median


def test_a_layer_scaled_tenfold_is_a_family_outlier(tmp_path: Path) -> None:
    def scale(tensors: Arrays) -> None:
        tensors[SCALED] = tensors[SCALED] * np.float32(10)

    outliers = family_outliers(_stats(minilm_variant(tmp_path, "layer", scale)))
    assert {outlier.name for outlier in outliers} == {SCALED}
    assert outliers[0].statistic == "rms"
    assert outliers[0].value == pytest.approx(10 * outliers[0].family_median, rel=0.2)
