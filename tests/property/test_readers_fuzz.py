"""Property: no byte string makes any reader crash, hang or allocate without bound.

Each format gets a small valid seed made here; Hypothesis feeds random bytes and mutations
of the seeds (flips, truncations, insertions, splices) through the same entry point the
engine uses (detection, then the format's scanner). A crash shows up as a
``scan.internal-error`` finding or an exception; a hang as a deadline overrun.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import tarfile
import tracemalloc
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightgate.formats.detect import FileFormat, detect_format
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Finding
from weightgate.scan.settings import Limits, ScanSettings

MiB = 1024 * 1024
# Small limits make hostile sizes hit a limit quickly; the property is about robustness.
FUZZ_SETTINGS = ScanSettings(
    limits=Limits(
        max_member_bytes=8 * MiB,
        max_total_uncompressed_bytes=32 * MiB,
        max_pickle_opcodes=200_000,
        max_header_bytes=4 * MiB,
        max_string_bytes=4 * MiB,
        max_array_items=1_000_000,
        max_json_bytes=4 * MiB,
    ),
    jobs=1,
)


def _pickle_seed(protocol: int) -> bytes:
    value = OrderedDict(weight=[1.0, 2.5], name="layer", shape=(2,), blob=b"\x00\x01")
    return pickle.dumps(value, protocol=protocol)


def _zip_seed() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", _pickle_seed(2))
        archive.writestr("archive/version", "3\n")
        archive.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    return buffer.getvalue()


def _tar_seed() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        payload = _pickle_seed(2)
        info = tarfile.TarInfo("pickle")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _safetensors_seed() -> bytes:
    from safetensors.numpy import save

    return save({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2)})


def _npy_seed(obj: bool) -> bytes:
    buffer = io.BytesIO()
    array = np.array([1, "x", None], dtype=object) if obj else np.arange(5, dtype="<i4")
    np.save(buffer, array, allow_pickle=obj)  # writing only; never np.load here
    return buffer.getvalue()


def _gguf_seed(tmp: str) -> bytes:
    import gguf

    path = f"{tmp}/seed.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_string(
        "tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"
    )
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_tensor("w", np.ones((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with open(path, "rb") as handle:
        return handle.read()


def _hdf5_seed() -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.attrs["model_config"] = json.dumps(
            {"class_name": "Sequential", "config": {"layers": []}}
        )
        handle.create_dataset("w", data=np.ones(3))
    return buffer.getvalue()


def _onnx_seed() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph).SerializeToString()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    tmp = str(tmp_path_factory.mktemp("seeds"))
    template = {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}
    made = [
        *(_pickle_seed(p) for p in range(6)),
        _zip_seed(),
        _tar_seed(),
        gzip.compress(_pickle_seed(4)),
        _safetensors_seed(),
        _npy_seed(False),
        _npy_seed(True),
        _gguf_seed(tmp),
        _hdf5_seed(),
        _onnx_seed(),
        json.dumps(template).encode(),
        b"chat_template: '{{ messages }}'\n",
        b"\x12\x21\x12\x1f\x0a\x0e\x0a\x05Const\x12\x05Const\x0a\x0d\x0a\x03bad\x12\x06PyFunc",
    ]
    formats = {detect_format(seed) for seed in made}
    # Every scanner with a reader gets at least one seed.
    assert {FileFormat.PICKLE, FileFormat.ZIP, FileFormat.TAR, FileFormat.GZIP} <= formats
    assert {FileFormat.SAFETENSORS, FileFormat.NUMPY, FileFormat.GGUF, FileFormat.HDF5} <= formats
    assert {FileFormat.ONNX, FileFormat.JSON} <= formats
    return made


def _scan(data: bytes, name: str) -> list[Finding]:
    findings: list[Finding] = []
    ScanContext(FUZZ_SETTINGS, name, findings).scan(memoryview(data), name)
    return findings


def _assert_robust(data: bytes, name: str) -> None:
    tracemalloc.start()
    try:
        findings = _scan(data, name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    internal = [f for f in findings if f.rule == "scan.internal-error"]
    assert not internal, internal
    # Inputs are at most a few hundred KiB; allocation must stay near the limits above.
    assert peak < 48 * MiB, f"peak {peak / MiB:.1f} MiB"


@st.composite
def mutations(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "splice", "set-int"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "splice":
            other = draw(st.sampled_from(seeds))
            data[at:] = other[draw(st.integers(0, len(other))) :]
        else:  # overwrite 8 bytes with an extreme integer: sizes, counts, offsets
            value = draw(st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1]))
            data[at : at + 8] = value.to_bytes(8, "little")
    return bytes(data)


NAMES = [
    "model.bin",
    "model.safetensors",
    "model.onnx",
    "saved_model.pb",
    "keras_metadata.pb",
    "x.json",
]
FUZZ = settings(
    max_examples=300,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
def test_mutated_seeds_never_crash(seeds: list[bytes], data: st.DataObject) -> None:
    blob = data.draw(mutations(seeds))
    _assert_robust(blob, data.draw(st.sampled_from(NAMES)))


@FUZZ
@given(blob=st.binary(max_size=4096), name=st.sampled_from(NAMES))
def test_random_bytes_never_crash(blob: bytes, name: str) -> None:
    _assert_robust(blob, name)


MAGICS = [
    b"\x80\x04",
    b"PK\x03\x04",
    b"\x1f\x8b",
    b"7z\xbc\xaf\x27\x1c",
    b"\x93NUMPY\x01\x00",
    b"GGUF\x03\x00\x00\x00",
    b"\x89HDF\r\n\x1a\n",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f{",
    b"BZh9",
    b"\xfd7zXZ\x00",
]


@FUZZ
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=2048), name=st.sampled_from(NAMES))
def test_magic_then_garbage_never_crashes(magic: bytes, tail: bytes, name: str) -> None:
    _assert_robust(magic + tail, name)
