"""``weightgate diff`` on real models: re-saves, edits, flips, added modules, bad input.

Candidates are made from the real all-MiniLM-L6-v2 with the ``safetensors`` library (load,
change, save), and from the real SmolLM2 GGUF by changing stored bytes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.builders.minilm import EDITED, Arrays, minilm_variant, rank_one_edit
from tests.cli_process import run
from tests.models import minilm_dir, smollm2_gguf
from weightgate.analysis.diff import diff_models


def test_a_resaved_copy_has_an_empty_diff_and_exits_0(tmp_path: Path) -> None:
    resaved = minilm_variant(tmp_path, "resaved", lambda tensors: None)
    assert (resaved / "model.safetensors").read_bytes() != b""  # really written again
    report = diff_models(minilm_dir(), resaved)
    assert not report.failed
    assert report.changed == []
    assert not report.manifest.structural and report.manifest.files == ()
    result = run("diff", minilm_dir(), resaved)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "104 tensors compared: 104 identical, 0 changed" in result.stdout


def test_a_single_tensor_edit_fails_and_names_the_tensor(tmp_path: Path) -> None:
    edited = minilm_variant(tmp_path, "edited", rank_one_edit)
    result = run("diff", minilm_dir(), edited, "--format", "json")
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    census = next(v for v in document["verdicts"] if v["detector"] == "census")
    assert census["status"] == "fail"
    assert census["tensors"] == [EDITED]
    (change,) = document["tensors"]["changed"]
    assert change["tensor"] == EDITED
    assert change["changedFraction"] > 0.99


def test_a_change_to_every_tensor_passes_the_census(tmp_path: Path) -> None:
    def fine_tune(tensors: Arrays) -> None:
        rng = np.random.default_rng(3)
        for name, weight in tensors.items():
            if weight.dtype == np.float32:  # not the integer position ids
                noise = rng.standard_normal(weight.shape).astype(np.float32)
                tensors[name] = weight + np.float32(1e-3) * noise

    tuned = minilm_variant(tmp_path, "tuned", fine_tune)
    report = diff_models(minilm_dir(), tuned)
    assert len(report.changed) == 103
    assert not report.failed, [v for v in report.verdicts if v.status == "fail"]


def test_exponent_bit_flips_are_caught(tmp_path: Path) -> None:
    def flip(tensors: Arrays) -> None:
        bits = tensors[EDITED].view(np.uint32).copy()
        bits.reshape(-1)[[5, 999, 4000]] ^= 1 << 29  # one exponent bit each
        tensors[EDITED] = bits.view(np.float32)

    flipped = minilm_variant(tmp_path, "flipped", flip)
    report = diff_models(minilm_dir(), flipped)
    verdict = next(v for v in report.verdicts if v.detector == "bit-flips")
    assert verdict.status == "fail"
    assert verdict.tensors == (EDITED,)
    assert "3 element(s) changed only in their exponent bits" in verdict.message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.update(hidden_trigger=np.ones((8, 384), np.float32)), "1 added"),
        (lambda t: t.update(renamed_query=t.pop(EDITED)), "1 renamed"),
        (lambda t: t.update({EDITED: t[EDITED][:, :100].copy()}), "1 reshaped"),
        (lambda t: t.update({EDITED: t[EDITED].astype(np.float16)}), "1 re-typed"),
    ],
)
def test_structural_changes_fail_the_manifest(
    tmp_path: Path, change: Callable[[Arrays], None], expected: str
) -> None:
    candidate = minilm_variant(tmp_path, "changed", change)
    report = diff_models(minilm_dir(), candidate)
    verdict = next(v for v in report.verdicts if v.detector == "manifest")
    assert verdict.status == "fail"
    assert expected in verdict.message


def test_a_changed_block_of_the_gguf_model_is_found(tmp_path: Path) -> None:
    from contextlib import ExitStack

    from weightgate.analysis.tensors import open_model

    candidate = tmp_path / "smollm2.gguf"
    shutil.copy(smollm2_gguf(), candidate)
    with ExitStack() as stack:
        info = open_model(smollm2_gguf(), stack).tensors["blk.5.ffn_down.weight"]
    data = bytearray(candidate.read_bytes())
    data[info.offset + 100] ^= 0x11  # quantised nibbles of one block
    candidate.write_bytes(bytes(data))
    result = run("diff", smollm2_gguf(), candidate)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "FAIL  census: localised edit: 1 of 272 tensors changed" in result.stdout
    assert "blk.5.ffn_down.weight" in result.stdout


@pytest.mark.parametrize("case", ["architectures", "truncated", "missing"])
def test_mismatched_or_malformed_inputs_exit_1(tmp_path: Path, case: str) -> None:
    if case == "architectures":
        candidate = smollm2_gguf()
        message = "different architectures"
    elif case == "truncated":
        candidate = tmp_path / "model.safetensors"
        data = (minilm_dir() / "model.safetensors").read_bytes()
        candidate.write_bytes(data[: len(data) - 1000])
        message = "not a readable tensor file"
    else:
        candidate = tmp_path / "absent"
        message = "no such file or directory"
    result = run("diff", minilm_dir(), candidate)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_sarif_output_is_valid_and_points_at_the_tensor(tmp_path: Path) -> None:
    from sarif_pydantic import Sarif

    edited = minilm_variant(tmp_path, "edited", rank_one_edit)
    result = run("diff", minilm_dir(), edited, "--format", "sarif")
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    Sarif.model_validate(document)
    run_ = document["runs"][0]
    assert {rule["id"] for rule in run_["tool"]["driver"]["rules"]} == {
        "diff.manifest", "diff.bit-flips", "diff.census", "diff.spectral", "diff.localisation",
    }  # fmt: skip
    census = [r for r in run_["results"] if r["ruleId"] == "diff.census"]
    assert [r["properties"]["tensor"] for r in census] == [EDITED]
    location = census[0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "model.safetensors"
    assert location["region"]["byteOffset"] > 0


def _light_fine_tune(tensors: Arrays, seed: int = 4) -> None:
    rng = np.random.default_rng(seed)
    for name, weight in tensors.items():
        if weight.dtype == np.float32:
            noise = rng.standard_normal(weight.shape).astype(np.float32)
            tensors[name] = weight + np.float32(1e-4) * noise


def test_rewritten_neurons_under_a_light_fine_tune_are_a_localisation_warning(
    tmp_path: Path,
) -> None:
    def neurons(tensors: Arrays) -> None:
        _light_fine_tune(tensors)
        weight = tensors[EDITED].copy()
        low, high = float(weight.min()), float(weight.max())
        rng = np.random.default_rng(6)
        for row in (17, 404, 1200):  # three neurons rewritten, kept inside the normal range
            weight[row] = rng.uniform(low, high, weight.shape[1]).astype(np.float32)
        tensors[EDITED] = weight

    report = diff_models(minilm_dir(), minilm_variant(tmp_path, "neurons", neurons))
    verdicts = {verdict.detector: verdict for verdict in report.verdicts}
    assert verdicts["census"].status == "pass"  # every tensor changed a little
    assert verdicts["localisation"].status == "warn"
    assert verdicts["localisation"].tensors[0] == EDITED
    change = next(c for c in report.changes if c.name == EDITED)
    assert change.top_rows_share > 0.9


def test_a_tensor_changed_far_more_than_its_family_is_named(tmp_path: Path) -> None:
    name = "encoder.layer.4.attention.output.dense.weight"

    def one_layer_more(tensors: Arrays) -> None:
        _light_fine_tune(tensors)
        rng = np.random.default_rng(12)
        noise = rng.standard_normal(tensors[name].shape).astype(np.float32)
        tensors[name] = tensors[name] + np.float32(5e-3) * noise

    report = diff_models(minilm_dir(), minilm_variant(tmp_path, "layer", one_layer_more))
    verdict = next(v for v in report.verdicts if v.detector == "localisation")
    assert verdict.status == "warn"
    assert name in verdict.tensors
    assert "changed far more than their family" in verdict.message


def _top_layers_fine_tune(tensors: Arrays) -> None:
    """Noise in every tensor of layers 2-5 only (the lower layers frozen)."""
    rng = np.random.default_rng(5)
    for name, weight in tensors.items():
        if any(f"layer.{layer}." in name for layer in range(2, 6)):
            noise = rng.standard_normal(weight.shape).astype(np.float32)
            tensors[name] = weight + np.float32(1e-4) * noise


def test_a_fine_tune_of_the_top_layers_only_passes(tmp_path: Path) -> None:
    report = diff_models(minilm_dir(), minilm_variant(tmp_path, "top", _top_layers_fine_tune))
    verdicts = {verdict.detector: verdict for verdict in report.verdicts}
    assert verdicts["census"].status == "pass"  # 64 of 104 tensors changed
    assert verdicts["spectral"].status == "pass", verdicts["spectral"].message
    assert not report.failed


def test_an_edit_under_a_top_layers_fine_tune_stands_out_of_its_family(tmp_path: Path) -> None:
    def edit_then_tune(tensors: Arrays) -> None:
        rank_one_edit(tensors)
        _top_layers_fine_tune(tensors)

    report = diff_models(minilm_dir(), minilm_variant(tmp_path, "hidden", edit_then_tune))
    verdict = next(v for v in report.verdicts if v.detector == "spectral")
    assert verdict.status == "fail", verdict.message
    assert verdict.tensors == (EDITED,)
    assert f"{EDITED} (top singular value " in verdict.message
    assert report.failed
