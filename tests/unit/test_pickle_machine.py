"""The pickle walk: opcode decoding, stack and memo emulation, stacked pickles, limits."""

from __future__ import annotations

import copyreg
import pickle
import pickletools
import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.builders import pickles as P
from weightgate.formats.pickle import (
    WalkLimits,
    embedded_pickle,
    read_single_pickle,
    walk_stream,
)
from weightgate.formats.pickle.trace import Instance, PickleTrace


def walk(data: bytes, **limits: int) -> PickleTrace:
    return walk_stream(data, WalkLimits(**limits))


def offsets_of(data: bytes, *names: str) -> list[int]:
    """Where the standard library's disassembler sees the named opcodes."""
    return [pos for op, _, pos in pickletools.genops(data) if op.name in names]


class WithSetState:
    """A class with __setstate__, so BUILD calls code on it."""

    def __init__(self) -> None:
        self.value = 1

    def __setstate__(self, state: object) -> None:
        raise AssertionError("never loaded")


class NewArgsEx:
    """Pickles with NEWOBJ_EX (keyword arguments to __new__)."""

    def __getnewargs_ex__(self) -> tuple[tuple[object, ...], dict[str, object]]:
        return (1,), {"flag": True}


@pytest.mark.parametrize("protocol", range(6))
def test_same_payload_in_every_protocol(protocol: int) -> None:
    data = P.system_call_all_protocols()[protocol]
    trace = walk(data)
    assert trace.error is None
    (ref,) = trace.globals
    assert (ref.module, ref.name, ref.called, ref.constant) == ("posix", "system", True, True)
    assert ref.how == ("STACK_GLOBAL" if protocol >= 4 else "GLOBAL")
    assert ref.offset == offsets_of(data, "GLOBAL", "STACK_GLOBAL")[0]
    assert [site.kind for site in trace.calls] == ["REDUCE"]
    assert trace.started_with_proto == (protocol >= 2)


def test_stack_global_operands_through_binput_binget() -> None:
    data = P.memo_stack_global()
    trace = walk(data)
    assert trace.error is None
    (ref,) = trace.globals
    assert (ref.dotted, ref.offset, ref.constant, ref.called) == (
        "subprocess.check_output",
        49,
        True,
        True,
    )
    assert trace.calls[0].offset == 55


def test_stack_global_operands_through_memoize() -> None:
    trace = walk(P.system_call_v4())
    (ref,) = trace.globals
    assert (ref.dotted, ref.offset) == ("posix.system", 19)


def test_computed_stack_global_operand_is_dynamic() -> None:
    trace = walk(P.dynamic_getattr_global())
    assert trace.error is None
    getattr_ref, str_ref, dynamic = trace.globals
    assert (getattr_ref.dotted, getattr_ref.offset, getattr_ref.called) == (
        "builtins.getattr",
        6,
        True,
    )
    assert str_ref.dotted == "builtins.str"
    assert (dynamic.offset, dynamic.constant, dynamic.module) == (57, False, "os")
    assert "result of calling a computed callable (offset 0x38)" in dynamic.origin


def test_stack_global_with_constant_non_str_operand_stops_like_cpython() -> None:
    data = P.proto(4) + P.binint1(1) + P.short_str("system") + P.STACK_GLOBAL + P.STOP
    trace = walk(data)
    assert trace.error is not None
    assert (trace.error.offset, trace.error.kind) == (12, "malformed")
    assert "requires str" in trace.error.message


def test_ext_code_resolves_through_copyreg() -> None:
    copyreg.add_extension("posix", "system", 0x1234)
    try:
        trace = walk(P.ext_call(0x1234))
    finally:
        copyreg.remove_extension("posix", "system", 0x1234)
    (ref,) = trace.globals
    assert (ref.dotted, ref.how, ref.offset, ref.resolved, ref.called) == (
        "posix.system",
        "EXT2",
        2,
        True,
        True,
    )


def test_unregistered_ext_code_is_kept_as_unresolved() -> None:
    trace = walk(P.ext_call(0x1234))
    assert trace.error is None
    (ref,) = trace.globals
    assert (ref.resolved, ref.ext_code, ref.how, ref.called) == (False, 0x1234, "EXT2", True)


def test_ext_code_zero_is_invalid() -> None:
    trace = walk(P.proto(2) + b"\x82\x00" + P.STOP)
    assert trace.error is not None and trace.error.offset == 2


