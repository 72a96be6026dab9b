"""What users meet: scan's signing and record options, and the provenance commands' errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tests.cli_process import run
from tests.provenance.conftest import KeyPair


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    (root / "weights.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    (root / "config.json").write_text('{"hidden": 4}')
    return root


class _System:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("true",))


def test_a_failed_gate_is_not_signed(model: Path, keys: KeyPair, tmp_path: Path) -> None:
    (model / "evil.pkl").write_bytes(pickle.dumps(_System(), protocol=2))
    signature = tmp_path / "model.sig"
    result = run("scan", model, "--signing-key", keys.private, "--signature", signature)
    assert result.returncode == 2
    assert "not signed: the gate failed" in result.stderr
    assert not signature.exists()


def test_files_written_after_the_scan_are_not_signed(model: Path, keys: KeyPair) -> None:
    result = run(
        "scan",
        model,
        "--signing-key",
        keys.private,
        "--signature",
        model / "model.sig",
        "--format",
        "json",
        "--output",
        model / "report.json",
    )
    assert result.returncode == 1
    assert "report.json: not among the scanned files" in result.stderr
    assert not (model / "model.sig").exists()
    assert (model / "report.json").exists()  # the report itself is never lost


def test_signature_inside_the_model_is_left_out_and_verifies(model: Path, keys: KeyPair) -> None:
    signature = model / "model.sig"
    assert (
        run("scan", model, "--signing-key", keys.private, "--signature", signature).returncode == 0
    )
    result = run("verify", model, "--key", keys.public, "--signature", signature)
    assert result.returncode == 0, result.stderr
    assert "verified: 2 files" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--signing-key", "{key}"], "--signing-key needs --signature or --record-store"),
        (["--signature", "s.sig"], "need --signing-key"),
        (["--record-store", "store"], "need --signing-key"),
        (["--signing-key", "{pub}", "--signature", "s.sig"], "not a PEM private key"),
    ],
)
def test_option_errors_exit_1_before_scanning(
    model: Path, keys: KeyPair, tmp_path: Path, args: list[str], message: str
) -> None:
    filled = [a.format(key=keys.private, pub=keys.public) for a in args]
    result = run("scan", model, *filled, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # failed before the scan


def test_signature_of_a_uri_is_refused(keys: KeyPair, tmp_path: Path) -> None:
    result = run(
        "scan", "hf://org/name", "--signing-key", keys.private, "--signature", tmp_path / "s"
    )
    assert result.returncode == 1
    assert "--signature signs a local model directory" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json", "not valid JSON"), ('{"mediaType": "application/json"}', "media type")],
)
def test_unreadable_signatures_exit_1(
    model: Path, keys: KeyPair, tmp_path: Path, content: str, message: str
) -> None:
    signature = tmp_path / "model.sig"
    signature.write_text(content)
    result = run("verify", model, "--key", keys.public, "--signature", signature)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_reports_added_and_removed_files(model: Path, keys: KeyPair, tmp_path: Path) -> None:
    signature = tmp_path / "model.sig"
    assert run("sign", model, "--key", keys.private, "--signature", signature).returncode == 0
    (model / "config.json").unlink()
    (model / "backdoor.bin").write_bytes(b"\0")
    result = run("verify", model, "--key", keys.public, "--signature", signature)
    assert result.returncode == 2
    assert "extra file (not signed): backdoor.bin" in result.stdout
    assert "missing file: config.json" in result.stdout
    assert "2 file(s) differ from the signature" in result.stderr


def test_ignored_paths_are_recorded_and_honoured(
    model: Path, keys: KeyPair, tmp_path: Path
) -> None:
    (model / "cache").mkdir()
    (model / "cache" / "tmp").write_bytes(b"1")
    signature = tmp_path / "model.sig"
    signed = run(
        "sign", model, "--key", keys.private, "--signature", signature, "--ignore-path", "cache"
    )
    assert signed.returncode == 0, signed.stderr
    (model / "cache" / "tmp").write_bytes(b"2")  # ignored at signing, so at verification too
    assert run("verify", model, "--key", keys.public, "--signature", signature).returncode == 0


def test_symlinks_are_refused_with_a_clear_error(
    model: Path, keys: KeyPair, tmp_path: Path
) -> None:
    (model / "link").symlink_to("/etc/passwd")
    result = run("sign", model, "--key", keys.private, "--signature", tmp_path / "s")
    assert result.returncode == 1
    assert "a symbolic link" in result.stderr


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    args = ["keys", "generate", "--private-key", tmp_path / "k", "--public-key", tmp_path / "p"]
    assert run(*args).returncode == 0
    before = (tmp_path / "k").read_bytes()
    again = run(*args)
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert (tmp_path / "k").read_bytes() == before
