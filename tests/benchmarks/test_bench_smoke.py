"""The benchmark harness still runs, on tiny data. Nothing here is timed or compared.

The scan and pickle references of ``scripts/bench`` (model_signing's library, picklescan,
fickling) are in the ``bench`` extra, not in the test install, so these runs use the
references the suite always has (``openssl``, ``curl``) and leave the others to
``scripts/bench``. The signing benchmark's reference is the model_signing CLI the suite
installs anyway (``model_signing_cli``). The fetch benchmark runs against the suite's own
registry and mlflow server (session fixtures).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

from safetensors import safe_open

import weightgate
from tests.benchmarks import (
    bench_diff,
    bench_fetch,
    bench_pickle,
    bench_scan,
    bench_sign,
    bench_weight_stats,
)
from tests.benchmarks.measure import Table, run_child
from tests.benchmarks.model_data import Recipe, cached_model, llama_tensors, model_files
from tests.servers.mlflow import MlflowServer
from tests.servers.registry import OciRegistry

TINY = Recipe(total_bytes=256 * 1024, max_shard_bytes=100_000)
SMALL = Recipe(total_bytes=4 * 1024 * 1024, max_shard_bytes=1_500_000)  # the fetch benchmark's


def test_generated_model_is_valid_sharded_safetensors(tmp_path: Path) -> None:
    directory = cached_model(tmp_path, TINY, log=False)
    names = sorted(path.name for path in model_files(directory))
    shards = [name for name in names if name.endswith(".safetensors")]
    assert shards == [f"model-{n:05d}-of-00004.safetensors" for n in range(1, 5)]
    assert "config.json" in names and "model.safetensors.index.json" in names

    _, tensors = llama_tensors(TINY.total_bytes)
    expected_shapes = {tensor.name: list(tensor.shape) for tensor in tensors}
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    found: dict[str, str] = {}
    for name in shards:
        with safe_open(str(directory / name), framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                found[key] = name
                tensor = handle.get_slice(key)
                assert tensor.get_dtype() == "BF16"
                assert tensor.get_shape() == expected_shapes[key]
    assert found == index["weight_map"]
    data_bytes = sum(tensor.nbytes for tensor in tensors)
    assert index["metadata"]["total_size"] == data_bytes


def test_generated_model_scans_clean(tmp_path: Path) -> None:
    directory = cached_model(tmp_path, TINY, log=False)
    # Random bytes are no weights (NaNs among them): the file pass is what they are for.
    report = weightgate.scan_path(directory, weightgate.ScanSettings(weight_stats=False))
    assert list(report.findings) == []
    assert report.errors == []
    assert sorted(result.format for result in report.files) == [
        "json",
        "json",
        "safetensors",
        "safetensors",
        "safetensors",
        "safetensors",
    ]


def test_cached_model_is_reused_and_regenerated_when_incomplete(tmp_path: Path) -> None:
    directory = cached_model(tmp_path, TINY, log=False)
    first = directory / "config.json"
    first_mtime = first.stat().st_mtime_ns
    assert cached_model(tmp_path, TINY, log=False) == directory
    assert first.stat().st_mtime_ns == first_mtime

    (tmp_path / f"{TINY.key}.done").unlink()  # as if generation had been interrupted
    (directory / "stray").write_bytes(b"partial")
    assert cached_model(tmp_path, TINY, log=False) == directory
    assert not (directory / "stray").exists()


def test_run_child_measures_a_process() -> None:
    run = run_child(["openssl", "dgst", "-sha256", "/dev/null"], capture=True)
    assert (
        run.stdout.decode()
        .rstrip()
        .endswith("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    )
    assert run.wall > 0
    assert run.max_rss > 0


def test_directory_and_memory_benchmarks_run(tmp_path: Path) -> None:
    directory = cached_model(tmp_path, TINY, log=False)
    table = Table()
    lines: list[str] = []
    samples = bench_scan.bench_directory(
        directory,
        repeats=1,
        table=table,
        log=lines.append,
        with_model_signing=False,
        quiet_wait=0,
    )
    bench_scan.memory_rows(directory / "config.json", {"dir scan": samples}, table, lines.append)

    assert any("digests agree for 6 files (openssl, weightgate)" in line for line in lines)
    figures = [row.figure for row in table.rows]
    assert figures[0].startswith("scan 0.00 GiB dir (6 files)")
    assert figures[-1] == "peak memory, dir scan"
    assert table.rows[0].ratio.endswith("x")
    assert samples.peak_rss is not None and samples.peak_rss > 0
    rendered = table.render().splitlines()
    header = ["figure", "weightgate", "reference", "(same", "run)", "ratio", "target", "met"]
    assert rendered[0].split() == header


def test_sign_benchmark_runs(tmp_path: Path, model_signing_cli: Path) -> None:
    directory = cached_model(tmp_path, TINY, log=False)
    table = Table()
    lines: list[str] = []
    bench_sign.bench_sign(directory, repeats=1, table=table, log=lines.append, quiet_wait=0)
    assert any("root digests agree" in line for line in lines)
    assert [row.figure for row in table.rows] == [
        "sign 0.00 GiB dir (6 files)",
        "sign in the scan 0.00 GiB dir (6 files)",
        "scan and sign (a CI gate)",
    ]
    assert all(row.ratio.endswith("x") for row in table.rows)


def test_diff_benchmark_runs(tmp_path: Path) -> None:
    table = Table()
    lines: list[str] = []
    recipe = Recipe(TINY.total_bytes, TINY.max_shard_bytes, finite=True)
    bench_diff.bench_diff(tmp_path, recipe, repeats=1, table=table, log=lines.append, quiet_wait=0)
    assert [row.figure for row in table.rows] == [
        "diff 2 x 0.00 GiB (re-save)",
        "diff 2 x 0.00 GiB (fine-tune)",
    ]
    assert all("peak RSS" in row.measured for row in table.rows)


def test_weight_stats_benchmark_runs(tmp_path: Path) -> None:
    recipe = Recipe(TINY.total_bytes, TINY.max_shard_bytes, finite=True)
    directory = cached_model(tmp_path, recipe, log=False)
    table = Table()
    lines: list[str] = []
    bench_weight_stats.bench_weight_stats(
        directory, repeats=1, table=table, log=lines.append, quiet_wait=0
    )
    assert any("no finding in 6 files with the weight statistics" in line for line in lines)
    assert [row.figure for row in table.rows] == [
        "scan with weight stats 0.00 GiB dir (6 files)",
        "scan --no-weight-stats 0.00 GiB dir (6 files)",
        "  CPU time, with / without weight stats",
        "  slowdown from the weight stats",
    ]
    assert all(row.ratio.endswith("x") for row in table.rows)


def test_finite_recipes_are_weights_and_a_delta_changes_every_one(tmp_path: Path) -> None:
    recipe = Recipe(TINY.total_bytes, TINY.max_shard_bytes, finite=True)
    base = cached_model(tmp_path, recipe, log=False)
    tuned = cached_model(tmp_path, replace(recipe, delta_seed=1), log=False)
    shard = "model-00001-of-00004.safetensors"
    with safe_open(str(base / shard), framework="numpy") as old_file:
        name = next(iter(old_file.keys()))
        old = old_file.get_slice(name)[:]
    with safe_open(str(tuned / shard), framework="numpy") as new_file:
        new = new_file.get_slice(name)[:]
    assert old.dtype == new.dtype
    assert (old != new).mean() > 0.9


def test_pickle_benchmark_runs_on_a_tiny_corpus(tmp_path: Path) -> None:
    benign = pickle.dumps({"weights": [1.0, 2.0, 3.0]}, protocol=4)
    # GLOBAL os.system, called by REDUCE: assembled by hand, never loaded.
    malicious = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hi\x85R."
    (tmp_path / "benign.pkl").write_bytes(benign)
    (tmp_path / "evil.pkl").write_bytes(malicious)
    (tmp_path / "notes.txt").write_text("not a pickle at all\n")
    rows = ["path\tsource_repo\tcommit\tsource_path\tsize_bytes\tsha256\texpected"]
    for name, expected in (("benign.pkl", "benign"), ("evil.pkl", "malicious")):
        rows.append(f"{name}\tx\tx\t{name}\t0\tx\t{expected}")
    rows.append("notes.txt\tx\tx\tnotes.txt\t0\tx\tn/a")
    rows.append("missing.pkl\tx\tx\tmissing.pkl\t0\tx\tbenign")
    (tmp_path / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")

    files = bench_pickle.pickle_files(tmp_path)
    assert [item.path.name for item in files] == ["benign.pkl", "evil.pkl"]

    lines: list[str] = []
    medians = bench_pickle.bench_pickle_corpus(
        tmp_path, repeats=1, table=Table(), log=lines.append, references=()
    )
    assert set(medians) == {"weightgate"}
    assert any("flags 1/1 malicious, 0/1 benign" in line for line in lines)


def test_fetch_benchmark_runs_against_the_test_servers(
    tmp_path: Path, oci_registry: OciRegistry, mlflow_server: MlflowServer
) -> None:
    directory = cached_model(tmp_path / "models", SMALL, log=False)
    targets = [
        bench_fetch.push_to_registry(oci_registry, directory, "bench/fetch-smoke"),
        bench_fetch.register_in_mlflow(
            mlflow_server, directory, mlflow_server.unique_name("bench-fetch")
        ),
    ]
    table = Table()
    lines: list[str] = []
    for target in targets:
        samples = bench_fetch.bench_target(
            target,
            repeats=1,
            scratch=tmp_path / "scratch",
            table=table,
            log=lines.append,
            quiet_wait=0,
        )
        assert set(samples) >= {bench_fetch.WEIGHTGATE, bench_fetch.HASHED, bench_fetch.SYNCED}
        assert all(len(tool.runs) == 1 for tool in samples.values())

    agree = [line for line in lines if "same bytes" in line and "agree on 5 digests" in line]
    assert len(agree) == 2, lines
    headlines = [row for row in table.rows if row.figure.startswith("fetch ")]
    assert [row.figure for row in headlines] == [
        "fetch 0.00 GiB, OCI registry (TLS)",
        "fetch 0.00 GiB, MLflow artifact proxy",
    ]
    assert all(row.ratio.endswith("x") and row.target == ">= 0.8x" for row in headlines)
    assert all(row.measured.endswith(" s)") and "MB/s" in row.measured for row in headlines)
    assert sorted(path.name for path in (tmp_path / "scratch").iterdir()) == []