def test_inst_and_obj_record_the_called_class() -> None:
    inst = P.MARK + b"S'echo'\n" + P.inst("os", "system") + P.STOP
    trace = walk(inst)
    (ref,) = trace.globals
    assert (ref.dotted, ref.how, ref.offset, ref.called) == ("os.system", "INST", 9, True)
    assert [(c.kind, c.offset) for c in trace.calls] == [("INST", 9)]
    obj = P.MARK + P.global_op("os", "system") + P.short_str("id") + P.OBJ + P.STOP
    trace = walk(obj)
    assert [(c.kind, c.target.dotted if c.target else None) for c in trace.calls] == [
        ("OBJ", "os.system")
    ]


def test_newobj_newobj_ex_and_build_targets() -> None:
    data = pickle.dumps(WithSetState(), protocol=2)
    trace = walk(data)
    kinds = [(c.kind, c.target.name if c.target else None) for c in trace.calls]
    assert kinds == [("NEWOBJ", "WithSetState"), ("BUILD", "WithSetState")]
    assert trace.calls[1].offset == offsets_of(data, "BUILD")[0]
    trace = walk(pickle.dumps(NewArgsEx(), protocol=4))
    assert [c.kind for c in trace.calls] == ["NEWOBJ_EX"]


def test_build_on_an_imported_global_is_a_mutation() -> None:
    data = (
        P.global_op("torch", "_utils")
        + P.EMPTY_DICT
        + P.short_str("x")
        + P.short_str("y")
        + P.SETITEM
        + P.BUILD
        + P.STOP
    )
    trace = walk(data)
    assert [(m.kind, m.target.dotted if m.target else None, m.offset) for m in trace.mutations] == [
        ("BUILD", "torch._utils", 22)
    ]


def test_setitems_on_a_call_result_keep_its_items_and_are_no_mutation() -> None:
    # OrderedDict() then SETITEMS, as an OrderedDict reduces (what torch state dicts are).
    data = (
        b"\x80\x02ccollections\nOrderedDict\nq\x00)R"
        b"(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00bK\x02u"  # SETITEMS a=1, b=2
        b"X\x01\x00\x00\x00aK\x03s."  # SETITEM a=3
    )
    walked = read_single_pickle(data, WalkLimits())
    assert type(walked.value) is Instance
    assert list(walked.value.items or []) == [("a", 1), ("b", 2), ("a", 3)]
    assert walked.trace.mutations == []
    assert [call.kind for call in walked.trace.calls] == ["REDUCE"]


def test_stacked_pickles_are_all_walked() -> None:
    benign = pickle.dumps({"weights": [1, 2]}, protocol=4)
    data = benign + P.system_call_v4()
    trace = walk(data)
    assert trace.error is None and trace.trailing is None
    assert [(s.start, s.end) for s in trace.pickles] == [
        (0, len(benign)),
        (len(benign), len(data)),
    ]
    (ref,) = trace.globals
    assert ref.offset == len(benign) + 19


def test_later_pickle_may_read_an_earlier_pickles_memo() -> None:
    # An Unpickler reused for a second load() keeps its memo.
    first = P.proto(4) + P.short_str("os") + P.MEMOIZE + P.short_str("system") + P.MEMOIZE
    first += P.TUPLE2 + P.STOP
    second = P.proto(4) + P.binget(0) + P.binget(1) + P.STACK_GLOBAL + P.STOP
    trace = walk(first + second)
    assert trace.error is None
    assert [g.dotted for g in trace.globals] == ["os.system"]


def test_trailing_bytes_after_the_last_pickle() -> None:
    data = pickle.dumps([1], protocol=4) + b"\n\t garbage"
    trace = walk(data)
    assert trace.error is None
    assert trace.trailing == (len(data) - 10, 10)


def test_legacy_torch_stops_after_five_pickles() -> None:
    obj = pickle.dumps({"weight": 1}, protocol=2)
    storage = b"\x80\x02c" + b"os\nsystem\n" + b"\x00" * 3  # data, never unpickled
    data = P.legacy_torch(obj, storage)
    trace = walk(data)
    assert trace.legacy_torch and trace.error is None and trace.trailing is None
    assert len(trace.pickles) == 5
    assert trace.torch_data == (trace.pickles[-1].end, len(storage) + 8)
    assert trace.globals == []


