"""Rule ids are stable API: each one is documented in the README with its severity."""

from __future__ import annotations

import importlib
import re

from tests.conftest import REPO
from weightgate.scan import dispatch
from weightgate.scan.findings import RULES


def _declared_rules() -> dict[str, str]:
    for module in dispatch.all_scanner_modules():
        importlib.import_module(module)
    return {rule.id: rule.severity.label for rule in RULES.values()}


def _readme_rules() -> dict[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z0-9-]+\.[a-z0-9.-]+)` \| (\w+) \|", text, re.MULTILINE)
    return dict(rows)


def test_every_rule_is_in_the_readme_with_its_severity() -> None:
    declared = _declared_rules()
    documented = _readme_rules()
    missing = sorted(set(declared) - set(documented))
    assert not missing, f"rules missing from README: {missing}"
    wrong = {r: (declared[r], documented[r]) for r in declared if documented[r] != declared[r]}
    assert not wrong, f"README severity differs (declared, documented): {wrong}"


def test_readme_documents_no_rule_that_does_not_exist() -> None:
    stale = sorted(set(_readme_rules()) - set(_declared_rules()))
    assert not stale, f"README documents unknown rules: {stale}"


def test_rule_ids_are_well_formed() -> None:
    for rule_id, rule in RULES.items():
        assert re.fullmatch(r"[a-z0-9]+\.[a-z0-9-]+(\.[a-z0-9-]+)*", rule_id), rule_id
        assert rule.title and rule.help
