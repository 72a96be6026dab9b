"""Build ONNX models (with onnx.helper) and raw protobuf messages for the scanner tests.

Nothing here is ever loaded by a runtime: the models are serialized to bytes and only
handed to weightgate's readers.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

OPSET = helper.make_opsetid("", 17)


def varint(value: int) -> bytes:
    """Protobuf varint encoding of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    """A VARINT field."""
    return varint(number << 3) + varint(value)


def field_bytes(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field (message, string or bytes)."""
    raw = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def _io(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [2])


def _model(
    graph: onnx.GraphProto,
    domains: tuple[str, ...] = (),
    functions: list[onnx.FunctionProto] | None = None,
) -> onnx.ModelProto:
    opsets = [OPSET] + [helper.make_opsetid(domain, 1) for domain in domains]
    return helper.make_model(
        graph, opset_imports=opsets, functions=functions or [], producer_name="weightgate-tests"
    )


def _serialize(model: onnx.ModelProto) -> bytes:
    return bytes(model.SerializeToString())


def benign_model() -> bytes:
    """y = x + W, with W embedded."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    node = helper.make_node("Add", ["x", "W"], ["y"], name="add")
    graph = helper.make_graph([node], "benign", [_io("x")], [_io("y")], [weight])
    return _serialize(_model(graph))


def external_data_model(locations: list[str], mark_external: bool = True) -> bytes:
    """One initializer per location, each with its data in that external file."""
    initializers = []
    for index, location in enumerate(locations):
        tensor = helper.make_tensor(f"W{index}", TensorProto.FLOAT, [2], [0.0, 0.0])
        tensor.ClearField("float_data")
        entry = tensor.external_data.add()
        entry.key = "location"
        entry.value = location
        for key, value in (("offset", "0"), ("length", "8")):
            extra = tensor.external_data.add()
            extra.key, extra.value = key, value
        if mark_external:
            tensor.data_location = TensorProto.EXTERNAL
        initializers.append(tensor)
    nodes = [helper.make_node("Add", ["x", "W0"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "external", [_io("x")], [_io("y")], initializers)
    return _serialize(_model(graph))


def constant_external_model(location: str) -> bytes:
    """A Constant node whose tensor attribute points at an external file."""
    tensor = helper.make_tensor("c", TensorProto.FLOAT, [2], [0.0, 0.0])
    tensor.ClearField("float_data")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    tensor.data_location = TensorProto.EXTERNAL
    node = helper.make_node("Constant", [], ["y"], name="const", value=tensor)
    graph = helper.make_graph([node], "constant", [], [_io("y")])
    return _serialize(_model(graph))


def sparse_external_model(location: str) -> bytes:
    """A sparse initializer whose values live in an external file."""
    values = helper.make_tensor("sv", TensorProto.FLOAT, [1], [0.0])
    values.ClearField("float_data")
    entry = values.external_data.add()
    entry.key, entry.value = "location", location
    values.data_location = TensorProto.EXTERNAL
    indices = helper.make_tensor("si", TensorProto.INT64, [1], [0])
    sparse = helper.make_sparse_tensor(values, indices, [2])
    node = helper.make_node("Identity", ["x"], ["y"], name="id")
    graph = helper.make_graph([node], "sparse", [_io("x")], [_io("y")], sparse_initializer=[sparse])
    return _serialize(_model(graph))


def custom_domain_model(domain: str, ops: tuple[str, ...] = ("Evil",)) -> bytes:
    """A chain of nodes of ``domain`` after a standard Relu."""
    nodes = [helper.make_node("Relu", ["x"], ["t0"], name="relu")]
    for index, op in enumerate(ops):
        nodes.append(
            helper.make_node(op, [f"t{index}"], [f"t{index + 1}"], name=f"n{index}", domain=domain)
        )
    nodes.append(helper.make_node("Identity", [f"t{len(ops)}"], ["y"], name="out"))
    graph = helper.make_graph(nodes, "custom", [_io("x")], [_io("y")])
    return _serialize(_model(graph, (domain,)))


def nested_custom_model(domain: str = "evil.ops") -> bytes:
    """If -> then_branch -> Loop body -> a node of ``domain`` (two subgraph levels)."""
    inner = helper.make_node("Hidden", ["x"], ["lo"], name="hidden", domain=domain)
    body = helper.make_graph(
        [inner, helper.make_node("Identity", ["cond_in"], ["cond_out"], name="c")],
        "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), _io("cond_in")],
        [_io("cond_out"), _io("lo")],
    )
    loop = helper.make_node("Loop", ["", "cond"], ["lo_final"], name="loop", body=body)
    then_branch = helper.make_graph([loop], "then", [], [_io("lo_final")])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["e"], name="e")], "else", [], [_io("e")]
    )
    branch = helper.make_node(
        "If", ["cond"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch
    )
    graph = helper.make_graph(
        [branch],
        "nested",
        [_io("x"), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [_io("y")],
    )
    return _serialize(_model(graph, (domain,)))


def function_model(body_domain: str = "") -> bytes:
    """A node calling a model-local function ``local.fn:Double``; its body uses one op of
    ``body_domain`` ("" for the standard Add)."""
    op = "Add" if body_domain == "" else "Secret"
    inputs = ["a", "a"] if body_domain == "" else ["a"]
    body = [helper.make_node(op, inputs, ["b"], domain=body_domain)]
    opsets = [OPSET] + ([helper.make_opsetid(body_domain, 1)] if body_domain else [])
    function = helper.make_function("local.fn", "Double", ["a"], ["b"], body, opsets)
    call = helper.make_node("Double", ["x"], ["y"], name="call", domain="local.fn")
    graph = helper.make_graph([call], "with_function", [_io("x")], [_io("y")])
    domains = ("local.fn", body_domain) if body_domain else ("local.fn",)
    return _serialize(_model(graph, domains, [function]))


def training_info_model(domain: str = "train.evil") -> bytes:
    """A benign main graph and a training algorithm graph with a custom op."""
    model = onnx.load_model_from_string(benign_model())
    info = model.training_info.add()
    node = helper.make_node("Step", ["x"], ["y"], name="step", domain=domain)
    info.algorithm.CopyFrom(helper.make_graph([node], "algorithm", [_io("x")], [_io("y")]))
    return _serialize(model)


def nested_graph_bytes(levels: int) -> bytes:
    """A ModelProto whose graph nests ``levels`` subgraphs through node attributes."""
    graph = field_bytes(1, field_bytes(4, "Relu"))  # innermost: a node
    for _ in range(levels):
        attribute = field_bytes(1, "body") + field_bytes(6, graph)
        node = field_bytes(4, "If") + field_bytes(5, attribute)
        graph = field_bytes(1, node)
    return field_varint(1, 8) + field_bytes(7, graph)
