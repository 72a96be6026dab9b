"""The evaluation runs in the suite: its table is printed, and what it shows is held.

What is held is what the table showed when the detectors were last calibrated: no benign
case fails the gate, and every attack family the gate claims (all but the edits followed
by a fine-tune, which only warn) fails it in every case.
"""

from __future__ import annotations

import pytest

from tests.evaluation.__main__ import run_all
from tests.evaluation.suite import Outcome, table

MISSED = {
    "ROME, then light fine-tune (50 steps, lr 1e-5)",
    "ROME, then fine-tune (50 steps, lr 1e-4)",
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    return run_all(tmp_path_factory.mktemp("evaluation"))


def test_the_table_is_printed(outcomes: list[Outcome], capsys: pytest.CaptureFixture[str]) -> None:
    text = table(outcomes)
    with capsys.disabled():
        print("\n" + text)
    assert "| small MLP (numpy-trained) | ROME rank-one | 2% |" in text
    assert "| all-MiniLM-L6-v2 | benign: re-save |" in text


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
