"""Measuring helpers: child processes with their own resource usage, medians, the table.

Each child is waited for with ``os.wait4``, which returns that one child's CPU time and
peak RSS (``RUSAGE_CHILDREN`` would give the maximum over every child so far).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


@dataclass(frozen=True)
class Run:
    """One finished child process."""

    wall: float
    """Seconds from start to exit."""
    cpu: float
    """User plus system CPU seconds of the child."""
    max_rss: int
    """Peak resident set size in bytes (includes the spawning parent's: see child.py)."""
    stdout: bytes
    others: float = 0.0
    """Cores that other processes kept busy meanwhile, on average (machine-wide CPU time
    from /proc/stat minus the child's own). On a shared machine this is what makes a
    two-core figure look worse than it is."""


class ChildFailed(RuntimeError):
    """A measured command exited with an unexpected status."""


def run_child(
    command: Sequence[str | os.PathLike[str]],
    capture: bool = False,
    ok_codes: Sequence[int] = (0,),
) -> Run:
    """Run ``command`` to completion and measure it.

    Args:
        command: The program and its arguments.
        capture: Keep stdout (otherwise it goes to /dev/null).
        ok_codes: Exit codes that count as success.

    Raises:
        ChildFailed: The command exited with another code; stderr is in the message.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        open(os.devnull, "wb") as null,
    ):
        ticks_before = _cpu_times()
        start = time.perf_counter()
        process = subprocess.Popen(
            [os.fspath(part) for part in command], stdout=out if capture else null, stderr=err
        )
        # wait4 rather than Popen.wait: it is the only way to get this child's own usage.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        ticks_after = _cpu_times()
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode not in ok_codes:
            err.seek(0)
            message = err.read().decode(errors="replace").strip()[-2000:]
            raise ChildFailed(
                f"{' '.join(map(str, command))}: exit {process.returncode}\n{message}"
            )
        out.seek(0)
        stdout = out.read() if capture else b""
    cpu = usage.ru_utime + usage.ru_stime
    others = 0.0
    if ticks_before is not None and ticks_after is not None and wall > 0:
        machine = (ticks_after[0] - ticks_before[0]) / os.sysconf("SC_CLK_TCK")
        others = max(0.0, (machine - cpu) / wall)
    return Run(
        wall=wall,
        cpu=cpu,
        max_rss=usage.ru_maxrss * 1024,  # Linux reports KiB
        stdout=stdout,
        others=others,
    )


def median(values: Sequence[float]) -> float:
    """The median (the figures are medians of repeats, robust to one slow run)."""
    return statistics.median(values)


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores other processes kept busy during ``seconds`` (from /proc/stat)."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    if before is None or after is None:
        return 0.0
    busy = (after[0] - before[0]) / os.sysconf("SC_CLK_TCK")
    return busy / seconds


def wait_for_quiet(limit: float = 0.25, patience: float = 30.0) -> float:
    """Wait (at most ``patience`` seconds) until other processes use under ``limit`` cores.

    On a shared machine a two-core scan loses half its cores to a neighbour while the
    one-core reference loses nothing, so each round starts when the machine is quiet.
    Returns the busy cores last seen (above ``limit`` only when patience ran out).
    """
    deadline = time.monotonic() + patience
    while True:
        busy = busy_cores(0.5)
        if busy < limit or time.monotonic() >= deadline:
            return busy


def _cpu_times() -> tuple[int, int] | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(value) for value in fields]
    idle = ticks[3] + ticks[4]
    return sum(ticks[:8]) - idle, idle


class Row(NamedTuple):
    """One line of the summary table (cells preformatted)."""

    figure: str
    measured: str
    reference: str
    ratio: str
    target: str
    met: str


HEADER = Row("figure", "weightgate", "reference (same run)", "ratio", "target", "met")


@dataclass
class Table:
    """The summary printed at the end: one row per figure."""

    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        """Add a row."""
        self.rows.append(row)

    def render(self) -> str:
        """The table as aligned plain text."""
        rows = [HEADER, *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        lines = []
        for number, row in enumerate(rows):
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            lines.append("  ".join(cells).rstrip())
            if number == 0:
                lines.append("  ".join("-" * width for width in widths))
        return "\n".join(lines)
