"""Reader for ONNX models: the operators used and the tensors stored outside the model.

Spec: https://github.com/onnx/onnx/blob/main/onnx/onnx.proto (field numbers below).

The model is walked with the bounded wire-format reader in :mod:`.protobuf` rather than
``onnx.load_model_from_string``: a model with embedded weights is mostly tensor payload,
which the walk skips without copying, while the onnx package would copy the whole buffer
into ``bytes`` and then into the message (three times the model in memory), and would
stop at protobuf's 2 GiB message limit with an opaque error. The walk visits every place
an operator or tensor can hide: the main graph, subgraphs in node attributes (If, Loop,
Scan), model-local functions (and their default attributes), and training graphs.

Repeated occurrences of a singular message field (two ``graph`` fields) are all walked,
which is what protobuf's merge semantics make a loader see.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats.protobuf import ProtoField, ProtoReader, WireType

# ModelProto
_MODEL_IR_VERSION = 1
_MODEL_PRODUCER_NAME = 2
_MODEL_GRAPH = 7
_MODEL_OPSET_IMPORT = 8
_MODEL_TRAINING_INFO = 20
_MODEL_FUNCTIONS = 25
# TrainingInfoProto
_TRAINING_INITIALIZATION = 1
_TRAINING_ALGORITHM = 2
# GraphProto
_GRAPH_NODE = 1
_GRAPH_NAME = 2
_GRAPH_INITIALIZER = 5
_GRAPH_SPARSE_INITIALIZER = 15
# NodeProto
_NODE_OP_TYPE = 4
_NODE_ATTRIBUTE = 5
_NODE_DOMAIN = 7
_NODE_OVERLOAD = 8
# AttributeProto
_ATTR_T = 5
_ATTR_G = 6
_ATTR_TENSORS = 10
_ATTR_GRAPHS = 11
_ATTR_SPARSE_TENSOR = 22
_ATTR_SPARSE_TENSORS = 23
# FunctionProto
_FUNCTION_NAME = 1
_FUNCTION_NODE = 7
_FUNCTION_DOMAIN = 10
_FUNCTION_ATTRIBUTE_PROTO = 11
_FUNCTION_OVERLOAD = 13
# TensorProto
_TENSOR_NAME = 8
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
# SparseTensorProto
_SPARSE_VALUES = 1
_SPARSE_INDICES = 2
# StringStringEntryProto
_ENTRY_KEY = 1
_ENTRY_VALUE = 2

DATA_LOCATION_EXTERNAL = 1
"""TensorProto.DataLocation.EXTERNAL: the tensor's bytes live in another file."""

MAX_DISTINCT_OPS = 100_000
"""Distinct (domain, op_type) pairs kept; more than that is not a real model."""


@dataclass
class OpUse:
    """Where one operator (domain, op_type) is used.

    Attributes:
        count: Nodes using it.
        offset: Offset of the first such node.
        graph: Name of the graph or function holding the first such node.
    """

    count: int
    offset: int
    graph: str


@dataclass(frozen=True)
class ExternalTensor:
    """A tensor whose data the loader reads from another file.

    Attributes:
        name: The tensor's name.
        offset: Offset of the TensorProto in the model.
        locations: Every ``location`` entry (normally exactly one).
        external: True when data_location says EXTERNAL (the loader will open the file);
            entries on a tensor that does not say so are kept too, being suspicious.
    """

    name: str
    offset: int
    locations: tuple[str, ...]
    external: bool


@dataclass
class OnnxModel:
    """What the scanners need from an ONNX ModelProto.

    Attributes:
        ir_version: ModelProto.ir_version, when present.
        producer: ModelProto.producer_name.
        graphs: Top-level ``graph`` fields found.
        functions: Model-local functions as (domain, name, overload).
        ops: Every operator used by any node, keyed by (domain, op_type, overload).
        external_tensors: Tensors with external-data entries, in file order.
    """

    ir_version: int | None = None
    producer: str = ""
    graphs: int = 0
    functions: set[tuple[str, str, str]] = field(default_factory=set)
    ops: dict[tuple[str, str, str], OpUse] = field(default_factory=dict)
    external_tensors: list[ExternalTensor] = field(default_factory=list)


def read_onnx_model(
    data: memoryview, *, max_fields: int, max_string_bytes: int, max_entries: int
) -> OnnxModel:
    """Walk an ONNX ModelProto.

    Args:
        data: The serialized model.
        max_fields: Protobuf fields that may be read in total.
        max_string_bytes: Longest name, domain or path decoded.
        max_entries: Most external tensors kept.

    Raises:
        FormatError: The bytes are not a valid protobuf message of the ModelProto shape.
        LimitExceeded: A bound was reached.
    """
    walker = _ModelWalker(
        ProtoReader(data, max_fields=max_fields, max_string_bytes=max_string_bytes),
        max_entries,
    )
    walker.model(0, len(data))
    return walker.result


