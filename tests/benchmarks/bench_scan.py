"""Throughput and peak memory of ``weightgate scan`` on a generated multi-GB safetensors model.

The file pass only (``--no-weight-stats``: the model's random bytes are no weights; the
weight statistics are measured by :mod:`.bench_weight_stats`). References, measured in the
same run, over the same files, with a warm page cache:

- ``openssl dgst -sha256 FILES...``: OpenSSL's SHA-256 on one core, the floor any tool
  that hashes every byte has to beat by using more cores.
- ``model_signing.hashing.Config().hash(DIR)``: the file-level SHA-256 manifest that
  model signing computes over the same directory (its default serialisation).

All three are fresh processes, started in rotating order for every repeat, and must agree
on every file's SHA-256 (checked once, before timing) so they are doing the same work.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.benchmarks.measure import Row, Run, Table, median, run_child, wait_for_quiet
from tests.benchmarks.model_data import model_files

CHILD = Path(__file__).with_name("child.py")
MEMORY_BUDGET = 300 * 10**6
THROUGHPUT_TARGET = 1.5


@dataclass
class Samples:
    """The repeats of one tool: parent-side wall/CPU and, for Python tools, the child's report."""

    name: str
    runs: list[Run] = field(default_factory=list)
    reports: list[dict[str, float]] = field(default_factory=list)

    def add(self, run: Run) -> None:
        """Record one run (and the JSON line a ``child.py`` run printed last)."""
        self.runs.append(run)
        if run.stdout:
            self.reports.append(json.loads(run.stdout.splitlines()[-1]))

    @property
    def wall(self) -> float:
        """Median wall time, process start to exit."""
        return median([run.wall for run in self.runs])

    @property
    def cpu(self) -> float:
        """Median user+system CPU seconds."""
        return median([run.cpu for run in self.runs])

    @property
    def fastest(self) -> float:
        """Shortest wall time (noise on a shared machine only ever adds time)."""
        return min(run.wall for run in self.runs)

    @property
    def others(self) -> float:
        """Median number of cores other processes kept busy during the runs."""
        return median([run.others for run in self.runs])

    @property
    def in_call(self) -> float | None:
        """Median seconds inside the measured call (no start-up), for Python tools."""
        return median([r["seconds"] for r in self.reports]) if self.reports else None

    @property
    def peak_rss(self) -> int | None:
        """Largest VmHWM over the repeats, for Python tools."""
        return max(int(r["peak_rss"]) for r in self.reports) if self.reports else None


def openssl_command(files: list[Path]) -> list[str]:
    """The reference: one process, one core."""
    return ["openssl", "dgst", "-sha256", *map(str, files)]


def weightgate_command(
    path: Path, output: str = "/dev/null", *, weight_stats: bool = False
) -> list[str]:
    """``weightgate scan PATH --format json`` through ``child.py`` (same code as the CLI).

    Without the weight statistics unless asked: these figures are the file pass (hash and
    scan every file), and the random bytes of their model are no weights; the statistics
    have their own figure (:mod:`.bench_weight_stats`).
    """
    args = ["scan", str(path), "--format", "json", "--output", output, "--progress", "never"]
    if not weight_stats:
        args.append("--no-weight-stats")
    return [sys.executable, str(CHILD), "cli", *args]


def model_signing_command(directory: Path, output: str | None = None) -> list[str]:
    """model_signing's file-level SHA-256 manifest of ``directory``."""
    return [
        sys.executable,
        str(CHILD),
        "model-signing",
        str(directory),
        *([output] if output else []),
    ]


def check_same_digests(
    directory: Path, files: list[Path], with_model_signing: bool, log: Callable[[str], None]
) -> None:
    """Run each tool once (this also warms the page cache) and compare every digest.

    Raises:
        AssertionError: The tools disagree (so they would not be doing the same work), or
            the generated model does not pass the gate.
    """
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch, "report.json")
        manifest_path = Path(scratch, "manifest.txt")
        openssl_out = run_child(openssl_command(files), capture=True).stdout.decode()
        run_child(weightgate_command(directory, str(report_path)), capture=True)
        report = json.loads(report_path.read_text())
        signed = None
        if with_model_signing:
            run_child(model_signing_command(directory, str(manifest_path)), capture=True)
            lines = manifest_path.read_text().splitlines()
            signed = dict(line.split(" ", 1) for line in lines if line)
    expected = {
        file.relative_to(directory).as_posix(): line.rsplit("= ", 1)[1]
        for file, line in zip(files, openssl_out.splitlines(), strict=True)
    }
    scanned = {entry["path"]: entry["sha256"] for entry in report["files"]}
    if not report["passed"]:
        raise AssertionError(f"the generated model does not pass the gate: {report['summary']}")
    if scanned != expected:
        raise AssertionError("openssl and weightgate disagree on the digests")
    if signed is not None and signed != expected:
        raise AssertionError("openssl and model_signing disagree on the digests")
    tools = "openssl, weightgate" + (", model_signing" if signed is not None else "")
    log(f"  digests agree for {len(expected)} files ({tools})")


def measure_rotating(
    commands: dict[str, list[str]],
    repeats: int,
    quiet_wait: float = 30.0,
    ok_codes: tuple[int, ...] = (0,),
) -> dict[str, Samples]:
    """Run every command ``repeats`` times, rotating which goes first each round.

    Each round waits up to ``quiet_wait`` seconds for the machine to be idle first;
    ``ok_codes`` are the exit codes that count as a run (a diff that fails the gate is one).
    """
    samples = {name: Samples(name) for name in commands}
    names = list(commands)
    for round_number in range(repeats):
        if quiet_wait > 0:
            wait_for_quiet(patience=quiet_wait)
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            python_tool = commands[name][0] == sys.executable
            run = run_child(commands[name], capture=python_tool, ok_codes=ok_codes)
            samples[name].add(run)
    return samples


