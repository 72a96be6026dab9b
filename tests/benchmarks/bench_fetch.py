"""Fetch throughput: ``weightgate.sources.fetch`` from a real OCI registry and a real MLflow
server, against ``curl`` fetching the same blobs from the same URLs in the same run.

The servers are the test suite's (``tests/servers``): the distribution registry over TLS with
the model pushed by oras-py as an ORAS artifact (one layer per file, titled with its path), and
``mlflow server`` with the files logged through its artifact proxy and registered as a version.

Measured (rotating order each round, medians of the repeats, warm page cache):

- weightgate: ``fetch(reference, SourceSettings(cache_dir=<fresh empty dir>, ca_bundle=...))``
  in this process, from the call to verified blobs in the cache: resolve, download, sha256
  in the same pass (checked against the layer digest for OCI; MLflow publishes none, so the
  benchmark checks the computed digests), commit (with the cache's durable record of an
  unsynced blob, not an fdatasync of its bytes: see ``weightgate.sources.cache``).
- the reference: ``curl`` writing the same blobs to files. Which invocation is the fastest
  is measured, not assumed: on the first (untimed) pass each candidate runs once and the
  fastest is timed from then on. The candidates, all with the same concurrency as the
  fetcher (``fetch.PARALLEL_FILES`` files at a time, as weightgate downloads files of one
  model in parallel): ``--parallel`` over HTTP/1.1 (one connection per file, as weightgate),
  ``--parallel`` multiplexed over HTTP/2 (what curl prefers over TLS), and one file after the
  other (on two cores the server and the client already share the CPU, so parallelism can
  lose). ``--parallel-max`` caps the concurrency at the fetcher's.
- for context: ``curl | tee FILE | openssl dgst -sha256`` per file, the same number at a
  time (download, write and hash: the work weightgate does, minus durability; OpenSSL rather
  than coreutils' ``sha256sum``, which has no SHA-NI path and hashes at a quarter of the
  speed), and the chosen curl followed by ``sync -d FILES`` (download, then fdatasync: the
  durability the cache gives its blobs).

The headline ratio is curl time / weightgate time (target >= 0.8x). Each run waits for the
machine to be quiet, starts from an empty output directory, and deletes it and syncs
afterwards, so no run pays for another's dirty pages.
"""

from __future__ import annotations

import functools
import hashlib
import os
import resource
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import httpx
import requests

import weightgate.sources
from tests.benchmarks.bench_scan import Samples
from tests.benchmarks.measure import Row, Run, Table, run_child, wait_for_quiet
from tests.benchmarks.model_data import model_files
from tests.controlplane.cluster import ControlPlaneBuildFailed
from tests.controlplane.processes import ServerFailed
from tests.servers.mlflow import MlflowServer, running_mlflow_server
from tests.servers.registry import OciRegistry, running_registry
from tests.tools.install import ToolInstallFailed
from weightgate.sources.fetch import PARALLEL_FILES

TARGET = 0.8
PARALLEL = PARALLEL_FILES  # files the fetcher downloads at a time
WEIGHTGATE = "weightgate fetch"
HASHED = "curl | tee | openssl dgst"
SYNCED = "curl, then sync -d"


class CannotRun(RuntimeError):
    """A server, push or fetch failed: the benchmark has no figure to give."""


@dataclass(frozen=True)
class Blob:
    """One file of the model as curl fetches it: URL, output name, size and sha256."""

    url: str
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FetchTarget:
    """One source serving the model: its reference for weightgate and its URLs for curl."""

    label: str
    reference: str
    blobs: tuple[Blob, ...]
    ca_bundle: Path | None = None
    environment: tuple[tuple[str, str], ...] = ()

    @property
    def size(self) -> int:
        """Bytes of the whole model."""
        return sum(blob.size for blob in self.blobs)

    def output(self, out: Path) -> list[Path]:
        """Where curl writes each blob under `out` (numbered: model paths may have folders)."""
        return [out / f"{number}.blob" for number in range(len(self.blobs))]


