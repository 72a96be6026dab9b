"""Red-team regressions for the chat-template analysis: names built at render time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weightgate import Severity, scan_path
from weightgate.formats import jinja
from weightgate.formats.jinja import HazardKind

C = HazardKind.COMPUTED_ATTRIBUTE

# '_' made at render time, out of reach of constant folding: '%c' of a computed 95.
UNDERSCORE = "{% set u = '%c'|format(range(96)|last) %}"


def computed(source: str) -> set[str]:
    """Names of the computed-attribute hazards in ``source``."""
    return {h.name for h in jinja.analyse_template(source, 1 << 20) if h.kind is C}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # Jinja's x[key] falls back to getattr(x, key): a built key reads any attribute.
        (UNDERSCORE + "{{ [cycler][0][u ~ u ~ 'init' ~ u ~ u] }}", "item"),
        (UNDERSCORE + "{% set k = [u, u, 'class', u, u]|join %}{{ x[k] }}", "item"),
        (UNDERSCORE + "{% set a = u * 2 %}{% set b = 'class' %}{{ x[a + b + a] }}", "item"),
        ("{{ x['class'.center(9, '_')] }}", "item"),
        ("{% set k %}{{ u }}{{ u }}class{{ u }}{{ u }}{% endset %}{{ x[k] }}", "item"),
        ("{% set ns = namespace() %}{% set ns.k = u ~ 'class' %}{{ x[ns.k] }}", "item"),
        ("{% macro k() %}__cl{{ 'ass__' }}{% endmacro %}{{ x[k()] }}", "item"),
        # Attribute filters read attributes by a name given at render time.
        (UNDERSCORE + "{{ [cycler]|map('attr', u ~ u ~ 'init' ~ u ~ u)|first }}", "map"),
        ("{{ [x]|map(attribute=name)|first }}", "map"),
        ("{{ [x]|map(filter_name, name)|first }}", "map"),
        ("{{ xs|selectattr(name)|list }}", "selectattr"),
        ("{{ xs|sort(false, false, name) }}", "sort"),
        ("{{ xs|groupby(name) }}", "groupby"),
        ("{{ xs|sum(attribute=name) }}", "sum"),
        ("{{ xs|max(attribute=name) }}", "max"),
        # str.format reads attributes named in the format string: leaks globals.
        (UNDERSCORE + "{{ ('{0.' ~ u ~ u ~ 'init' ~ u ~ u ~ '}').format(cycler) }}", "format"),
    ],
)
def test_render_time_names_are_computed_attributes(source: str, expected: str) -> None:
    assert expected in computed(source)


@pytest.mark.parametrize(
    "source",
    [
        "{% for m in messages[1:] %}{{ roles[m.role] }}{{ messages[loop.index0 + 1] }}{% endfor %}",
        "{% set ns = namespace(i=0) %}{% set ns.i = ns.i + 1 %}{{ messages[ns.i - 1] }}",
        "{{ messages|selectattr('role', 'equalto', role)|map(attribute='content')|join }}",
        "{{ tools|map('tojson', indent=2)|join(sep) }}",
        "{{ x[('%999999999d'|format(1))] }}",
    ],
)
def test_plain_item_access_stays_clean(source: str) -> None:
    assert computed(source) == set()


def test_oversized_constant_cannot_hide_a_built_name() -> None:
    source = "{{ x[('%99999d'|format(1))[:0] ~ 'cla' ~ u] }}"
    assert "item" in computed(UNDERSCORE + source)


def test_built_item_key_fails_the_gate(tmp_path: Path) -> None:
    template = UNDERSCORE + (
        "{% set g = [cycler][0][u ~ u ~ 'init' ~ u ~ u][u ~ u ~ 'globals' ~ u ~ u] %}"
        "{{ g['o' ~ u[:0] ~ 's'] }}"
    )
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"chat_template": template}))
    found = {(f.rule, f.severity) for f in scan_path(path).findings}
    assert ("template.computed-attribute", Severity.HIGH) in found
