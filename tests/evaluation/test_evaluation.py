"""The evaluation runs in the suite: its table is printed, and what it shows is held.

What is held is what the table showed when the detectors were last calibrated: no benign
case fails the gate, and every attack family the gate claims (all but the edits followed
by a fine-tune, which only warn) fails it in every case.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluation.__main__ import run_all
from tests.evaluation.suite import Outcome, table

MISSED = {
    "ROME, then light fine-tune (50 steps, lr 1e-5)",
    "ROME, then fine-tune (50 steps, lr 1e-4)",
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> list[Outcome]:
    return run_all(tmp_path_factory.mktemp("evaluation"), corpus_dir)


def test_the_table_is_printed(outcomes: list[Outcome], capsys: pytest.CaptureFixture[str]) -> None:
    text = table(outcomes)
    with capsys.disabled():
        print("\n" + text)
    assert "| small MLP (numpy-trained) | ROME rank-one | 2% |" in text
    assert "| all-MiniLM-L6-v2 | benign: re-save |" in text
    assert "| SmolLM2-135M (Q4_1 GGUF) | ROME rank-one | 2% |" in text


def test_no_benign_change_fails_the_gate(outcomes: list[Outcome]) -> None:
    failed = [o.case for o in outcomes if not o.case.positive and o.failed]
    assert failed == []
    assert sum(not o.case.positive for o in outcomes) >= 40


def test_every_claimed_attack_fails_the_gate_and_names_its_tensor(
    outcomes: list[Outcome],
) -> None:
    claimed = [o for o in outcomes if o.case.positive and o.case.family not in MISSED]
    assert len(claimed) >= 50
    assert [o.case for o in claimed if not o.failed] == []
    assert [o.case for o in claimed if o.named_first not in o.case.edited] == []


def test_the_numpy_forward_pass_is_all_minilm_l6_v2() -> None:
    """The sentence embedding sentence-transformers documents for this model and sentence."""
    import numpy as np
    from safetensors.numpy import load_file

    from tests.evaluation import bert
    from tests.models import minilm_dir

    weights = load_file(str(minilm_dir() / "model.safetensors"))
    embedding = bert.sentence_embedding(
        weights, bert.load_tokenizer(minilm_dir()), "This is an example sentence"
    )
    published = [0.0677, 0.0635, 0.0487, 0.0793, 0.0374, 0.0027, 0.0394, -0.0071]
    np.testing.assert_allclose(embedding[:8], published, atol=2e-3)