def test_pickle_hidden_where_legacy_torch_storage_bytes_go_is_walked() -> None:
    data = P.legacy_torch(pickle.dumps({"weight": 1}, protocol=2), b"")
    data = data[:-8] + P.system_call_v4() + b"\x00" * 8
    trace = walk(data)
    assert trace.legacy_torch and trace.error is None
    assert [g.dotted for g in trace.globals] == ["posix.system"]
    assert trace.torch_data == (len(data) - 8, 8)


def test_magic_number_computed_by_eval_is_not_legacy_torch() -> None:
    magic = (
        P.proto(2)
        + P.global_op("__builtin__", "eval")
        + P.binunicode(hex(0x1950A86A20F9469CFC6C))
        + P.TUPLE1
        + P.REDUCE
        + P.STOP
    )
    data = P.legacy_torch(pickle.dumps({}, protocol=2))
    data = magic + data[data.index(b".") + 1 :]
    trace = walk(data)
    assert not trace.legacy_torch
    assert trace.globals[0].dotted == "__builtin__.eval"


def test_truncated_pickle_keeps_what_it_saw() -> None:
    data = P.system_call_v4()[:-6]
    trace = walk(data)
    assert [g.dotted for g in trace.globals] == ["posix.system"]
    assert trace.error is not None
    assert (trace.error.offset, trace.error.kind) == (20, "malformed")
    assert trace.error.message == "SHORT_BINUNICODE: declares 10 bytes but only 7 remain"


def test_missing_stop_is_reported_at_the_end() -> None:
    data = P.proto(4) + P.NONE
    trace = walk(data)
    assert trace.error is not None
    assert trace.error.offset == 3
    assert "without a STOP" in trace.error.message


def test_ten_million_opcodes_end_in_a_limit_quickly() -> None:
    data = P.many_opcodes(10_000_000)
    started = time.perf_counter()
    trace = walk(data)
    elapsed = time.perf_counter() - started
    assert trace.error is not None
    assert trace.error.kind == "limit"
    assert "limits.max_pickle_opcodes" in trace.error.message
    assert trace.opcodes == 5_000_000
    assert elapsed < 15


def test_huge_declared_length_is_checked_before_reading() -> None:
    trace = walk(P.huge_binbytes8())
    assert trace.error is not None
    assert trace.error.offset == 2
    assert f"declares {2**63} bytes but only 3 remain" in trace.error.message


@pytest.mark.parametrize(
    ("opcode", "length"),
    [(b"B", struct.pack("<I", 2**32 - 1)), (b"X", struct.pack("<I", 2**31)), (b"T", b"\xff" * 4)],
)
def test_other_declared_lengths(opcode: bytes, length: bytes) -> None:
    trace = walk(P.proto(3) + opcode + length + b"abc.")
    assert trace.error is not None and trace.error.offset == 2


def test_frame_longer_than_the_data_is_an_anomaly_not_a_stop() -> None:
    body = P.short_str("nt") + P.MEMOIZE + P.short_str("system") + P.MEMOIZE + P.STACK_GLOBAL
    data = P.proto(4) + P.FRAME + struct.pack("<Q", 100) + body + P.STOP
    trace = walk(data)
    assert trace.error is None
    assert [g.dotted for g in trace.globals] == ["nt.system"]
    (anomaly,) = trace.anomalies
    assert anomaly.offset == 2


def test_memo_and_stack_limits() -> None:
    memo_heavy = P.proto(4) + (P.NONE + P.MEMOIZE + P.POP) * 10_000 + P.NONE + P.STOP
    trace = walk(memo_heavy, max_memo_entries=100)
    assert trace.error is not None and trace.error.kind == "limit"
    assert "limits.max_pickle_memo_entries" in trace.error.message
    deep = P.proto(4) + P.NONE * 20_000 + P.STOP
    trace = walk(deep, max_stack_items=1000)
    assert trace.error is not None and trace.error.kind == "limit"
    assert "limits.max_pickle_stack_items" in trace.error.message


def test_stack_underflow_and_missing_mark() -> None:
    assert walk(P.proto(4) + P.REDUCE + P.STOP).error is not None
    trace = walk(P.proto(4) + P.NONE + P.TUPLE + P.STOP)
    assert trace.error is not None and "no MARK" in trace.error.message
    # A MARK fences the stack: TUPLE1 cannot reach below it.
    trace = walk(P.proto(4) + P.NONE + P.MARK + P.TUPLE1 + P.STOP)
    assert trace.error is not None and trace.error.offset == 4


