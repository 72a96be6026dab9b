"""What the weight statistics add to ``weightgate scan``: with them and without, vs sha256sum.

The model is generated weights (bf16 of N(0, 0.02), finite, sharded as Hugging Face does:
the diff benchmark's recipe), so the statistics do real work and find nothing. Three fresh
processes over the same files, with a warm page cache, in rotating order for every repeat:
``sha256sum FILES...`` (coreutils, one process, one core: the reference the issue names),
``weightgate scan DIR`` (files, then weight statistics: the default) and ``weightgate scan
DIR --no-weight-stats`` (files only). Each scan is reported as a ratio to sha256sum, and
the slowdown as the ratio of the two scans.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.benchmarks.bench_scan import describe, measure_rotating, weightgate_command
from tests.benchmarks.measure import Row, Table, run_child
from tests.benchmarks.model_data import model_files


def sha256sum_command(files: list[Path]) -> list[str]:
    """The reference: coreutils' SHA-256 of every file, one process, one core."""
    return ["sha256sum", *map(str, files)]


def check_clean(directory: Path, log: Callable[[str], None]) -> None:
    """Scan once with the statistics (also warms the page cache): no finding at all.

    Raises:
        AssertionError: The generated weights got a finding (they are clean by design).
    """
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch, "report.json")
        run_child(weightgate_command(directory, str(report_path), weight_stats=True))
        report = json.loads(report_path.read_text())
    findings = [f for file in report["files"] for f in file["findings"]]
    if findings or not report["passed"]:
        raise AssertionError(f"the generated weights got findings: {findings[:3]}")
    log(f"  no finding in {len(report['files'])} files with the weight statistics")


def bench_weight_stats(
    directory: Path,
    repeats: int,
    table: Table,
    log: Callable[[str], None],
    *,
    quiet_wait: float = 30.0,
) -> None:
    """Add the rows of the scan with and without the weight statistics to ``table``."""
    files = model_files(directory)
    size = sum(file.stat().st_size for file in files)
    log(f"weight statistics: {directory.name}, {len(files)} files, {size / 2**30:.2f} GiB")
    check_clean(directory, log)
    run_child(sha256sum_command(files))
    commands = {
        "sha256sum": sha256sum_command(files),
        "scan (weight stats)": weightgate_command(directory, weight_stats=True),
        "scan --no-weight-stats": weightgate_command(directory),
    }
    samples = measure_rotating(commands, repeats, quiet_wait)
    for tool in samples.values():
        log(describe(tool, size))
    reference = samples["sha256sum"]
    with_stats, files_only = samples["scan (weight stats)"], samples["scan --no-weight-stats"]
    label = f"{size / 2**30:.2f} GiB dir ({len(files)} files)"
    for figure, tool in (
        (f"scan with weight stats {label}", with_stats),
        (f"scan --no-weight-stats {label}", files_only),
    ):
        peak = tool.peak_rss or 0
        table.add(
            Row(
                figure,
                f"{tool.wall:.2f} s, peak RSS {peak / 1e6:.0f} MB",
                f"sha256sum {reference.wall:.2f} s",
                f"{tool.wall / reference.wall:.2f}x",
                "reported",
                "-",
            )
        )
    table.add(
        Row(
            "  CPU time, with / without weight stats",
            f"{with_stats.cpu / size * 1e9:.2f} / {files_only.cpu / size * 1e9:.2f} s/GB",
            f"sha256sum {reference.cpu / size * 1e9:.2f} s/GB",
            f"{with_stats.cpu / reference.cpu:.2f}x / {files_only.cpu / reference.cpu:.2f}x",
            "(less load-sensitive)",
            "-",
        )
    )
    table.add(
        Row(
            "  slowdown from the weight stats",
            f"{with_stats.wall - files_only.wall:.2f} s more",
            f"scan --no-weight-stats {files_only.wall:.2f} s",
            f"{with_stats.wall / files_only.wall:.2f}x",
            "reported",
            "-",
        )
    )
