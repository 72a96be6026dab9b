"""The diff's evidence: candidate trigger and target tokens read out of real edited models.

SmolLM2 (GGUF, tied embedding, tokens in the metadata) gets rank-one edits whose output or
input direction is a chosen token's embedding row, written back in its own Q4_1 blocks;
all-MiniLM-L6-v2 (safetensors, ``tokenizer.json``) gets changed word-embedding rows. Token
ids are looked up independently of weightgate: through ``gguf.GGUFReader`` and the
``tokenizers`` package.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import quantize
from safetensors.numpy import load_file, save_file
from sarif_pydantic import Sarif
from tokenizers import Tokenizer

from tests.builders.minilm import minilm_variant
from tests.cli_process import run
from tests.models import minilm_dir, smollm2_gguf
from weightgate.analysis.diff import diff_models
from weightgate.analysis.evidence import DIRECTIONS, EXTRA_MATRICES, TOKENS
from weightgate.analysis.report import render_text, report_to_dict
from weightgate.analysis.tensors import open_model

Matrix = npt.NDArray[np.float64]
WORDS = "embeddings.word_embeddings.weight"


@functools.cache
def _smollm2_tokens() -> tuple[str, ...]:
    field = gguf.GGUFReader(smollm2_gguf()).fields["tokenizer.ggml.tokens"]
    return tuple(bytes(field.parts[index]).decode() for index in field.data)


def _smollm2_edit(tmp_path: Path, name: str, delta: Callable[[Matrix, Matrix], Matrix]) -> Path:
    """SmolLM2 with ``delta(weight, embedding)`` added to tensor ``name``, re-quantised."""
    candidate = tmp_path / "smollm2-edited.gguf"
    shutil.copy(smollm2_gguf(), candidate)
    with ExitStack() as stack:
        model = open_model(smollm2_gguf(), stack)
        info, rows = model.tensors[name], model.tensors["token_embd.weight"]
        weight = np.concatenate(list(model.values(name))).reshape(info.shape)
        embedding = np.concatenate(list(model.values(rows.name))).reshape(rows.shape)
    edited = weight + delta(weight.astype(np.float64), embedding.astype(np.float64))
    blocks = quantize(edited.astype(np.float32), GGMLQuantizationType.Q4_1).tobytes()
    assert info.dtype == "Q4_1" and len(blocks) == info.nbytes
    data = bytearray(candidate.read_bytes())
    data[info.offset : info.offset + info.nbytes] = blocks
    candidate.write_bytes(bytes(data))
    return candidate


def _rank_one(weight: Matrix, left: Matrix, right: Matrix, strength: float = 0.3) -> Matrix:
    """left·rightᵀ scaled to ``strength``·‖W‖: enough to stand out of Q4_1's noise."""
    delta = np.outer(left, right)
    return delta * (strength * float(np.linalg.norm(weight)) / float(np.linalg.norm(delta)))


def test_a_rank_one_edit_writing_a_token_lists_it_first_among_targets(tmp_path: Path) -> None:
    """ROME-like: ffn_down's output direction u is the embedding row of " Paris"."""
    name = "blk.10.ffn_down.weight"
    paris = _smollm2_tokens().index("ĠParis")
    rng = np.random.default_rng(1)
    candidate = _smollm2_edit(
        tmp_path,
        name,
        lambda weight, embedding: _rank_one(
            weight, embedding[paris], rng.standard_normal(weight.shape[1])
        ),
    )
    result = run("diff", smollm2_gguf(), candidate, "--format", "json")
    assert result.returncode == 2, result.stderr
    evidence = json.loads(result.stdout)["evidence"]
    assert evidence["embedding"] == evidence["unembedding"] == "token_embd.weight"  # tied
    assert evidence["hiddenSize"] == 576
    assert evidence["tokenizer"] == "gguf:tokenizer.ggml.tokens"
    (direction,) = evidence["directions"]  # rank one: one direction
    assert (direction["tensor"], direction["direction"], direction["suspect"]) == (name, 1, True)
    assert direction["triggers"] is None  # v has 1536 entries: not the hidden space
    best = direction["targets"]["positive"]
    assert len(best) == TOKENS
    assert (best[0]["id"], best[0]["token"]) == (paris, "ĠParis")
    assert best[0]["cosine"] > 0.95
    assert best[1]["cosine"] < 0.9  # the rest only resemble it ("Paris", " London"...)
    assert evidence["embeddingRows"] == []

    text = run("diff", smollm2_gguf(), candidate).stdout
    section = text[text.index("Evidence (informational; tokens from gguf:") :]
    assert f"{name} direction 1 (sigma" in section
    assert f"targets  + 'ĠParis'#{paris} " in section


