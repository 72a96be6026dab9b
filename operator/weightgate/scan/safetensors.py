"""Scanner for safetensors: header structure, data layout and metadata strings.

safetensors cannot carry code, so what matters is that the header says exactly one thing
to every reader (no duplicates, no gaps, no overlaps, no bytes outside any tensor where a
second payload could hide) and that the free-form ``__metadata__`` strings hold no code
that some downstream tool might run. Structural problems are MEDIUM: the Rust loader
refuses most of them, and a file that loaders read differently from the scanner fails
closed.
"""

from __future__ import annotations

from weightgate.formats import safetensors as st
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Rule, Severity, rule
from weightgate.scan.text import find_code, find_suspicious

_STRUCTURE_HELP = (
    "The safetensors loader refuses such files or reads them differently from other "
    "tools, so the verdict fails closed. Re-export the weights with safetensors itself."
)

HEADER_TOO_LARGE = rule(
    "safetensors.header-too-large",
    Severity.MEDIUM,
    "The JSON header is larger than limits.max_header_bytes",
    "The header was not parsed. safetensors itself refuses headers over 100 MB; raise "
    "limits.max_header_bytes only for a file known to be legitimate.",
)
HEADER_OUT_OF_BOUNDS = rule(
    "safetensors.header-out-of-bounds",
    Severity.MEDIUM,
    "The header length points past the end of the file",
    "The file is truncated or the length was forged (2^63 is a classic). " + _STRUCTURE_HELP,
)
INVALID_HEADER = rule(
    "safetensors.invalid-header",
    Severity.MEDIUM,
    "The header is not valid JSON of the safetensors schema",
    "Not UTF-8, not JSON, not an object, or a tensor entry without a proper dtype, shape "
    "and data_offsets. " + _STRUCTURE_HELP,
)
DUPLICATE_KEY = rule(
    "safetensors.duplicate-key",
    Severity.MEDIUM,
    "A tensor name or metadata key appears twice in the header",
    "JSON readers disagree on which duplicate wins (safetensors keeps the last), so two "
    "tools can load different weights from the same file. " + _STRUCTURE_HELP,
)
UNKNOWN_FIELD = rule(
    "safetensors.unknown-field",
    Severity.LOW,
    "A tensor entry has fields the format does not define",
    "Loaders ignore them; they may carry data meant for another tool. Harmless to the "
    "weights themselves.",
)
UNKNOWN_DTYPE = rule(
    "safetensors.unknown-dtype",
    Severity.MEDIUM,
    "A tensor has a dtype safetensors does not define",
    "Its size cannot be checked against its offsets. " + _STRUCTURE_HELP,
)
SIZE_MISMATCH = rule(
    "safetensors.size-mismatch",
    Severity.MEDIUM,
    "A tensor's shape and dtype do not match the bytes its offsets span",
    "The extra or missing bytes are read differently by different loaders. " + _STRUCTURE_HELP,
)
OFFSET_OUT_OF_BOUNDS = rule(
    "safetensors.offset-out-of-bounds",
    Severity.MEDIUM,
    "A tensor's offsets run past the data buffer or end before they begin",
    "Reading the tensor would run outside the file. " + _STRUCTURE_HELP,
)
OFFSET_OVERLAP = rule(
    "safetensors.offset-overlap",
    Severity.MEDIUM,
    "Two tensors share bytes",
    "Overlapping tensors alias each other's data; the format forbids it. " + _STRUCTURE_HELP,
)
OFFSET_GAP = rule(
    "safetensors.offset-gap",
    Severity.MEDIUM,
    "Bytes between tensors belong to no tensor",
    "Uncovered bytes are where a hidden payload would sit. " + _STRUCTURE_HELP,
)
TRAILING_BYTES = rule(
    "safetensors.trailing-bytes",
    Severity.MEDIUM,
    "Bytes after the last tensor belong to no tensor",
    "Appended data (another file, a second payload) is not part of the model. " + _STRUCTURE_HELP,
)
INVALID_METADATA = rule(
    "safetensors.invalid-metadata",
    Severity.MEDIUM,
    "__metadata__ is not an object of strings",
    "safetensors refuses non-string metadata values. " + _STRUCTURE_HELP,
)
METADATA_TOO_LARGE = rule(
    "safetensors.metadata-too-large",
    Severity.MEDIUM,
    "A metadata value is larger than limits.max_string_bytes",
    "The value was not checked for code. Raise the limit if it is legitimate.",
)
CODE_IN_METADATA = rule(
    "safetensors.code-in-metadata",
    Severity.MEDIUM,
    "A metadata value reads like code meant to run",
    "Loading safetensors never runs metadata, but a tool or script that evals it would. "
    "Legitimate metadata is short descriptive strings; find out why code is there.",
)
SUSPICIOUS_METADATA = rule(
    "safetensors.suspicious-metadata",
    Severity.LOW,
    "A metadata value holds markup or a shell command",
    "Harmless to loaders; dangerous if a model card or UI renders or runs it unescaped.",
)

_FAULT_RULES: dict[st.Fault, Rule] = {
    st.Fault.HEADER_TOO_LARGE: HEADER_TOO_LARGE,
    st.Fault.HEADER_OUT_OF_BOUNDS: HEADER_OUT_OF_BOUNDS,
    st.Fault.INVALID_HEADER: INVALID_HEADER,
    st.Fault.DUPLICATE_KEY: DUPLICATE_KEY,
    st.Fault.UNKNOWN_FIELD: UNKNOWN_FIELD,
    st.Fault.UNKNOWN_DTYPE: UNKNOWN_DTYPE,
    st.Fault.SIZE_MISMATCH: SIZE_MISMATCH,
    st.Fault.OFFSET_OUT_OF_BOUNDS: OFFSET_OUT_OF_BOUNDS,
    st.Fault.OFFSET_OVERLAP: OFFSET_OVERLAP,
    st.Fault.OFFSET_GAP: OFFSET_GAP,
    st.Fault.TRAILING_BYTES: TRAILING_BYTES,
    st.Fault.INVALID_METADATA: INVALID_METADATA,
    st.Fault.METADATA_TOO_LARGE: METADATA_TOO_LARGE,
}


def scan_safetensors(ctx: ScanContext, data: memoryview) -> None:
    """Check a safetensors file's header and metadata, without reading tensor data."""
    try:
        header = st.read_safetensors_header(data, ctx.limits)
    except (st.SafetensorsError, st.SafetensorsLimitExceeded) as exc:
        ctx.report(_FAULT_RULES[exc.fault], str(exc), offset=exc.offset)
        return
    ctx.report_problems(header.problems, _FAULT_RULES)
    for key, value in (header.metadata or {}).items():
        code = find_code(value)
        if code is not None:
            ctx.report(
                CODE_IN_METADATA,
                f"metadata {key!r} reads like code",
                offset=header.metadata_offset,
                evidence=code,
            )
            continue
        suspicious = find_suspicious(value)
        if suspicious is not None:
            ctx.report(
                SUSPICIOUS_METADATA,
                f"metadata {key!r} holds markup or a shell command",
                offset=header.metadata_offset,
                evidence=suspicious,
            )
