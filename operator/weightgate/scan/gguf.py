"""Scanner for GGUF: header structure, tensor layout, chat templates and metadata strings.

GGUF weights cannot carry code, but ``tokenizer.chat_template`` (and the named variants
``tokenizer.chat_template.<name>``) is a Jinja template that llama-cpp-python rendered
outside a sandbox before CVE-2024-34359 was fixed, and that other servers render today.
Every template is analysed statically (:mod:`weightgate.scan.template`). llama.cpp renders
no other key, but another tool might: other strings holding Jinja syntax that reaches for
Python internals are reported at LOW, never more. Structural
problems that llama.cpp refuses are MEDIUM: the verdict fails closed on files that loaders
would read differently from the scanner.
"""

from __future__ import annotations

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats import gguf, jinja
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Rule, Severity, rule
from weightgate.scan.template import scan_template
from weightgate.scan.text import find_code

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"

_STRUCTURE_HELP = (
    "llama.cpp refuses such files, and other readers may read them differently, so the "
    "verdict fails closed. Re-convert the model with llama.cpp's own tools."
)

INVALID_HEADER = rule(
    "gguf.invalid-header",
    Severity.MEDIUM,
    "The GGUF header cannot be read",
    "Bad magic or version, a truncated header, an unknown value type or an impossible "
    "count. The rest of the file was not checked. " + _STRUCTURE_HELP,
)
LIMIT_EXCEEDED = rule(
    "gguf.limit-exceeded",
    Severity.MEDIUM,
    "A count, length or the header size exceeds a configured limit",
    "The rest of the header was not read. Raise the named limit only for a file known to "
    "be legitimate.",
)
OBSOLETE_VERSION = rule(
    "gguf.obsolete-version",
    Severity.LOW,
    "GGUF version 1",
    "Current llama.cpp no longer loads GGUF v1; re-convert the model.",
)
DUPLICATE_KEY = rule(
    "gguf.duplicate-key",
    Severity.MEDIUM,
    "A metadata key appears twice (or is empty)",
    "Readers disagree on which value counts: a second chat template can hide behind the "
    "first. " + _STRUCTURE_HELP,
)
INVALID_ALIGNMENT = rule(
    "gguf.invalid-alignment",
    Severity.MEDIUM,
    "general.alignment is not a u32 power of two",
    "Tensor offsets cannot be interpreted reliably. " + _STRUCTURE_HELP,
)
DUPLICATE_TENSOR = rule(
    "gguf.duplicate-tensor",
    Severity.MEDIUM,
    "Two tensors have the same name",
    "Loaders pick different ones. " + _STRUCTURE_HELP,
)
INVALID_TENSOR = rule(
    "gguf.invalid-tensor",
    Severity.MEDIUM,
    "A tensor info is invalid (name too long, shape overflow, partial blocks)",
    _STRUCTURE_HELP,
)
UNKNOWN_TENSOR_TYPE = rule(
    "gguf.unknown-tensor-type",
    Severity.MEDIUM,
    "A tensor has a ggml type weightgate does not know",
    "Its size, and so the layout of every later tensor, cannot be checked. If ggml added "
    "the type recently, update weightgate. " + _STRUCTURE_HELP,
)
MISALIGNED_OFFSET = rule(
    "gguf.misaligned-offset",
    Severity.MEDIUM,
    "A tensor offset is not a multiple of the alignment",
    _STRUCTURE_HELP,
)
OFFSET_GAP = rule(
    "gguf.offset-gap",
    Severity.MEDIUM,
    "Bytes between tensors belong to no tensor",
    "Uncovered bytes are where a hidden payload would sit. " + _STRUCTURE_HELP,
)
OFFSET_OVERLAP = rule(
    "gguf.offset-overlap",
    Severity.MEDIUM,
    "A tensor overlaps the one before it",
    _STRUCTURE_HELP,
)
OFFSET_OUT_OF_BOUNDS = rule(
    "gguf.offset-out-of-bounds",
    Severity.MEDIUM,
    "A tensor runs past the end of the file",
    "The file is truncated or the offsets are forged. " + _STRUCTURE_HELP,
)
TRAILING_BYTES = rule(
    "gguf.trailing-bytes",
    Severity.LOW,
    "Bytes after the last tensor belong to no tensor",
    "llama.cpp ignores them. Appended data can be a second file (a polyglot); inspect "
    "it if the file came from an untrusted source.",
)
INVALID_CHAT_TEMPLATE = rule(
    "gguf.invalid-chat-template",
    Severity.MEDIUM,
    "A chat template key does not hold a string",
    "The template could not be analysed, so the verdict fails closed.",
)
CODE_IN_METADATA = rule(
    "gguf.code-in-metadata",
    Severity.MEDIUM,
    "A metadata string reads like code meant to run",
    "Loading GGUF never runs metadata, but a tool that evals it would. Find out why code is there.",
)

