"""pytest fixtures for the real control plane (loaded by tests/conftest.py).

`control_plane` starts etcd and kube-apiserver once per session with the KServe and Seldon CRDs
installed. Its temporary state is removed at the end; when any test failed (or the control
plane did not come up), both servers' logs are first copied to `.cache/controlplane-logs/`
and their tails printed in the terminal summary.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CORPUS, REPO
from tests.controlplane.cluster import Binaries, ControlPlane
from tests.controlplane.crds import load_crds
from tests.controlplane.processes import log_tail

KEPT_LOGS = REPO / ".cache" / "controlplane-logs"
_kept_logs_key = pytest.StashKey[list[Path]]()
_namespace_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    binaries = Binaries.build()  # fails the tests loudly with the build's output
    workdir = Path(tempfile.mkdtemp(prefix="weightgate-controlplane-"))
    plane = ControlPlane(binaries, workdir)
    healthy = False
    try:
        plane.start()
        plane.install_crds(load_crds(CORPUS / "crds"))
        healthy = True
        yield plane
    finally:
        plane.stop()
        if not healthy or request.session.testsfailed:
            _keep_logs(request.config, plane)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting: nothing finalizes
    objects here, and the name is never reused)."""
    name = f"wg-test-{next(_namespace_numbers)}-{int(time.time() * 1000) % 100000}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def _keep_logs(config: pytest.Config, plane: ControlPlane) -> None:
    destination = KEPT_LOGS / time.strftime("%Y%m%d-%H%M%S")
    destination.mkdir(parents=True, exist_ok=True)
    for log in plane.log_files:
        shutil.copy2(log, destination / log.name)
    config.stash.setdefault(_kept_logs_key, []).append(destination)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for destination in terminalreporter.config.stash.get(_kept_logs_key, []):
        terminalreporter.section("control plane logs")
        terminalreporter.write_line(f"kept in {destination}")
        for log in sorted(destination.glob("*.log")):
            terminalreporter.write_line(f"--- last lines of {log.name}")
            terminalreporter.write_line(log_tail(log))