def test_pop_with_empty_frame_pops_the_mark() -> None:
    trace = walk(P.proto(4) + P.NONE + P.MARK + P.POP + P.STOP)
    assert trace.error is None and len(trace.pickles) == 1


def test_global_names_must_be_importable() -> None:
    trace = walk(b"cmod\n\xf8\n")
    assert trace.error is not None and trace.error.offset == 0
    assert not trace.is_pickle
    trace = walk(b"cThis is\nnot a name\n.")
    assert trace.globals == [] and not trace.is_pickle


def test_text_that_starts_with_an_opcode_letter_is_not_a_pickle() -> None:
    for text in (b"MIT License\n\nCopyright (c)", b"(c) 2024 someone\n", b"I love YAML\n"):
        trace = walk(text)
        assert not trace.is_pickle, text


def test_protocol_0_text_pickle_is_a_pickle() -> None:
    data = pickle.dumps(["a", "b"], protocol=0)
    trace = walk(data)
    assert trace.error is None and trace.is_pickle


def iter_candidates(data: bytes) -> Iterator[tuple[str, bytes]]:
    trace = walk(data)
    with memoryview(data) as view:
        for string in trace.strings:
            found = embedded_pickle(view, string, 0, 1 << 20)
            if found is not None:
                yield found[0], bytes(found[1])


def test_embedded_pickle_forms() -> None:
    inner = P.system_call_v4()
    for value, form in (
        (inner, "raw"),
        (inner.hex(), "hex"),
        (__import__("base64").b64encode(inner).decode(), "base64"),
        (inner.decode("latin-1"), "raw"),
    ):
        outer = pickle.dumps({"payload": value}, protocol=4)
        assert list(iter_candidates(outer)) == [(form, inner)], form


def test_ordinary_strings_are_not_embedded_pickles() -> None:
    outer = pickle.dumps(
        {"text": "cats and dogs.", "hex": "8badf00d", "b64": "gAAAAA==", "raw": b"\x80\x02"},
        protocol=4,
    )
    # Candidates are only a first sieve; the scanner keeps those that walk as a pickle.
    assert [form for form, payload in iter_candidates(outer) if walk(payload).pickles] == []


def test_joblib_arrays_are_stepped_over() -> None:
    value = {
        "floats": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.ones((3, 5))),
        "strings": np.array(["abc", "de"]),
        "records": np.zeros(3, dtype=[("x", "<f4"), ("y", "<i8")]),
        "objects": np.array(["x", 1, None], dtype=object),
        "empty": np.zeros((0, 7)),
        "scalar": np.float64(2.5),
    }
    data = P.joblib_dump(value)
    trace = walk(data)
    assert trace.error is None and trace.trailing is None
    assert [(s.start, s.end) for s in trace.pickles] == [(0, len(data))]
    assert {g.dotted for g in trace.globals} == {
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
    }


class _Unseekable:
    """A write-only stream: joblib then writes arrays without alignment padding."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def tell(self) -> int:
        import io

        raise io.UnsupportedOperation("tell")


def test_joblib_arrays_without_alignment() -> None:
    import joblib

    stream = _Unseekable()
    joblib.dump({"a": np.arange(40, dtype="<f8")}, stream)
    data = b"".join(stream.parts)
    trace = walk(data)
    assert trace.error is None and [(s.start, s.end) for s in trace.pickles] == [(0, len(data))]


def test_joblib_wrapper_with_unreadable_dtype_fails_closed() -> None:
    wrapper = P.global_op("joblib.numpy_pickle", "NumpyArrayWrapper")
    state = P.EMPTY_DICT + P.short_str("shape") + P.binint1(3) + P.TUPLE1 + P.SETITEM
    state += P.short_str("dtype") + P.short_str("f4") + P.SETITEM
    data = P.proto(4) + wrapper + P.EMPTY_TUPLE + P.NEWOBJ + state + P.BUILD + b"\x01\x00" * 8
    trace = walk(data)
    assert trace.error is not None
    assert trace.error.kind == "joblib"
    assert trace.error.offset == data.index(P.BUILD, 40)