def describe(samples: Samples, size: int) -> str:
    """One detail line: wall, throughput, CPU per GB, in-call time and peak RSS."""
    text = (
        f"  {samples.name:<22} wall {samples.wall:6.2f} s  {size / samples.wall / 1e9:5.2f} GB/s  "
        f"(fastest {samples.fastest:5.2f} s)  cpu {samples.cpu / size * 1e9:5.2f} s/GB"
    )
    if samples.in_call is not None:
        text += f"  in-call {samples.in_call:6.2f} s ({size / samples.in_call / 1e9:4.2f} GB/s)"
    if samples.peak_rss is not None:
        text += f"  peak RSS {samples.peak_rss / 1e6:5.0f} MB"
    return text + f"  others busy {samples.others:.2f} cores"


def bench_directory(
    directory: Path,
    repeats: int,
    table: Table,
    log: Callable[[str], None],
    *,
    with_model_signing: bool = True,
    quiet_wait: float = 30.0,
) -> Samples:
    """Scan throughput of the sharded model against openssl (and model_signing)."""
    files = model_files(directory)
    size = sum(file.stat().st_size for file in files)
    log(f"directory scan: {directory.name}, {len(files)} files, {size / 2**30:.2f} GiB")
    check_same_digests(directory, files, with_model_signing, log)
    commands = {
        "openssl dgst -sha256": openssl_command(files),
        "weightgate scan": weightgate_command(directory),
    }
    if with_model_signing:
        commands["model_signing hash"] = model_signing_command(directory)
    samples = measure_rotating(commands, repeats, quiet_wait)
    openssl, weightgate = samples["openssl dgst -sha256"], samples["weightgate scan"]
    for tool in samples.values():
        log(describe(tool, size))
    ratio = openssl.wall / weightgate.wall
    table.add(
        Row(
            f"scan {size / 2**30:.2f} GiB dir ({len(files)} files)",
            f"{size / weightgate.wall / 1e9:.2f} GB/s ({weightgate.wall:.2f} s)",
            f"openssl dgst -sha256 {size / openssl.wall / 1e9:.2f} GB/s ({openssl.wall:.2f} s)",
            f"{ratio:.2f}x",
            f">= {THROUGHPUT_TARGET}x",
            "met" if ratio >= THROUGHPUT_TARGET else "NOT MET",
        )
    )
    table.add(
        Row(
            "  CPU time of the same scan",
            f"{weightgate.cpu / size * 1e9:.2f} s/GB",
            f"openssl dgst -sha256 {openssl.cpu / size * 1e9:.2f} s/GB",
            f"{openssl.cpu / weightgate.cpu:.2f}x",
            "(reported: ~1x = hash cost)",
            "-",
        )
    )
    signing = samples.get("model_signing hash")
    if signing is None:
        return weightgate
    table.add(
        Row(
            "  same dir vs model_signing",
            f"{weightgate.wall:.2f} s",
            f"model_signing hash {size / signing.wall / 1e9:.2f} GB/s ({signing.wall:.2f} s)",
            f"{signing.wall / weightgate.wall:.2f}x",
            "(reported)",
            "-",
        )
    )
    return weightgate


def bench_single_file(
    path: Path,
    repeats: int,
    table: Table,
    log: Callable[[str], None],
    quiet_wait: float = 30.0,
) -> Samples:
    """One big file: one SHA-256 stream, so one core at most; memory is the point here."""
    size = path.stat().st_size
    log(f"single file scan: {path.name}, {size / 2**30:.2f} GiB")
    commands = {
        "openssl dgst -sha256": openssl_command([path]),
        "weightgate scan": weightgate_command(path),
    }
    for command in commands.values():  # warm the page cache and both tools
        run_child(command)
    samples = measure_rotating(commands, repeats, quiet_wait)
    openssl, weightgate = samples.values()
    for tool in samples.values():
        log(describe(tool, size))
    table.add(
        Row(
            f"scan one {size / 2**30:.2f} GiB file",
            f"{size / weightgate.wall / 1e9:.2f} GB/s ({weightgate.wall:.2f} s)",
            f"openssl dgst -sha256 {size / openssl.wall / 1e9:.2f} GB/s ({openssl.wall:.2f} s)",
            f"{openssl.wall / weightgate.wall:.2f}x",
            "(one stream: 1 core)",
            "-",
        )
    )
    return weightgate


def memory_rows(
    baseline_file: Path,
    measured: dict[str, Samples],
    table: Table,
    log: Callable[[str], None],
) -> None:
    """Peak RSS of the scans against the 300 MB budget, with a tiny scan as the floor."""
    floor = Samples("weightgate scan (tiny)")
    floor.add(run_child(weightgate_command(baseline_file), capture=True))
    assert floor.peak_rss is not None
    log(
        f"  peak RSS of a scan of {baseline_file.name} (interpreter + imports): "
        f"{floor.peak_rss / 1e6:.0f} MB"
    )
    for label, samples in measured.items():
        peak = samples.peak_rss
        assert peak is not None
        table.add(
            Row(
                f"peak memory, {label}",
                f"{peak / 1e6:.0f} MB",
                f"tiny scan {floor.peak_rss / 1e6:.0f} MB; budget {MEMORY_BUDGET / 1e6:.0f} MB",
                f"{peak / MEMORY_BUDGET:.2f} of budget",
                f"< {MEMORY_BUDGET / 1e6:.0f} MB",
                "met" if peak < MEMORY_BUDGET else "NOT MET",
            )
        )