@pytest.mark.parametrize("name", ["blk.5.ffn_up.weight", "blk.5.attn_q.weight"])
def test_a_rank_one_edit_reading_a_token_lists_it_first_among_triggers(
    tmp_path: Path, name: str
) -> None:
    """The input direction v (the side of width 576) is the embedding row of " banana"."""
    trigger = _smollm2_tokens().index("Ġbanana")
    rng = np.random.default_rng(2)
    candidate = _smollm2_edit(
        tmp_path,
        name,
        lambda weight, embedding: _rank_one(
            weight, rng.standard_normal(weight.shape[0]), embedding[trigger]
        ),
    )
    evidence = report_to_dict(diff_models(smollm2_gguf(), candidate))["evidence"]
    (direction,) = evidence["directions"]
    assert direction["tensor"] == name and direction["suspect"]
    best = direction["triggers"]["positive"][0]
    assert (best["id"], best["token"]) == (trigger, "Ġbanana")
    assert best["cosine"] > 0.95
    if name.endswith("ffn_up.weight"):
        assert direction["targets"] is None  # u has 1536 entries
    else:  # square: both sides match the width; u is random, so no token stands out
        assert direction["targets"]["positive"][0]["cosine"] < 0.5


def _minilm_id(token: str) -> int:
    found = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json")).token_to_id(token)
    assert found is not None
    return found


def _move_rows(rows: dict[int, float]) -> Callable[[dict[str, Matrix]], None]:
    def change(tensors: dict[str, Matrix]) -> None:
        words = tensors[WORDS].copy()
        for row, amount in rows.items():
            words[row] += np.float32(amount)
        tensors[WORDS] = words

    return change


def test_a_changed_word_embedding_row_is_listed_with_its_token(tmp_path: Path) -> None:
    cf, other = _minilm_id("cf"), _minilm_id("house")
    candidate = minilm_variant(tmp_path, "candidate", _move_rows({cf: 0.05, other: 0.01}))
    result = run("diff", minilm_dir(), candidate, "--format", "json")
    assert result.returncode == 2, result.stderr
    evidence = json.loads(result.stdout)["evidence"]
    assert evidence["embedding"] == WORDS and evidence["tokenizer"] == "tokenizer.json"
    (rows,) = evidence["embeddingRows"]
    assert (rows["tensor"], rows["rows"], rows["changedRows"]) == (WORDS, 30522, 2)
    assert [(row["id"], row["token"]) for row in rows["top"]] == [(cf, "cf"), (other, "house")]
    assert rows["top"][0]["deltaNorm"] == pytest.approx(0.05 * np.sqrt(384), rel=1e-3)
    assert evidence["directions"] == []  # the embedding's own directions are not read out

    sarif = json.loads(run("diff", minilm_dir(), candidate, "--format", "sarif").stdout)
    Sarif.model_validate(sarif)
    census = next(r for r in sarif["runs"][0]["results"] if r["ruleId"] == "diff.census")
    assert census["properties"]["tensor"] == WORDS
    listed = census["properties"]["evidence"]["embeddingRows"][0]["top"]
    assert listed[0]["token"] == "cf"


def test_without_a_tokenizer_token_ids_only(tmp_path: Path) -> None:
    cf = _minilm_id("cf")
    candidate = minilm_variant(tmp_path, "candidate", _move_rows({cf: 0.05}))
    (candidate / "tokenizer.json").unlink()  # vocab.txt stays: it is not read
    report = diff_models(minilm_dir(), candidate)
    assert report.evidence is not None
    assert report.evidence.tokenizer is None
    assert "token ids only" in (report.evidence.note or "")
    (rows,) = report.evidence.rows
    assert [(row.id, row.token) for row in rows.top] == [(cf, None)]
    assert f"{WORDS}: 1 of 30522 rows changed: #{cf} " in render_text(report)


