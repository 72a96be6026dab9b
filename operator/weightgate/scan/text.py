"""Scanners for JSON and plain text: chat templates, Keras configs, code in strings.

JSON (``tokenizer_config.json``, ``config.json``, ...) is parsed with the standard library
under ``limits.max_json_bytes``. Every ``*chat_template`` value (a string, or a list of
``{"name", "template"}``) is analysed as a Jinja template, as is any other string that
contains ``{{`` or ``{%``. A Keras model config is handed to
:func:`weightgate.scan.keras.scan_keras_config`. A file that detection routed as JSON but
that does not parse (JSON lines, a template, ``vocab.txt`` starting with ``[PAD]``) is
scanned as text instead: that is not an error.

Text with Jinja delimiters is a standalone template (``.jinja``, ``.j2``), or YAML holding
one (``chat_template: ...``). YAML goes through ``yaml.safe_load_all`` only, and the
result is walked with a visited set, because aliases can make a small document a huge
graph. Text without delimiters (README, LICENSE, vocab.txt) produces nothing.

The helpers :func:`find_code` and :func:`find_suspicious` are shared with the scanners of
formats that carry free-form metadata strings (safetensors, GGUF).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath

import yaml

from weightgate.formats.detect import HEAD_BYTES
from weightgate.scan import keras
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Severity, rule
from weightgate.scan.settings import Limits
from weightgate.scan.template import looks_like_template, scan_template

TOO_LARGE = rule(
    "text.too-large",
    Severity.MEDIUM,
    "A configuration or template file is larger than limits.max_json_bytes",
    "The file was not parsed, so a chat template or model config in it was not checked "
    "and the verdict fails closed. Raise limits.max_json_bytes if the file is legitimate.",
)

KERAS_CONFIG_NAME = "config.json"
"""The member of a .keras archive that Keras deserializes."""
_TEMPLATE_SUFFIXES = (".jinja", ".jinja2", ".j2", ".template", ".tmpl")
_YAML_START = re.compile(r"(?:---|[A-Za-z_][\w .-]*:)(?:\s|$)")
_CHAT_TEMPLATE_KEY = re.compile(r"^[ \t]*[\"']?\w*chat_template[\"']?[ \t]*:", re.MULTILINE)

_RISKY_MODULES = (
    r"(?:os|sys|subprocess|socket|shutil|pty|ctypes|importlib|builtins|base64|pickle|"
    r"marshal|urllib|requests|runpy|commands|webbrowser)"
)
_CODE = re.compile(
    rf"""
      \bimport\s+{_RISKY_MODULES}\b
    | \bfrom\s+{_RISKY_MODULES}(?:\.\w+)*\s+import\b
    | \bos\s*\.\s*(?:system|popen|exec\w*|spawn\w*|remove|unlink|rmdir|kill|fork)\s*\(
    | \bsubprocess\s*\.\s*\w+\s*\(
    | (?<![\w.])(?:eval|exec)\s*\(
    | (?<!\w)__(?:import|builtins)__(?!\w)
    | \b(?:pickle|marshal|dill|cloudpickle)\s*\.\s*loads?\s*\(
    | \b(?:curl|wget)\b[^\n|;]*\|\s*(?:sudo\s+)?(?:ba|z|da|k|c|fi)?sh\b
    """,
    re.VERBOSE,
)
_SUSPICIOUS = re.compile(
    r"<script\b|javascript:|\brm\s+-[a-z]*(?:rf|fr)\b|\bchmod\s+(?:[0-7]{3,4}|\+x)\b"
    r"|\b(?:curl|wget)\s+(?:-\S+\s+)*https?://|\bnc\s+-[a-z]*e\b|/dev/tcp/",
    re.IGNORECASE,
)


def find_code(text: str) -> str | None:
    """The first piece of ``text`` that reads like code meant to run, or None.

    Conservative on purpose: Python imports of risky modules, ``os.system(``,
    ``subprocess.*(``, ``eval(``/``exec(``, ``__import__``, unpickling calls and
    ``curl ... | sh``. Descriptions, URLs and ``{"format": "pt"}`` never match.
    """
    return _excerpt(text, _CODE.search(text))


def find_suspicious(text: str) -> str | None:
    """The first piece of ``text`` that looks like markup or a shell command, or None."""
    return _excerpt(text, _SUSPICIOUS.search(text))


def scan_json(ctx: ScanContext, data: memoryview) -> None:
    """Scan a JSON file: chat templates, Keras model configs; non-JSON falls back to text."""
    if len(data) > ctx.limits.max_json_bytes:
        _report_too_large(ctx, data, Severity.MEDIUM)
        return
    raw = bytes(data)
    try:
        # The encoding json.loads(bytes) picks (Keras reads config.json as bytes): UTF-8
        # with or without BOM, UTF-16 and UTF-32, so a config in any of them is checked.
        text = raw.decode(json.detect_encoding(raw)).removeprefix("\ufeff")
    except (UnicodeDecodeError, LookupError):
        _scan_text_content(ctx, raw.decode("utf-8", "replace"))
        return
    templates = _TemplateCollector()
    try:
        parsed = json.loads(text, object_pairs_hook=templates.collect_pairs, parse_int=_lenient_int)
    except (ValueError, RecursionError):
        _scan_text_content(ctx, text)
        return
    if _is_keras_config(parsed) or _base_name(ctx.path) == KERAS_CONFIG_NAME:
        # Keras deserializes whatever config.json holds, lists and plain dicts included
        # (their values are deserialized in turn), so a .keras config is walked whatever
        # its top level looks like.
        keras.scan_keras_config(ctx, parsed)
    templates.scan(ctx)


def scan_text(ctx: ScanContext, data: memoryview) -> None:
    """Scan text: standalone templates and YAML holding templates; other text is skipped."""
    if len(data) > ctx.limits.max_json_bytes:
        head = bytes(data[:HEAD_BYTES]).decode("utf-8", "replace")
        templated = _claims_template(ctx.path) or looks_like_template(head)
        _report_too_large(ctx, data, Severity.MEDIUM if templated else Severity.INFO)
        return
    text = bytes(data).decode("utf-8", "replace")
    _scan_text_content(ctx, text.removeprefix("\ufeff"))


class _TemplateCollector:
    """Collects template strings while JSON or YAML is parsed, keyed by their text."""

    def __init__(self) -> None:
        # text -> (where it was found, whether it is certainly a template)
        self.found: dict[str, tuple[str, bool]] = {}

    def add(self, key: str, value: str, certain: bool) -> None:
        if certain or looks_like_template(value):
            known = self.found.get(value)
            if known is None or (certain and not known[1]):
                self.found[value] = (f"key {key!r}", certain)

    def add_value(self, key: str, value: object) -> None:
        certain = key.lower().endswith("chat_template")
        if isinstance(value, str):
            self.add(key, value, certain)
        elif certain and isinstance(value, list):
            # transformers' list form: [{"name": "default", "template": "..."}, ...]
            for item in value:
                if isinstance(item, dict) and isinstance(item.get("template"), str):
                    self.add(f"{key}[{item.get('name')!r}]", item["template"], True)

    def collect_pairs(self, pairs: list[tuple[str, object]]) -> dict[str, object]:
        # Every pair is seen here, duplicates included, so a second "chat_template" that
        # a different loader might prefer is analysed too.
        for key, value in pairs:
            self.add_value(key, value)
        return dict(pairs)

    def scan(self, ctx: ScanContext) -> None:
        for text, (origin, certain) in self.found.items():
            scan_template(
                ctx, text, origin=origin, unparsable=Severity.MEDIUM if certain else Severity.INFO
            )


def _scan_text_content(ctx: ScanContext, text: str) -> None:
    if not looks_like_template(text):
        return
    # PyYAML parses about a megabyte a second, so only template-sized YAML is parsed;
    # larger text falls through to the template check, which reports it as too large.
    if len(text) <= ctx.limits.max_template_bytes and _YAML_START.match(_first_line(text)):
        templates = _yaml_templates(text, ctx.limits)
        if templates is not None and templates.found:
            templates.scan(ctx)
            return
    # A file is certainly a template when its name says so, or when it is YAML whose
    # chat_template key was too large to parse ("apply_chat_template" in a README is not).
    certain = _claims_template(ctx.path) or _CHAT_TEMPLATE_KEY.search(text) is not None
    scan_template(
        ctx, text, origin="the file", unparsable=Severity.MEDIUM if certain else Severity.INFO
    )


def _yaml_templates(text: str, limits: Limits) -> _TemplateCollector | None:
    templates = _TemplateCollector()
    try:
        for document in yaml.safe_load_all(text):
            for key, value in _walk(document, limits.max_metadata_entries):
                templates.add_value(key, value)
    except Exception:  # PyYAML raises many types on hostile text; it only means "not YAML"
        return None
    return templates


def _walk(root: object, max_nodes: int) -> Iterator[tuple[str, object]]:
    """(key, value) for every value under ``root``; each container is entered once."""
    stack: list[tuple[str, object]] = [("", root)]
    entered: set[int] = set()
    visited = 0
    while stack and visited < max_nodes:
        key, value = stack.pop()
        visited += 1
        if isinstance(value, dict | list):
            if id(value) in entered:
                continue
            entered.add(id(value))
            if isinstance(value, dict):
                stack.extend((str(k), v) for k, v in value.items())
            else:
                stack.extend((key, v) for v in value)
        yield key, value


def _report_too_large(ctx: ScanContext, data: memoryview, severity: Severity) -> None:
    ctx.report(
        TOO_LARGE,
        f"{len(data)} bytes, over limits.max_json_bytes ({ctx.limits.max_json_bytes}); not parsed",
        severity=severity,
    )


def _is_keras_config(parsed: object) -> bool:
    if not isinstance(parsed, dict):
        return False
    return ("class_name" in parsed and "config" in parsed) or (
        "module" in parsed and "registered_name" in parsed
    )


def _base_name(path: str) -> str:
    return PurePosixPath(path.rpartition("!")[2]).name.lower()


def _claims_template(path: str) -> bool:
    name = _base_name(path)
    return name.endswith(_TEMPLATE_SUFFIXES) or "chat_template" in name


_FIRST_LINE = re.compile(r"^[ \t]*([^\s#].*)$", re.MULTILINE)


def _first_line(text: str) -> str:
    """The first line that is neither blank nor a comment, stripped."""
    match = _FIRST_LINE.search(text)
    return match.group(1).strip() if match else ""


def _lenient_int(digits: str) -> int | float:
    # Python refuses to convert integers of more than 4300 digits; a config is still
    # valid JSON with one, so keep parsing (the value itself does not matter here).
    return int(digits) if len(digits) <= 4000 else float("inf")


def _excerpt(text: str, match: re.Match[str] | None, context: int = 60) -> str | None:
    if match is None:
        return None
    start = max(0, match.start() - context)
    return text[start : match.end() + context].strip()
