"""The evaluation runs in the suite: its table is printed, and what it shows is held.

What is held is the issue's acceptance at the shipped thresholds: no benign case fails the
gate (at most 1% may; none does), every attack family at every strength fails it in at least
95% of its cases, and the edited tensor is named first in at least 90% of detections.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluation.__main__ import run_all
from tests.evaluation.suite import Outcome, benign_maxima, detector_table, table

# The first test pays for building and diffing every case of three models (about 4 minutes
# on two idle cores): more than the suite's default per-test limit.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> list[Outcome]:
    return run_all(tmp_path_factory.mktemp("evaluation"), corpus_dir)


def test_the_table_is_printed(outcomes: list[Outcome], capsys: pytest.CaptureFixture[str]) -> None:
    text = table(outcomes)
    with capsys.disabled():
        print("\n" + text + "\n" + detector_table(outcomes) + "\n" + benign_maxima(outcomes))
    assert "| small MLP (numpy-trained) | ROME rank-one | 2% |" in text
    assert "| all-MiniLM-L6-v2 | benign: re-save |" in text
    assert "| SmolLM2-135M (Q4_1 GGUF) | ROME rank-one | 2% |" in text


def test_no_benign_change_fails_the_gate(outcomes: list[Outcome]) -> None:
    failed = [o.case for o in outcomes if not o.case.positive and o.failed]
    assert failed == []
    assert sum(not o.case.positive for o in outcomes) >= 40


def test_every_attack_fails_the_gate_and_names_its_tensor(outcomes: list[Outcome]) -> None:
    groups: dict[tuple[str, str, str], list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.case.positive:
            key = (outcome.case.model, outcome.case.family, outcome.case.strength)
            groups.setdefault(key, []).append(outcome)
    assert sum(len(members) for members in groups.values()) >= 80
    missed = {k: m for k, m in groups.items() if sum(o.failed for o in m) < 0.95 * len(m)}
    assert missed == {}
    detected = [o for members in groups.values() for o in members if o.failed]
    named = [o for o in detected if o.named_first in o.case.edited]
    assert len(named) >= 0.9 * len(detected)
    assert [o.case for o in detected if o.named_first not in o.case.edited] == []


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
