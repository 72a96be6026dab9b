"""Streaming tensor access on the real models: shapes, values, chunking, bad input."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize
from safetensors.numpy import load_file, save_file

from tests.builders.gguf_files import assemble, kv_string, tensor_info
from tests.cli_process import run
from tests.models import minilm_dir, smollm2_gguf
from weightgate.analysis.dtypes import ELEMENT_TYPES
from weightgate.analysis.tensors import open_model
from weightgate.errors import InputError


def test_minilm_tensors_match_the_safetensors_library() -> None:
    expected = load_file(str(minilm_dir() / "model.safetensors"))
    with ExitStack() as stack:
        model = open_model(minilm_dir(), stack)
        assert set(model.tensors) == set(expected)
        assert "config.json" in model.other_files
        for name, array in expected.items():
            assert model.tensors[name].shape == array.shape
            # small chunks: the pieces must join up exactly
            values = np.concatenate(list(model.values(name, chunk_elements=1000)))
            np.testing.assert_array_equal(values, array.astype(np.float64).reshape(-1))


def test_gguf_tensors_match_the_gguf_reader() -> None:
    reader = GGUFReader(smollm2_gguf())
    with ExitStack() as stack:
        model = open_model(smollm2_gguf(), stack)
        assert len(model.tensors) == len(reader.tensors) == 272
        checked = set()
        for tensor in reader.tensors:
            info = model.tensors[tensor.name]
            assert info.shape == tuple(int(d) for d in reversed(tensor.shape))
            assert info.dtype == tensor.tensor_type.name
            if info.dtype in checked:
                continue  # one tensor of each stored type is enough
            checked.add(info.dtype)
            ours = np.concatenate(list(model.values(tensor.name, chunk_elements=5000)))
            theirs = dequantize(tensor.data, tensor.tensor_type).reshape(-1)
            np.testing.assert_array_equal(ours, theirs.astype(np.float64))
        assert {"Q4_1", "Q8_0", "F32"} <= checked


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        ("BF16", np.array([1.0, -2.5, 3e38, np.inf], dtype=ml_dtypes.bfloat16)),
        ("F16", np.array([1.0, -0.5, 65504.0], dtype=np.float16)),
        ("F8_E4M3", np.array([448.0, -0.001953125, 1.5], dtype=ml_dtypes.float8_e4m3fn)),
        ("F8_E5M2", np.array([57344.0, -1.52587890625e-05], dtype=ml_dtypes.float8_e5m2)),
        ("I8", np.array([-128, 127], dtype=np.int8)),
    ],
)
def test_stored_types_decode_to_their_values(dtype: str, values: npt.NDArray[Any]) -> None:
    decoded = ELEMENT_TYPES[dtype].decode(values.tobytes())
    np.testing.assert_array_equal(decoded, values.astype(np.float64))


def test_bf16_exponent_mask_is_the_exponent() -> None:
    one = np.array([1.0], dtype=ml_dtypes.bfloat16).view(np.uint16)[0]
    four = np.array([4.0], dtype=ml_dtypes.bfloat16).view(np.uint16)[0]
    difference = int(one) ^ int(four)
    assert difference != 0
    assert difference & ~ELEMENT_TYPES["BF16"].exponent_mask == 0


def test_truncated_safetensors_is_an_input_error(tmp_path: Path) -> None:
    data = (minilm_dir() / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with ExitStack() as stack, pytest.raises(InputError, match="not a readable tensor file"):
        open_model(tmp_path, stack)


@pytest.mark.parametrize("length", [2**63, 1000], ids=["2^63", "past-the-end"])
def test_a_forged_header_length_is_an_input_error_not_a_traceback(
    tmp_path: Path, length: int
) -> None:
    # The header reader's error once kept the file's map alive: closing it raised BufferError.
    path = tmp_path / "model.safetensors"
    path.write_bytes(length.to_bytes(8, "little") + b'{"a":1}' + bytes(100))
    with ExitStack() as stack, pytest.raises(InputError, match="runs past the end"):
        open_model(path, stack)
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(path.read_bytes())
    result = run("diff", path, copy)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "runs past the end" in result.stderr


def test_a_tensor_in_two_files_is_an_input_error(tmp_path: Path) -> None:
    array = {"w": np.ones((2, 2), dtype=np.float32)}
    save_file(array, str(tmp_path / "a.safetensors"))
    save_file(array, str(tmp_path / "b.safetensors"))
    with ExitStack() as stack, pytest.raises(InputError, match="'w' is in both"):
        open_model(tmp_path, stack)


def test_a_directory_without_tensors_is_an_input_error(tmp_path: Path) -> None:
    shutil.copy(minilm_dir() / "config.json", tmp_path)
    with ExitStack() as stack, pytest.raises(InputError, match="no safetensors, GGUF or PyTorch"):
        open_model(tmp_path, stack)
    with ExitStack() as stack, pytest.raises(InputError, match="no such file"):
        open_model(tmp_path / "absent", stack)


@pytest.mark.parametrize("kind", ["safetensors", "gguf"])
def test_a_file_cut_inside_its_header_is_an_input_error(tmp_path: Path, kind: str) -> None:
    # A header reader's frames hold views of the map while its error propagates: the map
    # must still close, and the error stay an input error (not a BufferError).
    original = minilm_dir() / "model.safetensors" if kind == "safetensors" else smollm2_gguf()
    cut = tmp_path / original.name
    cut.write_bytes(original.read_bytes()[:1000])
    with ExitStack() as stack, pytest.raises(InputError, match="not a readable tensor file"):
        open_model(cut, stack)


def test_a_safetensors_header_length_off_by_one_is_an_input_error(tmp_path: Path) -> None:
    # Found by the tensor-reader fuzz: the reader's error used to keep views of the map
    # alive through its traceback, so closing the map raised BufferError instead.
    save_file({"w": np.ones((2, 3), dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[0] += 1
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with ExitStack() as stack, pytest.raises(InputError, match="not a readable tensor file"):
        open_model(tmp_path, stack)


def test_a_gguf_type_without_a_dequantiser_is_an_input_error(tmp_path: Path) -> None:
    # Reading it would raise NotImplementedError from the gguf package mid-diff.
    info = tensor_info("w", [32], GGMLQuantizationType.Q8_1, 0)
    path = tmp_path / "model.gguf"
    path.write_bytes(assemble([kv_string("general.architecture", "llama")], [info], bytes(40)))
    with ExitStack() as stack, pytest.raises(InputError, match="Q8_1, which the gguf package"):
        open_model(path, stack)
