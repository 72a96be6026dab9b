"""Red-team regressions: pickles a loader would read differently from the scan.

Each attack is assembled opcode by opcode and never loaded. Most target joblib: its
``NumpyUnpickler`` skips raw array bytes after a wrapper's BUILD, so if the scan and
joblib disagree on where the array ends, joblib resumes on opcodes the scan read as
data. Each test places ``os.system`` exactly where joblib resumes, behind a BINBYTES that
swallows it in the old reading, and asserts that the scan now either sees it or refuses
to guess.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest

from tests.builders import pickles as P
from weightgate.scan import pickle_globals

BINBYTES = b"B"
SETITEMS = b"u"
NEWFALSE = b"\x89"
NEWTRUE = b"\x88"
EVIL = b"0" + P.global_op("os", "system") + P.short_str("id") + P.TUPLE1 + P.REDUCE + P.STOP
"""What joblib executes where it resumes: drop the array, then os.system('id')."""


def stack_global(module: str, name: str) -> bytes:
    return P.short_str(module) + P.short_str(name) + P.STACK_GLOBAL


WRAPPER = stack_global("joblib.numpy_pickle", "NumpyArrayWrapper")


def binint(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def dtype_ops(descr: str, flags: int | None = 0, elsize: int = -1, byteorder: str = "<") -> bytes:
    """numpy.dtype(descr, False, True) and, unless flags is None, its BUILD state."""
    ops = stack_global("numpy", "dtype") + P.MARK + P.short_str(descr) + NEWFALSE + NEWTRUE
    ops += P.TUPLE + P.REDUCE
    if flags is None:
        return ops
    state = P.MARK + P.binint1(3) + P.short_str(byteorder) + P.NONE + P.NONE + P.NONE
    state += binint(elsize) + binint(-1) + binint(flags) + P.TUPLE
    return ops + state + P.BUILD


def wrapper_state(dtype: bytes, *, aligned: bool = False, shape: int = 1) -> bytes:
    """A NumpyArrayWrapper BUILD state as joblib writes it (subclass, shape, order...)."""
    ops = P.EMPTY_DICT + P.MARK
    ops += P.short_str("subclass") + stack_global("numpy", "ndarray")
    ops += P.short_str("shape") + P.binint1(shape) + P.TUPLE1
    ops += P.short_str("order") + P.short_str("C")
    ops += P.short_str("dtype") + dtype
    ops += P.short_str("allow_mmap") + NEWFALSE
    if aligned:
        ops += P.short_str("numpy_array_alignment_bytes") + P.binint1(16)
    return ops + SETITEMS


def cover(distance: int) -> bytes:
    """Opcodes the old scan read where joblib skips data: EVIL starts ``distance`` on.

    A BINBYTES whose payload swallows EVIL, then POP and STOP: to the old scan a
    harmless pickle, with nothing that looks like an embedded one.
    """
    filler = b"x" * (distance - 5)
    payload = filler + EVIL
    return BINBYTES + struct.pack("<I", len(payload)) + payload + P.POP + P.STOP


def evil_offset(data: bytes) -> int:
    return data.index(EVIL) + 1  # the GLOBAL after the POP


def critical_os_system(data: bytes) -> None:
    found = P.summary(P.findings(data, "model.joblib"))
    assert ("pickle.dangerous-global", "critical", evil_offset(data), "os.system") in found


def refused(data: bytes, build: int) -> None:
    found = P.summary(P.findings(data, "model.joblib"))
    assert found == [("pickle.joblib-array-unreadable", "medium", build, None)]


def test_wrapper_named_through_a_dotted_attribute_path() -> None:
    # Protocol 4 resolves joblib + numpy_pickle.NumpyArrayWrapper to the same class.
    wrapper = stack_global("joblib", "numpy_pickle.NumpyArrayWrapper")
    head = P.proto(4) + wrapper + P.EMPTY_TUPLE + P.NEWOBJ + wrapper_state(dtype_ops("f8"))
    data = head + P.BUILD + cover(8)
    critical_os_system(data)


def test_wrapper_made_by_copyreg_reconstructor() -> None:
    # joblib.load recognises the instance, however it was made (this is how protocols
    # 0 and 1 write it).
    make = stack_global("copyreg", "_reconstructor") + P.MARK + WRAPPER
    make += stack_global("builtins", "object") + P.NONE + P.TUPLE + P.REDUCE
    data = P.proto(4) + make + wrapper_state(dtype_ops("f8")) + P.BUILD + cover(8)
    critical_os_system(data)


def test_wrapper_made_by_calling_its_constructor_is_refused() -> None:
    # __init__ sets numpy_array_alignment_bytes=16, which the BUILD state leaves out:
    # joblib reads a padding byte (200) and skips 200 more bytes before the data.
    dtype = dtype_ops("f8")
    make = WRAPPER + P.MARK + stack_global("numpy", "ndarray") + P.binint1(1) + P.TUPLE1
    make += P.short_str("C") + dtype + P.TUPLE + P.REDUCE
    head = P.proto(4) + make + wrapper_state(dtype)
    data = head + P.BUILD + bytes([200]) + b"x" * 7 + cover(1 + 200 + 8 - 8)
    refused(data, len(head))


def test_wrapper_made_indirectly_is_refused() -> None:
    # torch._tensor._rebuild_from_type_v2(func, new_type, args, state) returns func(*args).
    make = stack_global("torch._tensor", "_rebuild_from_type_v2") + P.MARK + WRAPPER + WRAPPER
    make += P.EMPTY_TUPLE + P.EMPTY_DICT + P.TUPLE + P.REDUCE
    head = P.proto(4) + make + wrapper_state(dtype_ops("f8"))
    refused(head + P.BUILD + cover(8), len(head))


def test_second_build_merges_with_the_first() -> None:
    # BUILD updates __dict__: the alignment set by the first BUILD still holds after a
    # second one that does not mention it.
    dtype = dtype_ops("f8")
    first = P.proto(4) + WRAPPER + P.EMPTY_TUPLE + P.NEWOBJ + P.binput(0)
    first += wrapper_state(dtype, aligned=True) + P.BUILD + b"\x00" + b"\x00" * 8
    second = P.POP + P.binget(0) + wrapper_state(dtype) + P.BUILD
    data = first + second + bytes([200]) + b"x" * 7 + cover(1 + 200 + 8 - 8)
    critical_os_system(data)


def test_element_size_of_a_sized_type_comes_from_the_type() -> None:
    # dtype.__setstate__ ignores elsize for f8: joblib reads 8 bytes, not 1000.
    head = P.proto(4) + WRAPPER + P.EMPTY_TUPLE + P.NEWOBJ
    head += wrapper_state(dtype_ops("f8", elsize=1000)) + P.BUILD
    data = head + b"x" * 8 + EVIL + b"x" * (1000 - 8 - len(EVIL)) + P.NONE + P.STOP
    critical_os_system(data)


def test_unicode_itemsize_without_state_is_four_bytes_a_character() -> None:
    # numpy.dtype('U3') is 12 bytes wide, not 3.
    head = P.proto(4) + WRAPPER + P.EMPTY_TUPLE + P.NEWOBJ
    head += wrapper_state(dtype_ops("U3", flags=None)) + P.BUILD
    critical_os_system(head + b"xyz" + cover(12 - 3))


@pytest.mark.parametrize(
    ("descr", "flags"),
    [
        ("O8", 0),  # object type flagged plain: joblib reads raw pointers
        ("f8", 63),  # plain type flagged object: no writer makes it; refused too
    ],
)
def test_hasobject_flag_that_disagrees_with_the_type_is_refused(descr: str, flags: int) -> None:
    head = P.proto(4) + WRAPPER + P.EMPTY_TUPLE + P.NEWOBJ
    head += wrapper_state(dtype_ops(descr, flags=flags, byteorder="|"))
    refused(head + P.BUILD + P.NONE + P.STOP + cover(6), len(head))


def ndarray_wrapper(filename: str) -> tuple[bytes, int]:
    make = stack_global("joblib.numpy_pickle", "NDArrayWrapper") + P.EMPTY_TUPLE + P.NEWOBJ
    state = P.EMPTY_DICT + P.MARK + P.short_str("filename") + P.short_str(filename)
    state += P.short_str("subclass") + stack_global("numpy", "ndarray") + SETITEMS
    head = P.proto(2) + make + state
    return head + P.BUILD + P.STOP, len(head)


@pytest.mark.parametrize("filename", ["/tmp/payload.pkl", "../../uploads/x.npy", "C:x.npy"])
def test_ndarray_wrapper_outside_the_directory_is_high(filename: str) -> None:
    # joblib.load: np.load(os.path.join(dirname, filename), allow_pickle=True).
    data, build = ndarray_wrapper(filename)
    assert P.summary(P.findings(data, "model.joblib")) == [
        ("pickle.joblib-external-file", "high", build, filename)
    ]


def test_ndarray_wrapper_beside_the_pickle_is_low() -> None:
    data, build = ndarray_wrapper("model.pkl_01.npy")
    assert P.summary(P.findings(data, "model.joblib")) == [
        ("pickle.joblib-sibling-file", "low", build, "model.pkl_01.npy")
    ]


def test_ndarray_wrapper_filename_from_its_constructor() -> None:
    make = stack_global("joblib.numpy_pickle", "NDArrayWrapper") + P.short_str("/etc/x")
    make += stack_global("numpy", "ndarray") + P.TUPLE2 + P.REDUCE
    head = P.proto(4) + make + P.EMPTY_DICT
    data = head + P.BUILD + P.STOP
    assert P.summary(P.findings(data, "model.joblib")) == [
        ("pickle.joblib-external-file", "high", len(head), "/etc/x")
    ]


def test_object_scalar_identity_does_not_hide_a_global_mutation() -> None:
    # numpy scalar(dtype('O'), X) returns X: a BUILD on the result sets attributes on
    # the imported class itself.
    target = stack_global("torch.nn.parameter", "Parameter")
    call = stack_global("numpy.core.multiarray", "scalar")
    call += dtype_ops("O8", flags=63, byteorder="|") + target + P.TUPLE2 + P.REDUCE
    state = P.NONE + P.EMPTY_DICT + P.short_str("__repr__") + stack_global("builtins", "object")
    state += P.SETITEM + P.TUPLE2
    head = P.proto(4) + call + state
    data = head + P.BUILD + P.STOP
    assert P.summary(P.findings(data)) == [
        ("pickle.global-mutation", "critical", len(head), "torch.nn.parameter.Parameter")
    ]


def test_plain_numpy_scalars_stay_clean() -> None:
    data = pickle.dumps([np.float64(1.5), np.int8(3), np.bool_(True)], protocol=2)
    assert P.findings(data) == []


def test_python2_name_is_allowed_only_if_every_resolution_is() -> None:
    # With protocol >= 3 the loader imports UserDict as written; only protocols 0-2 map
    # it to collections.
    verdict, _ = pickle_globals.judge("UserDict", "OrderedDict", frozenset())
    assert verdict is pickle_globals.Verdict.UNLISTED
    verdict, _ = pickle_globals.judge("copy_reg", "_reconstructor", frozenset())
    assert verdict is pickle_globals.Verdict.ALLOWED


ARRAYS = {
    "f4": np.arange(6, dtype="f4").reshape(2, 3),
    "fortran": np.asfortranarray(np.ones((3, 2))),
    "bool": np.array([True, False]),
    "complex": np.ones(3, "c16"),
    "unicode": np.array(["ab", "cdefg"]),
    "bytes": np.array([b"a", b"xyz"]),
    "datetime": np.array(["2020-01-01"], "M8[ns]"),
    "structured": np.zeros(3, [("a", "f4"), ("b", "i8", (2,))]),
    "structured-object": np.array([(1.0, "x")], [("a", "f8"), ("b", "O")]),
    "object": np.array([1, "a", None], dtype=object),
    "subarray": np.zeros(2, ("f8", (2,))),
    "metadata": np.zeros(2, np.dtype("f8", metadata={"k": 1})),
}


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_joblib_dumps_of_numpy_arrays_stay_clean(name: str, protocol: int) -> None:
    value = {"w": ARRAYS[name], "scalar": np.float32(1.5), "list": [ARRAYS[name], 3]}
    found = P.findings(P.joblib_dump(value, protocol=protocol), "model.joblib")
    assert [f for f in found if f.severity.label != "info"] == []
