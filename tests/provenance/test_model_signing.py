"""Both directions against the real OpenSSF model_signing CLI, on the real all-MiniLM-L6-v2.

weightgate's signature verifies with ``model_signing verify key``, model_signing's verifies
with ``weightgate verify``, and a one-byte change to any file of the model fails both.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli_process import run
from tests.models import minilm_dir, model_files
from tests.provenance.conftest import KeyPair


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of MiniLM with a git directory, as a cloned model repository has."""
    root = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2"
    shutil.copytree(minilm_dir(), root)
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return root


def _signed_files(model: Path) -> dict[str, Path]:
    """The files both tools sign: all but the git paths."""
    return {name: path for name, path in model_files(model).items() if not name.startswith(".git/")}


def _model_signing(cli: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cli), *map(str, args)], capture_output=True, text=True, timeout=300, check=False
    )


def _ms_verify(
    cli: Path, keys: KeyPair, signature: Path, model: Path
) -> subprocess.CompletedProcess[str]:
    return _model_signing(
        cli, "verify", "key", "--public_key", keys.public, "--signature", signature, model
    )


def _ms_sign(
    cli: Path, keys: KeyPair, signature: Path, model: Path
) -> subprocess.CompletedProcess[str]:
    return _model_signing(
        cli, "sign", "key", "--private_key", keys.private, "--signature", signature, model
    )


def _wg_verify(keys: KeyPair, signature: Path, model: Path) -> subprocess.CompletedProcess[str]:
    return run("verify", model, "--key", keys.public, "--signature", signature)


def test_weightgate_signature_verifies_with_model_signing(
    model_signing_cli: Path, keys: KeyPair, model: Path, tmp_path: Path
) -> None:
    signature = tmp_path / "model.sig"
    signed = run("sign", model, "--key", keys.private, "--signature", signature)
    assert signed.returncode == 0, signed.stderr
    verified = _ms_verify(model_signing_cli, keys, signature, model)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verification succeeded" in verified.stdout


def test_model_signing_signature_verifies_with_weightgate(
    model_signing_cli: Path, keys: KeyPair, model: Path, tmp_path: Path
) -> None:
    signature = tmp_path / "model.sig"
    made = _ms_sign(model_signing_cli, keys, signature, model)
    assert made.returncode == 0, made.stdout + made.stderr
    verified = _wg_verify(keys, signature, model)
    assert verified.returncode == 0, verified.stderr
    assert f"verified: {len(_signed_files(model))} files" in verified.stdout


def test_signature_inside_the_model_directory_is_left_out_by_both(
    model_signing_cli: Path, keys: KeyPair, model: Path
) -> None:
    signature = model / "model.sig"
    try:
        assert run("sign", model, "--key", keys.private, "--signature", signature).returncode == 0
        assert _ms_verify(model_signing_cli, keys, signature, model).returncode == 0
        assert _wg_verify(keys, signature, model).returncode == 0
    finally:
        signature.unlink(missing_ok=True)


def test_one_byte_changed_in_any_file_fails_both(
    model_signing_cli: Path, keys: KeyPair, model: Path, tmp_path: Path
) -> None:
    ours, theirs = tmp_path / "weightgate.sig", tmp_path / "model_signing.sig"
    assert run("sign", model, "--key", keys.private, "--signature", ours).returncode == 0
    made = _ms_sign(model_signing_cli, keys, theirs, model)
    assert made.returncode == 0, made.stderr
    files = _signed_files(model)
    assert len(files) >= 12 and "model.safetensors" in files
    for name, path in files.items():
        original = path.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        path.write_bytes(bytes(changed))
        try:
            for signature in (ours, theirs):
                ms = _ms_verify(model_signing_cli, keys, signature, model)
                assert ms.returncode != 0, f"model_signing accepted a changed {name}"
                assert name in ms.stdout + ms.stderr
                wg = _wg_verify(keys, signature, model)
                assert wg.returncode == 2, f"weightgate accepted a changed {name}: {wg.stdout}"
                assert f"changed: {name} " in wg.stdout
        finally:
            path.write_bytes(original)
    (model / ".git" / "HEAD").write_text("ref: refs/heads/other\n")  # ignored by both
    for signature in (ours, theirs):
        assert _wg_verify(keys, signature, model).returncode == 0
        assert _ms_verify(model_signing_cli, keys, signature, model).returncode == 0


def test_a_signature_from_another_key_fails_both(
    model_signing_cli: Path, keys: KeyPair, model: Path, tmp_path: Path
) -> None:
    from tests.provenance.conftest import make_key_pair

    other = make_key_pair(tmp_path, "other")
    signature = tmp_path / "model.sig"
    assert run("sign", model, "--key", other.private, "--signature", signature).returncode == 0
    assert _ms_verify(model_signing_cli, keys, signature, model).returncode != 0
    result = _wg_verify(keys, signature, model)
    assert result.returncode == 2
    assert "signed by another key" in result.stderr


def test_password_protected_key_signs(model_signing_cli: Path, model: Path, tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("correct horse\n")
    made = run(
        "keys",
        "generate",
        "--private-key",
        tmp_path / "k.pem",
        "--public-key",
        tmp_path / "p.pem",
        "--key-password-file",
        password,
    )
    assert made.returncode == 0, made.stderr
    assert "(private, encrypted)" in made.stdout
    signature = tmp_path / "model.sig"
    missing = run("sign", model, "--key", tmp_path / "k.pem", "--signature", signature)
    assert missing.returncode == 1
    assert "encrypted; give its password" in missing.stderr
    signed = run(
        "sign",
        model,
        "--key",
        tmp_path / "k.pem",
        "--signature",
        signature,
        env={"WEIGHTGATE_KEY_PASSWORD": "correct horse"},
    )
    assert signed.returncode == 0, signed.stderr
    verified = _model_signing(
        model_signing_cli,
        "verify",
        "key",
        "--public_key",
        tmp_path / "p.pem",
        "--signature",
        signature,
        model,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_scan_signs_what_it_scanned_and_model_signing_agrees(
    model_signing_cli: Path, keys: KeyPair, model: Path, tmp_path: Path
) -> None:
    signature = tmp_path / "scanned.sig"
    result = run("scan", model, "--signing-key", keys.private, "--signature", signature)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"signed the scanned files: {signature}" in result.stderr
    verified = _ms_verify(model_signing_cli, keys, signature, model)
    assert verified.returncode == 0, verified.stdout + verified.stderr
