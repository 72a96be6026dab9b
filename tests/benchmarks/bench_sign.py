"""Time to sign a multi-GB model directory, as a ratio to ``model_signing sign key``.

Two ways weightgate signs, each against the same reference measured in the same run:

- ``weightgate sign DIR``: hashes every file (in parallel, largest first) and signs;
- ``weightgate scan DIR --signature``: the gate's way, signing what it scanned with the scan
  pass's digests; its signing cost is its wall time minus that of the same ``scan`` alone.

All are whole commands in fresh processes (start-up included, as a user runs them), with the
same P-256 key, over the same generated sharded model, with a warm page cache, started in
rotating order for every repeat. Before timing, the signatures are checked to carry the same
root digest (the same work: every byte hashed, one manifest signed). The reference is the
model_signing CLI the tests use (``scripts/install-model-signing``, its own venv).
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.benchmarks.bench_scan import describe, measure_rotating
from tests.benchmarks.measure import Row, Table, run_child
from tests.benchmarks.model_data import model_files
from tests.tools.install import install_tool

SIGN_TARGET = 0.7


def root_digest(signature: Path) -> str:
    """The subject digest of a model_signing-format bundle (read with json, not weightgate)."""
    bundle = json.loads(signature.read_bytes())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return str(statement["subject"][0]["digest"]["sha256"])


def bench_sign(
    directory: Path,
    repeats: int,
    table: Table,
    log: Callable[[str], None],
    *,
    quiet_wait: float = 30.0,
) -> None:
    """Add the signing row to ``table``."""
    files = model_files(directory)
    size = sum(file.stat().st_size for file in files)
    reference = install_tool("install-model-signing")
    weightgate = Path(sys.executable).parent / "weightgate"
    log(f"sign: {directory.name}, {len(files)} files, {size / 2**30:.2f} GiB")
    with tempfile.TemporaryDirectory() as scratch:
        key, public = Path(scratch, "key.pem"), Path(scratch, "pub.pem")
        run_child([weightgate, "keys", "generate", "--private-key", key, "--public-key", public])
        ours, theirs = Path(scratch, "weightgate.sig"), Path(scratch, "model_signing.sig")
        scanned = Path(scratch, "scanned.sig")
        commands = {
            "model_signing sign key": [
                str(reference),
                "sign",
                "key",
                "--private_key",
                str(key),
                "--signature",
                str(theirs),
                str(directory),
            ],
            "weightgate sign": [
                str(weightgate),
                "sign",
                str(directory),
                "--key",
                str(key),
                "--signature",
                str(ours),
            ],
            # The file pass only, as the scan benchmark: signing is what is measured here.
            "weightgate scan": [str(weightgate), "scan", str(directory), "--no-weight-stats"],
            "weightgate scan --signature": [
                str(weightgate),
                "scan",
                str(directory),
                "--no-weight-stats",
                "--signing-key",
                str(key),
                "--signature",
                str(scanned),
            ],
        }
        for command in commands.values():  # warms the page cache, checks the work is the same
            run_child(command)
        if not root_digest(ours) == root_digest(scanned) == root_digest(theirs):
            raise AssertionError("weightgate and model_signing signed different root digests")
        log(f"  root digests agree: sha256:{root_digest(ours)[:16]}...")
        samples = measure_rotating(commands, repeats, quiet_wait)
    for tool in samples.values():
        log(describe(tool, size))
    theirs = samples["model_signing sign key"]
    hashing = samples["weightgate sign"]
    reused = samples["weightgate scan --signature"].wall - samples["weightgate scan"].wall
    for figure, seconds, how in (
        ("sign", hashing.wall, "weightgate sign (hashes every file)"),
        ("sign in the scan", reused, "scan --signature minus scan (the scan's digests)"),
    ):
        ratio = seconds / theirs.wall
        table.add(
            Row(
                f"{figure} {size / 2**30:.2f} GiB dir ({len(files)} files)",
                f"{seconds:.2f} s: {how}",
                f"model_signing sign key {theirs.wall:.2f} s",
                f"{ratio:.2f}x",
                f"<= {SIGN_TARGET}x",
                "met" if ratio <= SIGN_TARGET else "NOT MET",
            )
        )
    gate = samples["weightgate scan --signature"].wall
    pipeline = samples["weightgate scan"].wall + theirs.wall
    table.add(
        Row(
            "scan and sign (a CI gate)",
            f"{gate:.2f} s: scan --signature",
            f"weightgate scan, then model_signing sign key: {pipeline:.2f} s",
            f"{gate / pipeline:.2f}x",
            "reported",
            "",
        )
    )
