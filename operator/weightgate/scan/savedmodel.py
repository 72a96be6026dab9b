"""Scanner for TensorFlow SavedModel graphs (``saved_model.pb``).

A SavedModel runs its graph's operations when served, so the question is which
operations it contains. The walk reads only op names, over the bounded wire-format reader
(no TensorFlow import, no copy of embedded constants). Field numbers, from
tensorflow/core/protobuf/saved_model.proto, meta_graph.proto and
tensorflow/core/framework/graph.proto, function.proto, node_def.proto, op_def.proto::

    SavedModel.meta_graphs = 2        MetaGraphDef.graph_def = 2
    GraphDef.node = 1                 GraphDef.library = 2
    FunctionDefLibrary.function = 1   FunctionDef.signature = 1 (OpDef.name = 1)
    FunctionDef.node_def = 3          NodeDef.name = 1, NodeDef.op = 2
    NodeDef.attr = 5 (map entry: key = 1, value = 2)
    AttrValue.s = 2 (tensorflow/core/framework/attr_value.proto)

The list of flagged operations is short on purpose: each one reaches outside the tensor
computation. Save/Restore variants are not listed: every SavedModel with variables has
them, and they only touch the checkpoint files the loader names. ``PrintV2`` is flagged
only when its ``output_stream`` attribute is ``file://<path>`` (the kernel appends to that
file); printing to stderr or a log is common. Other file ops take their path as an input
tensor, not an attribute, so the op name is all there is to quote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weightgate.formats.protobuf import ProtoField, ProtoReader
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Severity, rule

PYTHON_OP = rule(
    "savedmodel.python-op",
    Severity.CRITICAL,
    "The graph calls back into Python (PyFunc)",
    "PyFunc, PyFuncStateless and EagerPyFunc run a Python function of the serving "
    "process, by name, with inputs the request controls. A served model has no reason to "
    "do so; treat the model as hostile unless you wrote that function.",
)
FILE_OP = rule(
    "savedmodel.file-op",
    Severity.MEDIUM,
    "The graph reads, lists or writes files by path",
    "ReadFile and MatchingFiles let a model read or list files of the server and return "
    "them as outputs; WriteFile and PrintV2 with a file:// output_stream (high) let it "
    "plant or append to files. Models rarely need them at "
    "serving time; check where the paths come from.",
)

PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
FILE_OPS: dict[str, Severity] = {
    "ReadFile": Severity.MEDIUM,
    "MatchingFiles": Severity.MEDIUM,
    "WriteFile": Severity.HIGH,
    # Other ways a graph reads a file by path: memory-mapping one (ImmutableConst), whole-
    # file readers and the file-backed datasets. Lookup-table initialisers from text files
    # are left out: vocabularies are assets of the model itself (TF Hub text models).
    "ImmutableConst": Severity.MEDIUM,
    "WholeFileReader": Severity.MEDIUM,
    "WholeFileReaderV2": Severity.MEDIUM,
    "TextLineDataset": Severity.MEDIUM,
    "TFRecordDataset": Severity.MEDIUM,
    "TFRecordDatasetV2": Severity.MEDIUM,
    "FixedLengthRecordDataset": Severity.MEDIUM,
    "FixedLengthRecordDatasetV2": Severity.MEDIUM,
    # tfdbg ops write their dumps to the directories named in their debug_urls attribute.
    "DebugIdentity": Severity.HIGH,
    "DebugIdentityV2": Severity.HIGH,
    "DebugIdentityV3": Severity.HIGH,
    "DebugNanCount": Severity.HIGH,
    "DebugNumericSummary": Severity.HIGH,
    "DebugNumericSummaryV2": Severity.HIGH,
}

_SAVED_MODEL_META_GRAPHS = 2
_META_GRAPH_GRAPH_DEF = 2
_GRAPH_NODE = 1
_GRAPH_LIBRARY = 2
_LIBRARY_FUNCTION = 1
_FUNCTION_SIGNATURE = 1
_FUNCTION_NODE_DEF = 3
_OP_DEF_NAME = 1
_NODE_NAME = 1
_NODE_OP = 2

PRINT_OP = "PrintV2"
PRINT_STREAM_ATTR = "output_stream"
FILE_STREAM_PREFIX = "file://"
"""PrintV2 appends to the file named after this prefix (tensorflow/core/kernels/logging_ops.cc)."""

_NODE_ATTR = 5
_MAP_KEY = 1
_MAP_VALUE = 2
_ATTR_VALUE_S = 2

MAX_LISTED_NODES = 10
"""Node names quoted in one finding."""


@dataclass
class _OpUses:
    offset: int
    nodes: list[str] = field(default_factory=list)
    count: int = 0


def scan_savedmodel(ctx: ScanContext, data: memoryview) -> None:
    """Report the dangerous operations of a SavedModel's graphs and functions.

    Raises:
        FormatError: The bytes are not a valid protobuf message.
        LimitExceeded: A bound was reached.
    """
    reader = ProtoReader.within(data, ctx.limits)
    # Keyed by op name, or by "PrintV2 file://<path>" for prints into a file.
    flagged: dict[str, _OpUses] = {}
    for meta in reader.fields(0, len(data)):
        if meta.number != _SAVED_MODEL_META_GRAPHS:
            continue
        for item in reader.submessage(meta, 0, "MetaGraphDef"):
            if item.number == _META_GRAPH_GRAPH_DEF:
                _walk_graph(reader, item, 1, flagged)
    for op, uses in flagged.items():
        nodes = ", ".join(uses.nodes)
        more = (
            f", ... ({uses.count - len(uses.nodes)} more)" if uses.count > len(uses.nodes) else ""
        )
        where = f"{uses.count} node(s) run {op}: {nodes}{more}"
        if op in PYTHON_OPS:
            ctx.report(PYTHON_OP, where, offset=uses.offset, evidence=op)
        elif op.startswith(f"{PRINT_OP} "):  # op names have no spaces: only ours match
            path = op.removeprefix(f"{PRINT_OP} {FILE_STREAM_PREFIX}")
            ctx.report(
                FILE_OP,
                f"{uses.count} node(s) run {PRINT_OP} appending to {path!r}: {nodes}{more}",
                offset=uses.offset,
                evidence=path,
                severity=Severity.HIGH,
            )
        else:
            ctx.report(FILE_OP, where, offset=uses.offset, evidence=op, severity=FILE_OPS[op])


def _walk_graph(
    reader: ProtoReader, graph: ProtoField, depth: int, flagged: dict[str, _OpUses]
) -> None:
    for item in reader.submessage(graph, depth, "GraphDef"):
        if item.number == _GRAPH_NODE:
            _check_node(reader, item, depth + 1, "graph", flagged)
        elif item.number == _GRAPH_LIBRARY:
            for function in reader.submessage(item, depth + 1, "FunctionDefLibrary"):
                if function.number == _LIBRARY_FUNCTION:
                    _walk_function(reader, function, depth + 2, flagged)


def _walk_function(
    reader: ProtoReader, function: ProtoField, depth: int, flagged: dict[str, _OpUses]
) -> None:
    # The name (in the signature) normally precedes the nodes, but a hand-made file may
    # reorder fields: look it up first instead of holding every node.
    name = "<unnamed function>"
    for item in reader.submessage(function, depth, "FunctionDef"):
        if item.number == _FUNCTION_SIGNATURE:
            for sub in reader.submessage(item, depth + 1, "OpDef"):
                if sub.number == _OP_DEF_NAME:
                    name = reader.text(sub, "OpDef.name")
    for item in reader.submessage(function, depth, "FunctionDef"):
        if item.number == _FUNCTION_NODE_DEF:
            _check_node(reader, item, depth + 1, f"function {name}", flagged)


def _check_node(
    reader: ProtoReader, node: ProtoField, depth: int, where: str, flagged: dict[str, _OpUses]
) -> None:
    name = op = ""
    for item in reader.submessage(node, depth, "NodeDef"):
        if item.number == _NODE_NAME:
            name = reader.text(item, "NodeDef.name")
        elif item.number == _NODE_OP:
            op = reader.text(item, "NodeDef.op")
    if op == PRINT_OP:
        stream = _string_attr(reader, node, depth, PRINT_STREAM_ATTR)
        if stream is None or not stream.startswith(FILE_STREAM_PREFIX):
            return
        op = f"{PRINT_OP} {stream[:200]}"
        prints = sum(key.startswith(f"{PRINT_OP} ") for key in flagged)
        if op not in flagged and prints >= MAX_LISTED_NODES:
            # One finding per path, but not one per node of a file made of prints.
            op = f"{PRINT_OP} {FILE_STREAM_PREFIX}<further paths>"
    elif op not in PYTHON_OPS and op not in FILE_OPS:
        return
    uses = flagged.setdefault(op, _OpUses(node.offset))
    uses.count += 1
    if len(uses.nodes) < MAX_LISTED_NODES:
        uses.nodes.append(f"{name or '<unnamed>'} ({where})")


def _string_attr(reader: ProtoReader, node: ProtoField, depth: int, key: str) -> str | None:
    """The string value (AttrValue.s) of attribute ``key`` of a NodeDef, if it has one."""
    value: str | None = None
    for item in reader.submessage(node, depth, "NodeDef"):
        if item.number != _NODE_ATTR:
            continue
        name = ""
        entry_value: ProtoField | None = None
        for sub in reader.submessage(item, depth + 1, "NodeDef.attr entry"):
            if sub.number == _MAP_KEY:
                name = reader.text(sub, "NodeDef.attr key")
            elif sub.number == _MAP_VALUE:
                entry_value = sub
        if name != key or entry_value is None:
            continue
        value = None  # a later entry replaces an earlier one, as in protobuf maps
        for sub in reader.submessage(entry_value, depth + 2, "AttrValue"):
            if sub.number == _ATTR_VALUE_S:
                value = reader.text(sub, "AttrValue.s")
    return value
