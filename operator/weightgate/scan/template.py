"""Rules for Jinja2 chat templates, wherever they were found (JSON, YAML, GGUF, files).

The analysis itself is :func:`weightgate.formats.jinja.analyse_template`; this module turns
its hazards into findings. Callers say how sure they are that the text is a template: a
``chat_template`` value that cannot be parsed fails closed, while a README that merely
contains ``{{`` only gets a note.
"""

from __future__ import annotations

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats import jinja
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Severity, rule

DUNDER_ACCESS = rule(
    "template.dunder-access",
    Severity.CRITICAL,
    "Template reaches for Python internals (dunder attributes, frames, globals)",
    "Attribute or item access to names like __class__, __globals__ or __subclasses__ is "
    "how template injection escapes to the interpreter (CVE-2024-34359). No chat template "
    "needs it. Do not load this model; replace the template with a known-good one.",
)
PRIVATE_ATTRIBUTE = rule(
    "template.private-attribute",
    Severity.HIGH,
    "Template reads a private attribute (a name starting with '_')",
    "Private attributes such as catch_warnings()._module lead to the interpreter; the "
    "Jinja sandbox refuses them, and chat templates never use them. Treat as an attack.",
)
ESCAPE_NAME = rule(
    "template.escape-name",
    Severity.HIGH,
    "Template names a way out of the template (os, eval, getattr, cycler.__init__ ...)",
    "Names of modules, builtins or Jinja/Flask globals used as objects are the stepping "
    "stones of template injection payloads. Legitimate chat templates only format "
    "messages. Review the template before loading the model.",
)
COMPUTED_ATTRIBUTE = rule(
    "template.computed-attribute",
    Severity.HIGH,
    "Template reads an attribute whose name is computed at render time",
    "The attr filter with a non-constant name hides which attribute is read, a common "
    "way to smuggle __class__ past filters. Chat templates have no use for it.",
)
PARSE_ERROR = rule(
    "template.parse-error",
    Severity.MEDIUM,
    "A chat template cannot be parsed",
    "The template was not analysed, so the verdict fails closed. Loaders may still render "
    "parts of it. Fix the template (or use the model's official one).",
)
TOO_LARGE = rule(
    "template.too-large",
    Severity.MEDIUM,
    "A chat template is larger than limits.max_template_bytes",
    "Chat templates are a few kilobytes; a huge one was not analysed and the verdict "
    "fails closed. Raise the limit if the template is known to be legitimate.",
)

_RULES = {
    jinja.HazardKind.DUNDER_ACCESS: DUNDER_ACCESS,
    jinja.HazardKind.PRIVATE_ATTRIBUTE: PRIVATE_ATTRIBUTE,
    jinja.HazardKind.ESCAPE_NAME: ESCAPE_NAME,
    jinja.HazardKind.COMPUTED_ATTRIBUTE: COMPUTED_ATTRIBUTE,
}


def scan_template(
    ctx: ScanContext,
    source: str,
    *,
    origin: str,
    offset: int | None = None,
    unparsable: Severity = Severity.MEDIUM,
) -> None:
    """Analyse one template and report what it reaches for.

    Args:
        ctx: Where findings go.
        source: The template text.
        origin: Where it came from, for messages (``key 'chat_template'``, ``the file``).
        offset: File offset of the template, when known (GGUF values).
        unparsable: Severity of parse-error and too-large findings: MEDIUM for text known
            to be a template, lower for text that only looks like one.
    """
    try:
        hazards = jinja.analyse_template(source, ctx.limits.max_template_bytes)
    except LimitExceeded as exc:
        ctx.report(
            TOO_LARGE,
            f"template in {origin} not analysed: {exc} (limits.max_template_bytes)",
            offset=offset,
            severity=unparsable,
        )
        return
    except FormatError as exc:
        ctx.report(
            PARSE_ERROR,
            f"template in {origin} does not parse: {exc}",
            offset=offset,
            evidence=_excerpt(source),
            severity=unparsable,
        )
        return
    for hazard in hazards:
        hidden = " (built from a constant expression)" if hazard.obfuscated else ""
        ctx.report(
            _RULES[hazard.kind],
            f"template in {origin}, line {hazard.lineno}: {_describe(hazard)}{hidden}",
            offset=offset,
            evidence=hazard.name,
        )


_PHRASES = {
    "attribute": "reads attribute {name!r}",
    "item": "reads item {name!r}",
    "name": "names {name!r}",
    "global used as an object": "uses the global {name!r} as an object",
    "string": "holds the string {name!r}",
    "keyword": "builds {name!r} from a keyword argument",
}


def _describe(hazard: jinja.TemplateHazard) -> str:
    phrase = _PHRASES.get(hazard.how, "passes {name!r} to the {how}")
    return phrase.format(name=hazard.name, how=hazard.how)


def looks_like_template(text: str) -> bool:
    """True when ``text`` contains a Jinja delimiter (``{{`` or ``{%``)."""
    return jinja.JINJA_DELIMITERS.search(text) is not None


def _excerpt(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
