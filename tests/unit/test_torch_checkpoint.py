"""PyTorch checkpoints built without torch: benign ones pass, tampered ones fail."""

from __future__ import annotations

import io
import pickletools
import struct
import tarfile
import zipfile
from pathlib import Path

from tests.builders import torch_checkpoint as tc
from tests.builders import zips
from tests.builders.zips import EVIL_PICKLE, Evil, Member, build_zip, rules, scan_bytes, worst
from weightgate import Severity, scan_path

CRITICAL_PICKLE = ("pickle.dangerous-global", Severity.CRITICAL)


def opcodes(data: bytes) -> list[tuple[str, object]]:
    return [(op.name, arg) for op, arg, _ in pickletools.genops(data)]


def test_builder_writes_what_torch_save_writes() -> None:
    data = tc.build_checkpoint()
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist() == [
        "archive/data.pkl",
        "archive/.format_version",
        "archive/.storage_alignment",
        "archive/byteorder",
        "archive/data/0",
        "archive/data/1",
        "archive/version",
        "archive/.data/serialization_id",
    ]
    ops = opcodes(archive.read("archive/data.pkl"))
    assert ops[0] == ("PROTO", 2)
    globals_ = [arg for name, arg in ops if name == "GLOBAL"]
    assert globals_ == [
        "collections OrderedDict",
        "torch._utils _rebuild_tensor_v2",
        "torch FloatStorage",
    ]
    assert [name for name, _ in ops].count("BINPERSID") == 2
    assert ("BINUNICODE", "_metadata") in ops and ops[-2:] == [("BUILD", None), ("STOP", None)]
    weight = struct.unpack("<6f", archive.read("archive/data/0"))
    assert weight == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def test_state_dict_checkpoint_passes(tmp_path: Path) -> None:
    found = scan_bytes(tmp_path, tc.build_checkpoint(), "pytorch_model.bin")
    assert worst(found) in (None, Severity.INFO), found
    report = scan_path(tmp_path / "pytorch_model.bin")
    assert report.files[0].format == "zip" and not report.failed(Severity.LOW)


def test_checkpoint_in_torch_writer_layout_passes(tmp_path: Path) -> None:
    data = tc.build_checkpoint_torch_layout({"w": (64, 64), "b": (64,)})
    for info in zipfile.ZipFile(io.BytesIO(data)).infolist():
        name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
        assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0  # like miniz
        assert info.flag_bits & 0x8  # data descriptors, like miniz
    assert worst(scan_bytes(tmp_path, data, "model.pt")) in (None, Severity.INFO)


def test_big_random_storages_make_no_noise(tmp_path: Path) -> None:
    data = tc.build_checkpoint({f"layer{i}.weight": (256, 256) for i in range(8)})
    assert worst(scan_bytes(tmp_path, data, "model.pt")) in (None, Severity.INFO)


def test_malicious_data_pkl_fails(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in tc.records(*tc.state_dict(tc.DEFAULT_SHAPES)):
            archive.writestr(name, EVIL_PICKLE if name.endswith("data.pkl") else data)
    found = scan_bytes(tmp_path, out.getvalue(), "model.pt")
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == "model.pt!archive/data.pkl"


def test_pickle_hidden_in_a_storage_member_fails(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in tc.records(*tc.state_dict(tc.DEFAULT_SHAPES)):
            archive.writestr(name, EVIL_PICKLE if name.endswith("data/1") else data)
    found = scan_bytes(tmp_path, out.getvalue(), "model.pt")
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == "model.pt!archive/data/1"


def test_crc_and_flag_tricks_on_a_checkpoint(tmp_path: Path) -> None:
    members = [
        Member("archive/data.pkl", EVIL_PICKLE, flags=0x1, crc=0),
        Member("archive/version", b"3\n"),
    ]
    found = scan_bytes(tmp_path, build_zip(members), "model.pt")
    # the CRC of an "encrypted" member is not checked (it would cover the plaintext)
    assert rules(found) == {("zip.odd-flags", Severity.LOW), CRITICAL_PICKLE}


def test_corpus_checkpoints(corpus_dir: Path) -> None:
    for path in (
        "picklescan/data/new_pytorch_model.bin",
        "modelaudit/samples/pytorch/safe_model.pt",
    ):
        report = scan_path(corpus_dir / path)
        assert not report.failed(Severity.LOW), list(report.findings)


# -- legacy (torch < 0.4) tar checkpoints --------------------------------------------------


def test_legacy_tar_checkpoint_passes(tmp_path: Path) -> None:
    found = scan_bytes(tmp_path, tc.build_legacy_tar(), "model.pt")
    assert worst(found) in (None, Severity.INFO), found


def test_legacy_tar_with_malicious_pickle_member(tmp_path: Path) -> None:
    found = scan_bytes(tmp_path, tc.build_legacy_tar(obj_pickle=EVIL_PICKLE), "model.pt")
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path == "model.pt!pickle"


def test_legacy_tar_pickle_hidden_after_storage_bytes(tmp_path: Path) -> None:
    # torch.load unpickles every record of 'storages': a second record's header pickle
    # sits after the first storage's raw bytes, where a plain pickle scan stops.
    data = tc.build_legacy_tar(extra_storage_key=Evil())
    found = scan_bytes(tmp_path, data, "model.pt")
    assert rules(found) == {CRITICAL_PICKLE}
    assert found[0].path.startswith("model.pt!storages@")
    # the evil record comes after the first storage's raw bytes (0.5 = 00 00 00 3f)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        storages = archive.extractfile("storages").read()
    assert storages.index(b"posix") > storages.index(b"\x00\x00\x00\x3f")


def test_legacy_tar_with_broken_storages_still_scans_its_pickles(tmp_path: Path) -> None:
    raw = struct.pack("<q", 1) + struct.pack("<f", 0.5)
    storages = tc.dumps(2) + tc.dumps(("0", "cpu", tc.FloatStorage)) + raw + EVIL_PICKLE
    files = [(name, b"") for name in ("sys_info", "pickle", "tensors")] + [("storages", storages)]
    data = zips.build_tar([(zips.tar_info(name), content) for name, content in files])
    found = scan_bytes(tmp_path, data, "model.pt")
    assert ("format.malformed", Severity.MEDIUM) in rules(found)
    assert CRITICAL_PICKLE in rules(found)