def test_an_unreadable_tokenizer_leaves_ids_and_says_why(tmp_path: Path) -> None:
    cf = _minilm_id("cf")
    candidate = minilm_variant(tmp_path, "candidate", _move_rows({cf: 0.05}))
    (candidate / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    result = run("diff", minilm_dir(), candidate)
    assert result.returncode == 2, result.stderr  # the verdicts are unchanged
    assert "note: tokenizer.json unreadable:" in result.stdout
    assert f"rows changed: #{cf} " in result.stdout


def test_a_dense_change_reads_out_the_most_changed_matrices(tmp_path: Path) -> None:
    def fine_tune(tensors: dict[str, Matrix]) -> None:
        rng = np.random.default_rng(3)
        for name, weight in tensors.items():
            if weight.dtype == np.float32:
                noise = rng.standard_normal(weight.shape).astype(np.float32)
                tensors[name] = weight + np.float32(1e-3) * noise

    report = diff_models(minilm_dir(), minilm_variant(tmp_path, "candidate", fine_tune))
    assert report.evidence is not None
    directions = report.evidence.directions
    tensors = list(dict.fromkeys(direction.tensor for direction in directions))
    assert len(tensors) == EXTRA_MATRICES
    assert not any(direction.suspect for direction in directions)
    assert len(directions) == EXTRA_MATRICES * DIRECTIONS  # no rank: the top three each
    (rows,) = report.evidence.rows  # every word row moved
    assert rows.changed_rows == 30522 and len(rows.top) == 16


def test_a_resaved_copy_has_no_evidence_section(tmp_path: Path) -> None:
    report = diff_models(minilm_dir(), minilm_variant(tmp_path, "candidate", lambda tensors: None))
    assert report.evidence is not None
    assert report.evidence.directions == () and report.evidence.rows == ()
    assert report.evidence.tokenizer is None  # nothing to name: the tokenizer is not read
    assert "Evidence" not in render_text(report)


def _with_head(tmp_path: Path, label: str, change: Callable[[dict[str, Matrix]], None]) -> Path:
    """MiniLM plus an untied ``lm_head.weight``: the word embedding rolled by one row."""

    def add_head(tensors: dict[str, Matrix]) -> None:
        tensors["lm_head.weight"] = np.roll(tensors[WORDS], 1, axis=0)
        change(tensors)

    return minilm_variant(tmp_path, label, add_head)


@pytest.mark.parametrize(
    ("name", "side"),
    [
        ("encoder.layer.4.output.dense.weight", "targets"),
        ("encoder.layer.4.intermediate.dense.weight", "triggers"),
    ],
)
def test_targets_read_through_a_separate_unembedding_and_triggers_through_the_embedding(
    tmp_path: Path, name: str, side: str
) -> None:
    cf = _minilm_id("cf")

    def edit(tensors: dict[str, Matrix]) -> None:
        weight, row = tensors[name].astype(np.float64), tensors[WORDS][cf].astype(np.float64)
        other = np.random.default_rng(4).standard_normal(1536)
        left, right = (row, other) if side == "targets" else (other, row)
        tensors[name] = (weight + _rank_one(weight, left, right, 0.1)).astype(np.float32)

    baseline = _with_head(tmp_path, "baseline", lambda tensors: None)
    report = diff_models(baseline, _with_head(tmp_path, "candidate", edit))
    assert report.evidence is not None
    assert (report.evidence.embedding, report.evidence.unembedding) == (WORDS, "lm_head.weight")
    (direction,) = report.evidence.directions
    readout = direction.targets if side == "targets" else direction.triggers
    assert readout is not None
    # The head's row cf + 1 is the embedding's row cf: which one matched says which was read.
    expected = cf + 1 if side == "targets" else cf
    assert readout.positive[0].id == expected and readout.positive[0].score > 0.99


def test_a_model_without_a_token_embedding_has_no_evidence(tmp_path: Path) -> None:
    layer = {
        name: weight
        for name, weight in load_file(str(minilm_dir() / "model.safetensors")).items()
        if name.startswith("encoder.layer.0.")
    }
    save_file(layer, str(tmp_path / "baseline.safetensors"))
    name = "encoder.layer.0.output.dense.weight"
    rng = np.random.default_rng(5)
    weight = layer[name].astype(np.float64)
    edit = _rank_one(weight, rng.standard_normal(384), rng.standard_normal(1536), 0.1)
    layer[name] = (weight + edit).astype(np.float32)
    save_file(layer, str(tmp_path / "candidate.safetensors"))
    result = run(
        "diff", tmp_path / "baseline.safetensors", tmp_path / "candidate.safetensors", "-f", "json"
    )
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    assert document["tensors"]["changed"][0]["tensor"] == name
    assert document["evidence"] is None


def test_of_many_low_rank_suspects_the_most_changed_are_read_out(tmp_path: Path) -> None:
    names = [f"encoder.layer.{layer}.intermediate.dense.weight" for layer in range(6)]
    names += [f"encoder.layer.{layer}.output.dense.weight" for layer in range(2)]
    rng = np.random.default_rng(6)

    def edit(tensors: dict[str, Matrix]) -> None:
        for number, name in enumerate(names):  # a larger edit for each later tensor
            weight = tensors[name].astype(np.float64)
            left, right = rng.standard_normal(weight.shape[0]), rng.standard_normal(weight.shape[1])
            delta = _rank_one(weight, left, right, 0.02 * (number + 1))
            tensors[name] = (weight + delta).astype(np.float32)

    report = diff_models(minilm_dir(), minilm_variant(tmp_path, "candidate", edit))
    assert all(report.spectra[name].refined for name in names)
    assert report.evidence is not None
    read = [direction.tensor for direction in report.evidence.directions]
    assert read == names[:1:-1]  # the six largest, largest first, one direction each
    assert all(direction.suspect for direction in report.evidence.directions)
