"""``python -m tests.benchmarks``: run the benchmarks of issues 2, 4, 5 and 6; print the table.

Usage (normally through ``scripts/bench``)::

    python -m tests.benchmarks [--size GIB] [--fetch-size GIB] [--shard-gb GB] [--repeats N]
                               [--quiet-wait SECONDS] [--cache DIR] [--corpus DIR]
                               [--only scan|memory|pickle|fetch|sign|diff|weight-stats ...]

The figures are ratios against references measured in the same run; nothing here fails
because the machine is slow. The exit status is 0 even when a target is not met (the
table says so); it is 1 only when a benchmark could not run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from tests.benchmarks import (
    bench_diff,
    bench_fetch,
    bench_pickle,
    bench_scan,
    bench_sign,
    bench_weight_stats,
)
from tests.benchmarks.bench_scan import Samples
from tests.benchmarks.measure import ChildFailed, Table, busy_cores
from tests.benchmarks.model_data import Recipe, cached_model
from tests.tools.install import ToolInstallFailed

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = Path(os.environ.get("WEIGHTGATE_CORPUS", REPO.parent / "shared" / "corpus"))
PARTS = ("scan", "memory", "pickle", "fetch", "sign", "diff", "weight-stats")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="weightgate benchmarks (ratios to references)."
    )
    parser.add_argument("--size", type=float, default=4.0, help="model size in GiB (default: 4)")
    parser.add_argument(
        "--fetch-size",
        type=float,
        default=2.0,
        help="size in GiB of the model the fetch benchmark serves (default: 2)",
    )
    parser.add_argument(
        "--shard-gb",
        type=float,
        default=1.0,
        help="max shard size in GB, as save_pretrained's max_shard_size (default: 1)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repeats per tool; median (default: 5)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each timed round, wait up to this long for other processes to go idle "
        "(default: 30; 0 to never wait)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        help="run only this part (repeatable): scan = directory throughput, "
        "memory = single big file + peak RSS, pickle = pickle corpus, "
        "fetch = download from an OCI registry and an mlflow server vs curl, "
        "sign = sign the model directory vs model_signing sign key, "
        "diff = weightgate diff of two models vs openssl hashing both, "
        "weight-stats = scan with and without the weight statistics vs sha256sum",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=REPO / ".cache" / "bench",
        help="where generated models are kept between runs (default: .cache/bench)",
    )
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="the shared corpus directory"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.size <= 0 or args.fetch_size <= 0 or args.shard_gb <= 0:
        parser.error("--repeats, --size, --fetch-size and --shard-gb must be positive")
    return args


def log(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    parts = args.only or list(PARTS)
    if ("scan" in parts or "memory" in parts) and shutil.which("openssl") is None:
        print("openssl not found: the throughput reference needs it", file=sys.stderr)
        return 1
    if "weight-stats" in parts and shutil.which("sha256sum") is None:
        print("sha256sum not found: the weight statistics reference needs it", file=sys.stderr)
        return 1
    if "fetch" in parts and shutil.which("curl") is None:
        print("curl not found: the fetch reference needs it", file=sys.stderr)
        return 1
    idle_check = busy_cores(1.0)
    log(f"machine: {os.cpu_count()} cores; busy before start: {idle_check:.2f} cores")
    table = Table()
    measured: dict[str, Samples] = {}
    total = int(args.size * 2**30)
    try:
        if {"scan", "memory", "sign"} & set(parts):
            sharded = cached_model(args.cache, Recipe(total, int(args.shard_gb * 1e9)))
        if "scan" in parts:
            measured["dir scan"] = bench_scan.bench_directory(
                sharded, args.repeats, table, log, quiet_wait=args.quiet_wait
            )
        if "memory" in parts:
            single = cached_model(args.cache, Recipe(total, 2**62)) / "model.safetensors"
            measured["one-file scan"] = bench_scan.bench_single_file(
                single, args.repeats, table, log, quiet_wait=args.quiet_wait
            )
            bench_scan.memory_rows(sharded / "config.json", measured, table, log)
        if "sign" in parts:
            bench_sign.bench_sign(sharded, args.repeats, table, log, quiet_wait=args.quiet_wait)
        if "diff" in parts:
            shard_bytes = int(args.shard_gb * 1e9)
            recipe = Recipe(total, shard_bytes, finite=True)
            bench_diff.bench_diff(
                args.cache, recipe, args.repeats, table, log, quiet_wait=args.quiet_wait
            )
        if "weight-stats" in parts:
            weights = cached_model(args.cache, Recipe(total, int(args.shard_gb * 1e9), finite=True))
            bench_weight_stats.bench_weight_stats(
                weights, args.repeats, table, log, quiet_wait=args.quiet_wait
            )
        if "pickle" in parts:
            bench_pickle.bench_pickle_corpus(args.corpus, args.repeats, table, log)
        if "fetch" in parts:
            recipe = Recipe(int(args.fetch_size * 2**30), int(args.shard_gb * 1e9))
            bench_fetch.bench_fetch(
                cached_model(args.cache, recipe),
                args.repeats,
                table,
                log,
                workdir=args.cache,
                quiet_wait=args.quiet_wait,
            )
    except (ChildFailed, ToolInstallFailed, bench_fetch.CannotRun, AssertionError, OSError) as exc:
        print(f"benchmark could not run: {exc}", file=sys.stderr)
        return 1
    others = [samples.others for samples in measured.values()]
    log("")
    log(table.render())
    if others and max(others) > 0.25:
        log(
            f"\nnote: other processes kept {max(others):.2f} cores busy during the scans; "
            "two-core figures are understated (see 'others busy' above; rerun on an idle "
            "machine)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
