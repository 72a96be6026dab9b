"""PyTorch zip checkpoints in ``weightgate diff``: a real torch-written file, MiniLM saved as
a checkpoint (the bytes torch.save writes, built without torch), edits, hostile input.

The checkpoints are read by weightgate's own zip reader and pickle machine; nothing here
unpickles anything (``zipfile`` only lists and reads members to check the reader).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
from safetensors.numpy import load_file, save_file

from tests.builders import torch_checkpoint as tc
from tests.builders.minilm import EDITED, rank_one_edit
from tests.cli_process import run
from tests.models import minilm_dir
from weightgate.analysis.pytorch_tensors import ROOT_NAME
from weightgate.analysis.tensors import open_model
from weightgate.errors import InputError

TORCH_WRITTEN = Path("/work/shared/corpus/picklescan/data/new_pytorch_model.bin")
LEGACY_TORCH = Path("/work/shared/corpus/picklescan/data/pytorch_model.bin")
Arrays = dict[str, npt.NDArray[Any]]


def _values(path: Path, name: str, chunk_elements: int = 1 << 20) -> npt.NDArray[Any]:
    with ExitStack() as stack:
        model = open_model(path, stack)
        return np.concatenate(list(model.values(name, chunk_elements)))


def test_a_checkpoint_written_by_torch_reads_as_its_storage_bytes() -> None:
    with zipfile.ZipFile(TORCH_WRITTEN) as archive:
        raw = archive.read("archive/data/0")
    with ExitStack() as stack:
        model = open_model(TORCH_WRITTEN, stack)
        assert list(model.tensors) == [ROOT_NAME]  # torch.save(tensor): no key
        info = model.tensors[ROOT_NAME]
        assert (info.dtype, info.shape, info.nbytes) == ("F32", (3, 4), 48)
        assert TORCH_WRITTEN.read_bytes()[info.offset : info.offset + info.nbytes] == raw
        values = np.concatenate(list(model.values(ROOT_NAME, chunk_elements=5)))
    np.testing.assert_array_equal(values, np.array(struct.unpack("<12f", raw)))


def test_torchs_own_zip_layout_reads_too(tmp_path: Path) -> None:
    # miniz's layout: data descriptors, and data padded to 64 bytes by an extra field.
    path = tmp_path / "model.pt"
    path.write_bytes(tc.build_checkpoint_torch_layout())
    with ExitStack() as stack:
        model = open_model(path, stack)
        assert {name: info.shape for name, info in model.tensors.items()} == {
            "linear.weight": (2, 3), "linear.bias": (2,),
        }  # fmt: skip
        assert all(info.offset % 64 == 0 for info in model.tensors.values())
        weight = np.concatenate(list(model.values("linear.weight")))
    np.testing.assert_array_equal(weight, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0])


@pytest.fixture(scope="module")
def minilm_arrays() -> Arrays:
    return load_file(str(minilm_dir() / "model.safetensors"))


def _checkpoint(path: Path, arrays: Arrays) -> Path:
    return tc.write_checkpoint(path, *tc.array_state_dict(arrays))


@pytest.fixture(scope="module")
def minilm_checkpoint(tmp_path_factory: pytest.TempPathFactory, minilm_arrays: Arrays) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("torch") / "pytorch_model.bin", minilm_arrays)


def test_minilm_as_a_checkpoint_reads_the_safetensors_values(
    minilm_checkpoint: Path, minilm_arrays: Arrays
) -> None:
    with ExitStack() as stack:
        model = open_model(minilm_checkpoint, stack)
        assert set(model.tensors) == set(minilm_arrays)
        for name, array in minilm_arrays.items():
            info = model.tensors[name]
            assert info.shape == array.shape
            assert info.dtype == {"float32": "F32", "int64": "I64"}[array.dtype.name]
            values = np.concatenate(list(model.values(name)))
            np.testing.assert_array_equal(values, array.astype(np.float64).reshape(-1))
    pieces = _values(minilm_checkpoint, EDITED, chunk_elements=1000)  # pieces join up
    np.testing.assert_array_equal(pieces, minilm_arrays[EDITED].reshape(-1))


def test_a_rewritten_checkpoint_has_an_empty_diff(
    tmp_path: Path, minilm_checkpoint: Path, minilm_arrays: Arrays
) -> None:
    again = _checkpoint(tmp_path / "again.bin", minilm_arrays)
    result = run("diff", minilm_checkpoint, again)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "104 tensors compared: 104 identical, 0 changed" in result.stdout


def test_a_rank_one_edit_fails_and_names_the_tensor(
    tmp_path: Path, minilm_checkpoint: Path, minilm_arrays: Arrays
) -> None:
    edited_arrays = dict(minilm_arrays)
    rank_one_edit(edited_arrays)
    edited = _checkpoint(tmp_path / "edited.bin", edited_arrays)
    result = run("diff", minilm_checkpoint, edited, "--format", "json")
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    census = next(v for v in document["verdicts"] if v["detector"] == "census")
    assert census["status"] == "fail"
    assert census["tensors"] == [EDITED]
    (change,) = document["tensors"]["changed"]
    assert change["tensor"] == EDITED


def test_a_checkpoint_compares_with_the_same_weights_in_safetensors(
    minilm_checkpoint: Path,
) -> None:
    result = run("diff", minilm_dir() / "model.safetensors", minilm_checkpoint)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "104 tensors compared: 104 identical, 0 changed" in result.stdout


def test_tied_weights_views_and_nested_dicts(tmp_path: Path) -> None:
    shared = tc.ArrayStorage("0", np.arange(12, dtype=np.float32))
    half = tc.ArrayStorage("1", np.array([1.0, -2.0], dtype=np.float16))
    model = tc.OrderedDict(
        {
            "embed.weight": tc.Tensor(shared, (3, 4)),
            "head.weight": tc.Tensor(shared, (3, 4)),  # tied: one storage
            "tail": tc.Tensor(shared, (2, 2), offset=8),  # a view into it
            "scale": tc.Tensor(half, (2,)),
        }
    )
    path = tc.write_checkpoint(
        tmp_path / "ckpt.pt", {"model": model, "epoch": 3, "note": "x"}, [shared, half]
    )
    with ExitStack() as stack:
        opened = open_model(path, stack)
        assert set(opened.tensors) == {
            "model.embed.weight", "model.head.weight", "model.tail", "model.scale",
        }  # fmt: skip
        assert opened.tensors["model.scale"].dtype == "F16"
        got = {name: np.concatenate(list(opened.values(name))) for name in opened.tensors}
    np.testing.assert_array_equal(got["model.head.weight"], np.arange(12))
    np.testing.assert_array_equal(got["model.tail"], [8, 9, 10, 11])
    np.testing.assert_array_equal(got["model.scale"], [1.0, -2.0])


def test_bf16_and_fp8_tensors(tmp_path: Path) -> None:
    # bf16 has a typed storage (v2); fp8 is an UntypedStorage of bytes plus a dtype (v3).
    bf16 = np.array([1.0, -2.5, 3e38], dtype=ml_dtypes.bfloat16)
    fp8 = np.array([[448.0, -0.001953125], [1.5, 0.0]], dtype=ml_dtypes.float8_e4m3fn)
    obj, storages = tc.array_state_dict({"norm": bf16, "proj": fp8})
    path = tc.write_checkpoint(tmp_path / "ckpt.pt", obj, storages)
    with ExitStack() as stack:
        model = open_model(path, stack)
        assert model.tensors["norm"].dtype == "BF16"
        assert (model.tensors["proj"].dtype, model.tensors["proj"].shape) == ("F8_E4M3", (2, 2))
        norm = np.concatenate(list(model.values("norm")))
        proj = np.concatenate(list(model.values("proj")))
    np.testing.assert_array_equal(norm, bf16.astype(np.float64))
    np.testing.assert_array_equal(proj, fp8.astype(np.float64).reshape(-1))


def test_a_directory_with_safetensors_keeps_its_checkpoint_by_digest(
    tmp_path: Path, minilm_checkpoint: Path
) -> None:
    save_file({"w": np.ones(2, dtype=np.float32)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "pytorch_model.bin").write_bytes(minilm_checkpoint.read_bytes())
    (tmp_path / "old.pt").write_bytes(LEGACY_TORCH.read_bytes())  # refused only if compared
    with ExitStack() as stack:
        model = open_model(tmp_path, stack)
        assert list(model.tensors) == ["w"]
        assert {"pytorch_model.bin", "old.pt"} <= model.other_files.keys()
    (tmp_path / "model.safetensors").unlink()
    with ExitStack() as stack, pytest.raises(InputError, match=r"old\.pt: a legacy"):
        open_model(tmp_path, stack)


# -- hostile and unsupported input ----------------------------------------------------------


def _small(**tensor: Any) -> tuple[tc.OrderedDict, list[tc.ArrayStorage]]:
    storage = tc.ArrayStorage("0", np.arange(6, dtype=np.float32))
    return tc.OrderedDict({"w": tc.Tensor(storage, **{"shape": (2, 3), **tensor})}), [storage]


def _rezip(path: Path, change: Callable[[str, bytes], tuple[bytes, int] | None]) -> None:
    """Rewrite a checkpoint member by member; ``change`` returns new bytes and method, or
    None to drop the member."""
    members = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            members.append((name, archive.read(name)))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            changed = change(name, data)
            if changed is not None:
                archive.writestr(name, changed[0], compress_type=changed[1])


def _hostile(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.pt"
    if case == "legacy":
        path.write_bytes(LEGACY_TORCH.read_bytes())
        return path
    if case == "legacy-tar":
        path.write_bytes(tc.build_legacy_tar())
        return path
    if case == "trailing-data":
        path.write_bytes(tc.build_checkpoint_torch_layout() + b"hidden")
        return path
    if case == "offset-past-storage":
        tc.write_checkpoint(path, *_small(offset=4))
    elif case == "huge-shape":
        tc.write_checkpoint(path, *_small(shape=(2**62, 2**62), stride=(2**62, 1)))
    elif case == "transposed":
        tc.write_checkpoint(path, *_small(shape=(3, 2), stride=(1, 3)))
    elif case == "pickled-module":
        obj, storages = _small()
        tc.write_checkpoint(path, {"net": _Module(obj["w"])}, storages)
    else:
        tc.write_checkpoint(path, *_small())
        stored = zipfile.ZIP_STORED
        edits: dict[str, Callable[[str, bytes], tuple[bytes, int] | None]] = {
            "compressed-storage": lambda n, d: (
                d, zipfile.ZIP_DEFLATED if n.endswith("data/0") else stored
            ),
            "missing-storage": lambda n, d: None if n.endswith("data/0") else (d, stored),
            "short-storage": lambda n, d: (d[:-4] if n.endswith("data/0") else d, stored),
            "malformed-pickle": lambda n, d: (d[:40] if n.endswith("data.pkl") else d, stored),
            "big-endian": lambda n, d: (b"big" if n.endswith("byteorder") else d, stored),
        }  # fmt: skip
        _rezip(path, edits[case])
    return path


class _Module:
    """A pickled object holding a tensor (as a pickled ``nn.Module`` does): loading calls
    ``torch.FloatTensor(weight)``, which the reader does not model."""

    def __init__(self, weight: tc.Tensor) -> None:
        self.weight = weight

    def __reduce__(self) -> tuple[Any, ...]:
        return (tc.FloatTensor, (self.weight,))


HOSTILE = {
    "offset-past-storage": "tensor 'w': size (2, 3) from element 4 runs past the end of its "
    "storage '0' (24 bytes)",
    "huge-shape": f"tensor 'w': size {(2**62, 2**62)} from element 0 runs past the end",
    "transposed": "stride (1, 3) is not contiguous for size (3, 2)",
    "pickled-module": "outside the dicts, lists and tensors the analysis reads",
    "compressed-storage": "member archive/data/0 is compressed (method 8)",
    "missing-storage": "its storage '0' has no member archive/data/0",
    "short-storage": "storage '0' declares 6 elements of 4 bytes, but its member holds 20",
    "malformed-pickle": "data.pkl: no pickle at 0",
    "big-endian": "byteorder is b'big'",
    "legacy": "a legacy (torch < 1.6, not zip) PyTorch checkpoint",
    "legacy-tar": "a legacy (torch < 1.6, not zip) PyTorch checkpoint",
    "trailing-data": "the checkpoint's zip structure is ambiguous (6 bytes after the end of "
    "central directory)",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_checkpoints_exit_1_with_the_reason(tmp_path: Path, case: str) -> None:
    path = _hostile(tmp_path, case)
    with ExitStack() as stack, pytest.raises(InputError) as caught:
        open_model(path, stack)
    assert HOSTILE[case] in str(caught.value)
    if case in {"offset-past-storage", "compressed-storage", "legacy", "legacy-tar"}:
        result = run("diff", path, path)  # the process too: exit 1, no traceback
        assert result.returncode == 1, result.stdout + result.stderr
        assert HOSTILE[case] in result.stderr
        assert "Traceback" not in result.stderr


_PEAK_RSS_CHILD = (
    "import sys\n"
    "from weightgate.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
    "print(f'peak-rss-kb {peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def test_memory_follows_the_chunk_not_the_checkpoint(tmp_path: Path) -> None:
    # 512 MiB of one float32 matrix, written a chunk at a time: a reader that loaded it
    # whole would pass 512 MB of resident memory on its own.
    rows, columns = 8192, 16384
    path = tmp_path / "big.pt"
    # A broadcast array: the storage's numel without its memory (its bytes are written below).
    ones = np.broadcast_to(np.ones(1, dtype=np.float32), (rows * columns,))
    obj = tc.OrderedDict({"big.weight": tc.Tensor(tc.ArrayStorage("0", ones), (rows, columns))})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", tc.dumps(obj))
        archive.writestr("archive/byteorder", b"little")
        with archive.open("archive/data/0", "w", force_zip64=True) as member:
            block = np.ones((256, columns), dtype=np.float32).tobytes()
            for _ in range(rows // 256):
                member.write(block)
        archive.writestr("archive/version", b"3\n")
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_CHILD, "diff", str(path), str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 tensors compared: 1 identical, 0 changed" in result.stdout
    peak_mb = int(result.stderr.rsplit("peak-rss-kb ", 1)[1].split()[0]) / 1024
    assert peak_mb < 300, f"peak RSS {peak_mb:.0f} MB for a 512 MiB checkpoint"
