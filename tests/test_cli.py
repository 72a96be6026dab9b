"""The ``weightgate`` command as users run it: a real process, real files, exit codes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
from sarif_pydantic import Sarif

from tests.cli_process import BIN, run


class _System:
    """Pickles as a call of os.system; only ever dumped, never loaded."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


@pytest.fixture
def evil_pickle(tmp_path: Path) -> Path:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_System(), protocol=2))
    return path


@pytest.fixture
def clean_pickle(tmp_path: Path) -> Path:
    path = tmp_path / "clean.pkl"
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "name": "ok"}, protocol=4))
    return path


def test_console_script_is_installed() -> None:
    assert BIN.exists() or shutil.which("weightgate")
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("weightgate ")


def test_clean_file_passes_with_exit_0(clean_pickle: Path) -> None:
    result = run("scan", clean_pickle)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS" in result.stdout
    assert "Traceback" not in result.stderr


def test_malicious_pickle_fails_with_exit_2_and_names_the_global(evil_pickle: Path) -> None:
    result = run("scan", evil_pickle)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "posix.system" in result.stdout
    assert "CRITICAL" in result.stdout
    assert "FAIL" in result.stdout
    # the denial says what to do, once per failing rule
    assert "What the failing rules mean:" in result.stdout
    assert result.stdout.count("  pickle.dangerous-global: ") == 1


def test_missing_path_exits_1_with_a_message(tmp_path: Path) -> None:
    result = run("scan", tmp_path / "nope")
    assert result.returncode == 1
    assert "no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exits_1() -> None:
    result = run("scan", "--format", "yaml", "x")
    assert result.returncode == 1
    assert "invalid choice" in result.stderr


def test_special_files_are_skipped_not_hung_on(tmp_path: Path, clean_pickle: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "dangling").symlink_to(tmp_path / "missing-target")
    result = run("scan", tmp_path, "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clean.pkl" in result.stdout
    direct = run("scan", fifo)
    assert direct.returncode == 1
    assert "not a regular file or directory" in direct.stderr


def test_json_report(evil_pickle: Path, clean_pickle: Path) -> None:
    result = run("scan", evil_pickle.parent, "--format", "json")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["passed"] is False
    assert report["failOn"] == "medium"
    files = {f["path"]: f for f in report["files"]}
    assert set(files) == {"model.pkl", "clean.pkl"}
    assert (
        files["model.pkl"]["sha256"]
        == __import__("hashlib").sha256(evil_pickle.read_bytes()).hexdigest()
    )
    findings = files["model.pkl"]["findings"]
    critical = [f for f in findings if f["severity"] == "critical"]
    assert critical and critical[0]["evidence"] == "posix.system"
    assert isinstance(critical[0]["offset"], int)
    assert files["clean.pkl"]["findings"] == []
    assert report["summary"]["findings"]["critical"] >= 1


def test_sarif_report_is_valid_sarif_2_1_0(evil_pickle: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.sarif"
    result = run("scan", evil_pickle, "--format", "sarif", "--output", out)
    assert result.returncode == 2
    document = json.loads(out.read_text())
    log = Sarif.model_validate(document)
    assert log.version == "2.1.0"
    run_ = document["runs"][0]
    rules = {r["id"]: r for r in run_["tool"]["driver"]["rules"]}
    assert run_["results"], "no results"
    for res in run_["results"]:
        # GitHub code scanning needs a known rule, a level and a located artifact.
        assert res["ruleId"] in rules
        assert rules[res["ruleId"]] == run_["tool"]["driver"]["rules"][res["ruleIndex"]]
        assert res["level"] in {"error", "warning", "note"}
        location = res["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == "model.pkl"
        assert location["region"]["startLine"] >= 1
    assert (
        run_["artifacts"][0]["hashes"]["sha-256"]
        == __import__("hashlib").sha256(evil_pickle.read_bytes()).hexdigest()
    )
    for descriptor in rules.values():
        assert float(descriptor["properties"]["security-severity"]) >= 0


def test_fail_on_threshold(evil_pickle: Path) -> None:
    # posix.system is critical: fails at every threshold.
    assert run("scan", evil_pickle, "--fail-on", "critical").returncode == 2
    bad = run("scan", evil_pickle, "--fail-on", "severe")
    assert bad.returncode == 1
    assert "unknown severity" in bad.stderr


def test_allow_global_extends_the_allowlist_but_not_past_the_denylist(tmp_path: Path) -> None:
    # A GLOBAL sklearn.linear_model._base.LinearRegression, hand-assembled (protocol 0).
    sk = tmp_path / "sk.pkl"
    sk.write_bytes(b"csklearn.linear_model._base\nLinearRegression\n)\x81.")
    assert run("scan", sk).returncode == 2
    assert run("scan", sk, "--allow-global", "sklearn.*").returncode == 0
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'id'\ntR.")
    assert run("scan", evil, "--allow-global", "os.*").returncode == 2


def test_policy_file(tmp_path: Path) -> None:
    sk = tmp_path / "sk.pkl"
    sk.write_bytes(b"csklearn.linear_model._base\nLinearRegression\n)\x81.")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: weightgate.dev/v1alpha1\nkind: ModelPolicy\nmetadata: {name: p}\n"
        "spec:\n  scan:\n    failOn: high\n    allowGlobals: ['sklearn.*']\n"
    )
    assert run("scan", sk, "--policy", policy).returncode == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    result = run("scan", sk, "--policy", broken)
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("failOn: high\nallowGlobal: ['x']\n")
    result = run("scan", sk, "--policy", wrong)
    assert result.returncode == 1
    assert "unknown policy keys: allowGlobal" in result.stderr


def test_limit_override_and_its_errors(tmp_path: Path, clean_pickle: Path) -> None:
    assert run("scan", clean_pickle, "--limit", "max_pickle_opcodes=1000").returncode == 0
    result = run("scan", clean_pickle, "--limit", "max_pickle_opcodes=2")
    assert result.returncode == 2
    assert "format.limit-exceeded" in result.stdout or "limit" in result.stdout
    for bad, message in [
        ("nonsense=1", "unknown limit"),
        ("max_pickle_opcodes=lots", "must be a number"),
        ("max_pickle_opcodes", "expected NAME=VALUE"),
        ("max_pickle_opcodes=-1", "must be positive"),
    ]:
        result = run("scan", clean_pickle, "--limit", bad)
        assert result.returncode == 1, bad
        assert message in result.stderr, result.stderr


def test_text_report_colour_and_progress(evil_pickle: Path, clean_pickle: Path) -> None:
    plain = run("scan", evil_pickle.parent)
    assert "\x1b[" not in plain.stdout
    assert plain.stderr == ""
    coloured = run("scan", evil_pickle.parent, "--color", "always", "--progress", "always")
    assert "\x1b[1;31m" in coloured.stdout
    assert "2/2 files" in coloured.stderr


def test_no_color_env_is_respected_when_auto(evil_pickle: Path) -> None:
    result = run("scan", evil_pickle, env={"NO_COLOR": "1"})
    assert "\x1b[" not in result.stdout
