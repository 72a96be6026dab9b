"""The measured side of a benchmark: one tool's run in a fresh process.

Run as a script (``python tests/benchmarks/child.py MODE ...``) by ``bench_scan``:

- ``cli ARGS...``: exactly what the ``weightgate`` command does (``weightgate.cli.main``).
- ``model-signing DIR [OUT]``: ``model_signing.hashing.Config().hash(DIR)`` (file-level
  SHA-256 manifest, the library's default); OUT receives ``name digest`` lines.

It prints one JSON line: ``seconds`` spent in the call (imports and interpreter start-up
excluded), ``peak_rss`` (VmHWM of this process, in bytes) and ``exit``. VmHWM is used
rather than ``ru_maxrss`` because ``ru_maxrss`` carries over the RSS of the parent that
spawned the process, and the benchmark runner is a much bigger process than a scan.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def peak_rss() -> int:
    """This process's own peak resident set size in bytes (0 where /proc is missing)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_cli(args: list[str]) -> int:
    from weightgate.cli import main

    return main(args)


def run_model_signing(args: list[str]) -> int:
    from model_signing import hashing

    manifest = hashing.Config().hash(args[0])
    if len(args) > 1:
        lines = [
            f"{item.identifier} {item.digest.digest_hex}"
            for item in manifest.resource_descriptors()
        ]
        Path(args[1]).write_text("\n".join(sorted(lines)) + "\n")
    return 0


MODES = {"cli": run_cli, "model-signing": run_model_signing}


def main(argv: list[str]) -> int:
    mode, args = argv[0], argv[1:]
    runner = MODES[mode]
    # Import the tool before the clock starts: start-up is counted by the parent's wall
    # time, the call alone here.
    if mode == "cli":
        import weightgate.cli  # noqa: F401
    else:
        import model_signing.hashing  # noqa: F401
    start = time.perf_counter()
    code = runner(args)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss": peak_rss(), "exit": code}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