def digests(directory: Path) -> dict[str, tuple[Path, int, str]]:
    """Relative POSIX path -> (file, size, sha256) for every file of the model."""
    found = {}
    for path in model_files(directory):
        found[path.relative_to(directory).as_posix()] = (path, path.stat().st_size, sha256(path))
    return found


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex)."""
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def push_to_registry(registry: OciRegistry, directory: Path, repository: str) -> FetchTarget:
    """Push the model as an ORAS artifact to `repository:v1`; curl reads its blobs by digest."""
    files = digests(directory)
    registry.push(
        f"{repository}:v1",
        [path for path, _, _ in files.values()],
        titles={path: name for name, (path, _, _) in files.items()},
    )
    blobs = tuple(
        Blob(f"https://{registry.host}/v2/{repository}/blobs/sha256:{digest}", name, size, digest)
        for name, (_, size, digest) in files.items()
    )
    reference = f"oci://{registry.host}/{repository}:v1"
    return FetchTarget("OCI registry (TLS)", reference, blobs, registry.ca_bundle)


def register_in_mlflow(server: MlflowServer, directory: Path, name: str) -> FetchTarget:
    """Log the model through the artifact proxy and register it as a version of `name`."""
    files = digests(directory)
    run_id, artifact_uri = server.create_run()
    server.upload(f"{artifact_uri}/model", {path: file for path, (file, _, _) in files.items()})
    server.create_model(name)
    version = server.create_version(name, f"{artifact_uri}/model", run_id)
    root = artifact_uri.removeprefix("mlflow-artifacts:").strip("/")
    proxy = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{root}/model"
    blobs = tuple(
        Blob(f"{proxy}/{quote(path)}", path, size, digest)
        for path, (_, size, digest) in files.items()
    )
    environment = (("MLFLOW_TRACKING_URI", server.url),)
    reference = f"models:/{name}/{version}"
    return FetchTarget("MLflow artifact proxy", reference, blobs, None, environment)


def curl_candidates(target: FetchTarget, out: Path) -> dict[str, list[str]]:
    """The curl invocations that could be the fastest, each writing every blob under `out`."""
    common = ["curl", "--silent", "--show-error", "--fail", "--no-progress-meter"]
    if target.ca_bundle is not None:
        common += ["--cacert", str(target.ca_bundle)]
    outputs = []
    for blob, path in zip(target.blobs, target.output(out), strict=True):
        outputs += ["-o", str(path), blob.url]
    parallel = ["--parallel", "--parallel-max", str(PARALLEL)]
    candidates = {
        "curl --parallel (HTTP/1.1)": [*common, "--http1.1", *parallel, *outputs],
        "curl, one file at a time": [*common, "--http1.1", *outputs],
    }
    if target.blobs[0].url.startswith("https:"):  # curl multiplexes over HTTP/2 when it can
        candidates["curl --parallel (HTTP/2)"] = [*common, *parallel, *outputs]
    return candidates


def curl_hash_command(target: FetchTarget, out: Path) -> list[str]:
    """`curl URL | tee FILE | openssl dgst -sha256 -r > FILE.sha256`, PARALLEL files at once."""
    cacert = f"--cacert {shlex.quote(str(target.ca_bundle))} " if target.ca_bundle else ""
    pipeline = (
        f'curl --silent --show-error --fail --http1.1 {cacert}"$0" '
        '| tee "$1" | openssl dgst -sha256 -r > "$1.sha256"'
    )
    pairs = []
    for blob, path in zip(target.blobs, target.output(out), strict=True):
        pairs += [blob.url, str(path)]
    fan_out = f"xargs -0 -n 2 -P {PARALLEL} bash -o pipefail -c {shlex.quote(pipeline)}"
    return ["bash", "-o", "pipefail", "-c", f'printf "%s\\0" "$@" | {fan_out}', "_", *pairs]


def curl_sync_command(curl: list[str], target: FetchTarget, out: Path) -> list[str]:
    """`curl`, then `sync -d` (fdatasync) of the files it wrote."""
    files = [str(path) for path in target.output(out)]
    return ["sh", "-c", f"{shlex.join(curl)} && sync -d -- {shlex.join(files)}"]


def fetch_once(target: FetchTarget, cache: Path) -> Run:
    """Time weightgate's fetch into `cache`; the digests must be the model's."""
    settings = weightgate.sources.SourceSettings(cache_dir=cache, ca_bundle=target.ca_bundle)
    with mock.patch.dict(os.environ, dict(target.environment)):
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        fetched = weightgate.sources.fetch(target.reference, settings)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    got = {file.path: file.sha256 for file in fetched.files}
    if got != {blob.name: blob.sha256 for blob in target.blobs}:
        raise CannotRun(f"{target.reference}: weightgate fetched other digests: {got}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Run(wall=wall, cpu=cpu, max_rss=0, stdout=b"")


def check_curl_output(target: FetchTarget, out: Path, hashed: bool) -> None:
    """The files curl wrote (and what openssl said of them) are the model's."""
    for blob, path in zip(target.blobs, target.output(out), strict=True):
        said = path.with_name(f"{path.name}.sha256").read_text().split()[0] if hashed else None
        if sha256(path) != blob.sha256 or said not in (None, blob.sha256):
            raise CannotRun(f"{target.label}: curl fetched other bytes from {blob.url}")