class _ModelWalker:
    def __init__(self, reader: ProtoReader, max_entries: int) -> None:
        self.reader = reader
        self.max_entries = max_entries
        self.result = OnnxModel()

    def model(self, start: int, end: int) -> None:
        reader = self.reader
        for item in reader.fields(start, end):
            number = item.number
            if number == _MODEL_IR_VERSION:
                _expect_varint(item, "ModelProto.ir_version")
                self.result.ir_version = item.value
            elif number == _MODEL_PRODUCER_NAME:
                self.result.producer = reader.text(item, "ModelProto.producer_name")
            elif number == _MODEL_GRAPH:
                self.result.graphs += 1
                self.graph(item, 0)
            elif number == _MODEL_TRAINING_INFO:
                for sub in reader.submessage(item, 0, "ModelProto.training_info"):
                    if sub.number in (_TRAINING_INITIALIZATION, _TRAINING_ALGORITHM):
                        self.graph(sub, 1)
            elif number == _MODEL_FUNCTIONS:
                self.function(item, 0)

    def graph(self, item: ProtoField, depth: int) -> None:
        # The name follows the nodes on the wire, so it is looked up first rather than
        # holding every node until the end of the graph.
        names = self.strings(item, depth, "GraphProto", {_GRAPH_NAME: "name"})
        label = names.get(_GRAPH_NAME) or "<unnamed graph>"
        for sub in self.reader.submessage(item, depth, "GraphProto"):
            if sub.number == _GRAPH_NODE:
                self.node(sub, depth + 1, label)
            elif sub.number == _GRAPH_INITIALIZER:
                self.tensor(sub, depth + 1)
            elif sub.number == _GRAPH_SPARSE_INITIALIZER:
                self.sparse_tensor(sub, depth + 1)

    def function(self, item: ProtoField, depth: int) -> None:
        wanted = {
            _FUNCTION_NAME: "name",
            _FUNCTION_DOMAIN: "domain",
            _FUNCTION_OVERLOAD: "overload",
        }
        names = self.strings(item, depth, "FunctionProto", wanted)
        name = names.get(_FUNCTION_NAME, "")
        domain = names.get(_FUNCTION_DOMAIN, "")
        self.result.functions.add((domain, name, names.get(_FUNCTION_OVERLOAD, "")))
        for sub in self.reader.submessage(item, depth, "FunctionProto"):
            if sub.number == _FUNCTION_NODE:
                self.node(sub, depth + 1, f"function {domain}:{name}")
            elif sub.number == _FUNCTION_ATTRIBUTE_PROTO:
                self.attribute(sub, depth + 1)

    def strings(
        self, item: ProtoField, depth: int, message: str, wanted: dict[int, str]
    ) -> dict[int, str]:
        """The string fields ``wanted`` of a message (last occurrence wins, as in protobuf)."""
        found: dict[int, str] = {}
        for sub in self.reader.submessage(item, depth, message):
            what = wanted.get(sub.number)
            if what is not None:
                found[sub.number] = self.reader.text(sub, f"{message}.{what}")
        return found

    def node(self, item: ProtoField, depth: int, graph: str) -> None:
        reader = self.reader
        op_type = domain = overload = ""
        for sub in reader.submessage(item, depth, "NodeProto"):
            number = sub.number
            if number == _NODE_OP_TYPE:
                op_type = reader.text(sub, "NodeProto.op_type")
            elif number == _NODE_DOMAIN:
                domain = reader.text(sub, "NodeProto.domain")
            elif number == _NODE_ATTRIBUTE:
                self.attribute(sub, depth + 1)
            elif number == _NODE_OVERLOAD:
                overload = reader.text(sub, "NodeProto.overload")
        key = (domain, op_type, overload)
        use = self.result.ops.get(key)
        if use is not None:
            use.count += 1
        elif len(self.result.ops) >= MAX_DISTINCT_OPS:
            raise LimitExceeded(f"more than {MAX_DISTINCT_OPS} distinct operators", item.offset)
        else:
            self.result.ops[key] = OpUse(1, item.offset, graph)

    def attribute(self, item: ProtoField, depth: int) -> None:
        for sub in self.reader.submessage(item, depth, "AttributeProto"):
            number = sub.number
            if number in (_ATTR_G, _ATTR_GRAPHS):
                self.graph(sub, depth + 1)
            elif number in (_ATTR_T, _ATTR_TENSORS):
                self.tensor(sub, depth + 1)
            elif number in (_ATTR_SPARSE_TENSOR, _ATTR_SPARSE_TENSORS):
                self.sparse_tensor(sub, depth + 1)

    def sparse_tensor(self, item: ProtoField, depth: int) -> None:
        for sub in self.reader.submessage(item, depth, "SparseTensorProto"):
            if sub.number in (_SPARSE_VALUES, _SPARSE_INDICES):
                self.tensor(sub, depth + 1)

    def tensor(self, item: ProtoField, depth: int) -> None:
        reader = self.reader
        name = ""
        locations: list[str] = []
        external = False
        for sub in reader.submessage(item, depth, "TensorProto"):
            if sub.number == _TENSOR_NAME:
                name = reader.text(sub, "TensorProto.name")
            elif sub.number == _TENSOR_DATA_LOCATION:
                _expect_varint(sub, "TensorProto.data_location")
                external = sub.value == DATA_LOCATION_EXTERNAL
            elif sub.number == _TENSOR_EXTERNAL_DATA:
                key = value = ""
                for entry in reader.submessage(sub, depth + 1, "StringStringEntryProto"):
                    if entry.number == _ENTRY_KEY:
                        key = reader.text(entry, "external_data key")
                    elif entry.number == _ENTRY_VALUE:
                        value = reader.text(entry, "external_data value")
                if key == "location":
                    locations.append(value)
        if not locations and not external:
            return
        if len(self.result.external_tensors) >= self.max_entries:
            raise LimitExceeded(
                f"more than {self.max_entries} external tensors (limits.max_metadata_entries)",
                item.offset,
            )
        self.result.external_tensors.append(
            ExternalTensor(name, item.offset, tuple(locations), external)
        )


def _expect_varint(item: ProtoField, what: str) -> None:
    if item.wire_type != WireType.VARINT:
        raise FormatError(
            f"{what} (field {item.number}) has wire type {item.wire_type}, expected a varint",
            item.offset,
        )