TEMPLATE_IN_METADATA = rule(
    "gguf.template-in-metadata",
    Severity.LOW,
    "A metadata string other than the chat template holds a risky Jinja template",
    "llama.cpp only renders tokenizer.chat_template*, so this text is not executed on "
    "load; a tool that renders other metadata as a template would run the dunder or "
    "escape constructs it contains. Find out why it is there.",
)

_FAULT_RULES: dict[gguf.Fault, Rule] = {
    gguf.Fault.OBSOLETE_VERSION: OBSOLETE_VERSION,
    gguf.Fault.DUPLICATE_KEY: DUPLICATE_KEY,
    gguf.Fault.INVALID_ALIGNMENT: INVALID_ALIGNMENT,
    gguf.Fault.DUPLICATE_TENSOR: DUPLICATE_TENSOR,
    gguf.Fault.INVALID_TENSOR: INVALID_TENSOR,
    gguf.Fault.UNKNOWN_TENSOR_TYPE: UNKNOWN_TENSOR_TYPE,
    gguf.Fault.MISALIGNED_OFFSET: MISALIGNED_OFFSET,
    gguf.Fault.OFFSET_GAP: OFFSET_GAP,
    gguf.Fault.OFFSET_OVERLAP: OFFSET_OVERLAP,
    gguf.Fault.OFFSET_OUT_OF_BOUNDS: OFFSET_OUT_OF_BOUNDS,
}


def scan_gguf(ctx: ScanContext, data: memoryview) -> None:
    """Check a GGUF file's header, tensor layout, chat templates and metadata strings."""
    try:
        parsed = gguf.read_gguf(data, ctx.limits)
    except LimitExceeded as exc:
        ctx.report(LIMIT_EXCEEDED, str(exc), offset=exc.offset)
        return
    except FormatError as exc:
        ctx.report(INVALID_HEADER, str(exc), offset=exc.offset)
        return
    ctx.report_problems(parsed.problems, _FAULT_RULES)
    if parsed.trailing_bytes:
        ctx.report(
            TRAILING_BYTES,
            f"{parsed.trailing_bytes} bytes after the last tensor",
            offset=len(data) - parsed.trailing_bytes,
        )
    for field in parsed.fields:
        if field.key.startswith(CHAT_TEMPLATE_KEY) and field.key != "tokenizer.chat_templates":
            _scan_chat_template(ctx, field)
        elif isinstance(field.value, str):
            code = find_code(field.value)
            if code is not None:
                ctx.report(
                    CODE_IN_METADATA,
                    f"metadata {field.key!r} reads like code",
                    offset=field.value_offset,
                    evidence=code,
                )
            if "{{" in field.value or "{%" in field.value:
                _scan_other_template(ctx, field, field.value)


def _scan_chat_template(ctx: ScanContext, field: gguf.GGUFField) -> None:
    if not isinstance(field.value, str):
        ctx.report(
            INVALID_CHAT_TEMPLATE,
            f"{field.key} is a {field.value_type.name}, not a string",
            offset=field.value_offset,
            evidence=field.key,
        )
        return
    scan_template(ctx, field.value, origin=f"key {field.key!r}", offset=field.value_offset)


def _scan_other_template(ctx: ScanContext, field: gguf.GGUFField, text: str) -> None:
    # Not a template any loader renders: text that does not parse or is too big is no
    # finding, and hazards are capped at LOW (they only matter to a careless tool).
    try:
        hazards = jinja.analyse_template(text, ctx.limits.max_template_bytes)
    except (FormatError, LimitExceeded):
        return
    if hazards:
        names = ", ".join(dict.fromkeys(h.name for h in hazards))
        ctx.report(
            TEMPLATE_IN_METADATA,
            f"metadata {field.key!r} is Jinja that reaches for {names[:200]}",
            offset=field.value_offset,
            evidence=hazards[0].name,
        )