def in_fresh_dir(
    directory: Path, run: Callable[[], Run], check: Callable[[], None] | None = None
) -> Run:
    """Run into the empty `directory`, check, delete it and sync (so no dirty pages carry over)."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    try:
        result = run()
        if check is not None:
            check()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        os.sync()
    return result


def mbps(size: int, seconds: float) -> str:
    """Throughput in MB/s (10^6 bytes)."""
    return f"{size / seconds / 1e6:.0f} MB/s"


def bench_target(
    target: FetchTarget,
    repeats: int,
    scratch: Path,
    table: Table,
    log: Callable[[str], None],
    *,
    quiet_wait: float = 30.0,
) -> dict[str, Samples]:
    """Fetch throughput from one source against the fastest curl; adds its rows to `table`."""
    size, cache, out = target.size, scratch / "cache", scratch / "out"
    log(
        f"fetch from {target.label}: {target.reference}, {len(target.blobs)} files, "
        f"{size / 2**30:.2f} GiB"
    )
    # The first pass is untimed: it warms the server's page cache and checks that every tool
    # fetches the model's bytes; the curl candidates' times choose the reference.
    in_fresh_dir(cache, lambda: fetch_once(target, cache))
    candidates = curl_candidates(target, out)
    first: dict[str, float] = {}
    check = functools.partial(check_curl_output, target, out, hashed=False)
    for name, command in candidates.items():
        first[name] = in_fresh_dir(out, functools.partial(run_child, command), check).wall
    chosen = min(first, key=lambda name: first[name])
    log(
        "  curl candidates (one untimed run each): "
        + ", ".join(f"{name} {mbps(size, wall)}" for name, wall in first.items())
        + f"; timing {chosen}"
    )
    commands: dict[str, tuple[Path, Callable[[], Run]]] = {
        WEIGHTGATE: (cache, lambda: fetch_once(target, cache)),
        chosen: (out, lambda: run_child(candidates[chosen])),
        HASHED: (out, lambda: run_child(curl_hash_command(target, out))),
        SYNCED: (out, lambda: run_child(curl_sync_command(candidates[chosen], target, out))),
    }
    in_fresh_dir(out, commands[HASHED][1], lambda: check_curl_output(target, out, hashed=True))
    in_fresh_dir(out, commands[SYNCED][1], lambda: check_curl_output(target, out, hashed=False))
    log(
        "  same bytes: weightgate's verified blobs, curl's files and openssl agree on "
        f"{len(target.blobs)} digests"
    )
    samples = {name: Samples(name) for name in commands}
    names = list(commands)
    for round_number in range(repeats):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            if quiet_wait > 0:  # before every run: one run is seconds, a neighbour's test minutes
                wait_for_quiet(patience=quiet_wait)
            directory, run = commands[name]
            samples[name].add(in_fresh_dir(directory, run))
    for tool in samples.values():
        log(
            f"  {tool.name:<28} wall {tool.wall:6.2f} s  {mbps(size, tool.wall):>10}  "
            f"(fastest {tool.fastest:5.2f} s)  cpu {tool.cpu / size * 1e9:5.2f} s/GB"
        )
    add_rows(table, target, samples, chosen)
    return samples


def add_rows(table: Table, target: FetchTarget, samples: dict[str, Samples], chosen: str) -> None:
    """The headline row (against the chosen curl) and the context rows."""
    size = target.size
    ours, curl = samples[WEIGHTGATE], samples[chosen]
    ratio = curl.wall / ours.wall
    table.add(
        Row(
            f"fetch {size / 2**30:.2f} GiB, {target.label}",
            f"{mbps(size, ours.wall)} ({ours.wall:.2f} s)",
            f"{chosen} {mbps(size, curl.wall)} ({curl.wall:.2f} s)",
            f"{ratio:.2f}x",
            f">= {TARGET}x",
            "met" if ratio >= TARGET else "NOT MET",
        )
    )
    for name, label in ((HASHED, "download + hash"), (SYNCED, "download + fdatasync")):
        other = samples[name]
        table.add(
            Row(
                f"  same fetch vs {label}",
                f"{ours.wall:.2f} s",
                f"{name} {mbps(size, other.wall)} ({other.wall:.2f} s)",
                f"{other.wall / ours.wall:.2f}x",
                "(reported)",
                "-",
            )
        )
    table.add(
        Row(
            "  CPU time of the same fetch",
            f"{ours.cpu / size * 1e9:.2f} s/GB",
            f"{chosen} {curl.cpu / size * 1e9:.2f} s/GB",
            f"{curl.cpu / ours.cpu:.2f}x",
            "(reported)",
            "-",
        )
    )


def bench_fetch(
    directory: Path,
    repeats: int,
    table: Table,
    log: Callable[[str], None],
    *,
    workdir: Path,
    quiet_wait: float = 30.0,
) -> None:
    """Start the registry and the mlflow server under `workdir`, publish, benchmark, clean up.

    Raises:
        CannotRun: A server did not start, the publishing failed, or a fetch failed.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fetch-", dir=workdir))
    try:
        with ExitStack() as servers:
            for name in ("registry", "mlflow"):
                (scratch / name).mkdir()
            log("fetch: starting the OCI registry and the mlflow server ...")
            registry = servers.enter_context(running_registry(scratch / "registry"))
            mlflow = servers.enter_context(running_mlflow_server(scratch / "mlflow"))
            log(f"fetch: publishing {directory.name} to both ...")
            targets = [
                push_to_registry(registry, directory, "bench/model"),
                register_in_mlflow(mlflow, directory, "bench-model"),
            ]
            for target in targets:
                bench_target(target, repeats, scratch, table, log, quiet_wait=quiet_wait)
    except (
        ServerFailed,
        ControlPlaneBuildFailed,
        ToolInstallFailed,
        weightgate.sources.SourceError,
        httpx.HTTPError,
        requests.RequestException,
    ) as error:
        raise CannotRun(f"{type(error).__name__}: {error}") from error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
