"""Scanner for ONNX models: external-data paths and operators outside the standard.

ONNX has no code-execution primitive of its own, so what can hurt is what the runtime
does on the model's behalf: open the files that external-data entries name (a path that
leaves the model directory reads, and on some loaders maps, arbitrary files), and load the
kernels of custom-operator domains (which only exist as native libraries registered by
the serving process, and are where memory-safety bugs live).
"""

from __future__ import annotations

import re
from collections import defaultdict

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.detect import FileFormat
from weightgate.formats.onnx import ExternalTensor, OnnxModel, OpUse, read_onnx_model
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Severity, rule

EXTERNAL_DATA_ESCAPE = rule(
    "onnx.external-data-escape",
    Severity.HIGH,
    "An external-data path points outside the model directory",
    "ONNX loaders join the location with the model's directory and open the result. An "
    "absolute path, '..', a drive letter or a backslash lets a model read (and expose "
    "through its outputs) any file the server can read. Re-export the model with its data "
    "files next to it.",
)
EXTERNAL_DATA = rule(
    "onnx.external-data",
    Severity.INFO,
    "Tensors stored in an external data file",
    "The model's weights live in the named file next to the model; it must be fetched "
    "and scanned with it.",
)
CUSTOM_OP_DOMAIN = rule(
    "onnx.custom-op-domain",
    Severity.MEDIUM,
    "Operators from a non-standard domain",
    "The model needs operator kernels that ONNX does not define; the serving process "
    "must load a native library for them. Onnxruntime's own contrib domain (com.microsoft) "
    "is common in exported transformers and reported as low. Check that the domain is one "
    "your runtime ships, and allow it in policy.",
)

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training"})
"""Operator sets defined by the ONNX standard itself."""

CONTRIB_DOMAINS = frozenset(
    {
        "com.microsoft",
        "com.microsoft.experimental",
        "com.microsoft.nchwc",
        "com.microsoft.dml",
        "com.ms.internal.nhwc",
    }
)
"""Onnxruntime's built-in contrib domains (onnxruntime/core/graph/constants.h)."""

MAX_REPORTED_FILES = 64
"""External-data files reported one by one; the rest are counted in one more finding."""

MAX_LISTED_OPS = 20
"""Operators named in one custom-domain finding."""

_DRIVE = re.compile(r"^[A-Za-z]:")

ORT_MEMORY_ADDRESS_TAG = "*/_ORT_MEM_ADDR_/*"
"""Location onnxruntime reads as "the offset entry is a pointer into this process"
(kTensorProtoMemoryAddressTag in tensorprotoutils.h): a model naming it reads whatever
memory its offset points at."""


def scan_onnx(ctx: ScanContext, data: memoryview) -> None:
    """Scan an ONNX model (or a protobuf that was only routed here by its first bytes).

    Raises:
        FormatError: A file named ``.onnx`` is not a valid ModelProto.
        LimitExceeded: The model is larger than the walk may go.
    """
    named_onnx = ctx.path.lower().endswith(".onnx")
    try:
        model = read_onnx_model(
            data,
            max_fields=ctx.limits.max_protobuf_fields,
            max_string_bytes=ctx.limits.max_string_bytes,
            max_entries=ctx.limits.max_metadata_entries,
        )
        if model.graphs == 0 and not model.functions:
            raise FormatError("no graph and no functions: not an ONNX model", 0)
    except LimitExceeded:
        raise  # a model too big to walk is still a model: fail closed, whatever its name
    except FormatError:
        if named_onnx:
            raise
        # Detection routed it here for starting like a ModelProto; it is not one.
        ctx.scan_as(FileFormat.UNKNOWN, data)
        return
    _report_external_data(ctx, model.external_tensors)
    _report_custom_domains(ctx, model)


def location_escape(location: str) -> str | None:
    """Why an external-data ``location`` resolves outside the model directory, or None."""
    if "\x00" in location:
        return "contains a NUL byte"
    if location == ORT_MEMORY_ADDRESS_TAG:
        return "is onnxruntime's in-memory tag: the offset is read as a raw memory address"
    if "\\" in location:
        return "contains a backslash (a Windows path separator)"
    if location.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(location):
        return "starts with a drive letter"
    if ".." in location.split("/"):
        return "climbs out of the model directory with '..'"
    return None


def _report_external_data(ctx: ScanContext, tensors: list[ExternalTensor]) -> None:
    by_location: dict[str, list[ExternalTensor]] = defaultdict(list)
    for tensor in tensors:
        for location in tensor.locations or ("",):
            by_location[location].append(tensor)
    reported = 0
    for location, users in by_location.items():
        names = _short_list([t.name or "<unnamed>" for t in users], 5)
        unmarked = "" if all(t.external for t in users) else " (some not marked EXTERNAL)"
        problem = location_escape(location)
        if problem is not None:
            # Every escaping path is reported: each one is a file the model can reach.
            ctx.report(
                EXTERNAL_DATA_ESCAPE,
                f"external data location {problem}; used by {len(users)} tensor(s): "
                f"{names}{unmarked}",
                offset=users[0].offset,
                evidence=location,
            )
            continue
        reported += 1
        if reported <= MAX_REPORTED_FILES:
            what = repr(location) if location else "no location entry"
            ctx.report(
                EXTERNAL_DATA,
                f"{len(users)} tensor(s) stored in external file {what}: {names}{unmarked}",
                offset=users[0].offset,
                evidence=location,
            )
    if reported > MAX_REPORTED_FILES:
        ctx.report(
            EXTERNAL_DATA,
            f"{reported - MAX_REPORTED_FILES} more external data files not listed",
        )


def _report_custom_domains(ctx: ScanContext, model: OnnxModel) -> None:
    by_domain: dict[str, list[tuple[str, OpUse]]] = defaultdict(list)
    for (domain, op_type, overload), use in model.ops.items():
        if domain in STANDARD_DOMAINS or (domain, op_type, overload) in model.functions:
            continue  # standard operator, or a call of a function the model defines
        by_domain[domain].append((op_type, use))
    for domain, ops in sorted(by_domain.items()):
        ops.sort(key=lambda item: item[1].offset)
        nodes = sum(use.count for _, use in ops)
        listed = _short_list([f"{op} (x{use.count})" for op, use in ops], MAX_LISTED_OPS)
        first = ops[0][1]
        ctx.report(
            CUSTOM_OP_DOMAIN,
            f"{nodes} node(s) use operators of domain {domain!r}: {listed}; first in {first.graph}",
            offset=first.offset,
            evidence=domain,
            severity=Severity.LOW if domain in CONTRIB_DOMAINS else None,
        )


def _short_list(items: list[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items) - limit} more)"
