"""Property: no byte string makes the diff's tensor readers crash or read out of bounds.

Mutations of PyTorch checkpoints (zipfile's layout and torch's own; the whole file, or only
``data.pkl`` inside a sound zip) and of a safetensors file go through
:func:`~weightgate.analysis.tensors.open_model` as the diff opens a file; the outcome must
be an :class:`InputError` or tensors whose every byte lies in the file and whose values all
decode.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save

from tests.builders import torch_checkpoint as tc
from tests.property.test_readers_fuzz import FUZZ, mutations
from weightgate.analysis.tensors import open_model
from weightgate.errors import InputError


@pytest.fixture(scope="module")
def tensor_seeds() -> list[bytes]:
    shared = tc.ArrayStorage("0", np.arange(12, dtype=np.float32))
    nested = {
        "model": tc.OrderedDict(
            {"a": tc.Tensor(shared, (3, 4)), "b": tc.Tensor(shared, (2,), offset=10)}
        ),
        "step": 7,
    }
    with tempfile.TemporaryDirectory() as tmp:
        written = tc.write_checkpoint(Path(tmp) / "nested.pt", nested, [shared]).read_bytes()
    return [
        tc.build_checkpoint(),
        tc.build_checkpoint_torch_layout(),
        written,
        save({"w": np.ones((2, 3), dtype=np.float32)}),
    ]


def _open_all(blob: bytes) -> None:
    """Open ``blob`` as the diff does and read every tensor, or get an InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        path.write_bytes(blob)
        try:
            with ExitStack() as stack:
                model = open_model(path, stack)
                for name, info in model.tensors.items():
                    assert info.offset >= 0 and info.offset + info.nbytes <= len(blob)
                    values = list(model.values(name, chunk_elements=3))
                    assert sum(len(chunk) for chunk in values) == info.size
        except InputError:
            pass


@FUZZ
@given(data=st.data())
def test_mutated_checkpoints_open_or_fail_with_an_input_error(
    tensor_seeds: list[bytes], data: st.DataObject
) -> None:
    _open_all(data.draw(mutations(tensor_seeds)))


@FUZZ
@given(data=st.data())
def test_mutated_data_pkl_in_a_sound_zip_opens_or_fails_with_an_input_error(
    tensor_seeds: list[bytes], data: st.DataObject
) -> None:
    # The zip stays well formed, so every mutation reaches the pickle and tensor checks.
    members = _members(data.draw(st.sampled_from(tensor_seeds[:3])))
    pickles = [members["archive/data.pkl"]]
    members["archive/data.pkl"] = data.draw(mutations(pickles))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    _open_all(buffer.getvalue())


def _members(checkpoint: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(checkpoint)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
