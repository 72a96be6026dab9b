"""Server processes for the tests: started with their output in a log file, stopped for sure.

Each server runs in its own session and gets SIGTERM from the kernel if the test process dies
(PR_SET_PDEATHSIG), so a killed pytest never leaves an etcd or kube-apiserver behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


class ServerFailed(RuntimeError):
    """A server exited early or never became ready; the message carries its log's tail."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs between fork and exec: only a prctl call through a handle loaded beforehand.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """One long-running server, its log file, and a readiness check."""

    def __init__(self, name: str, argv: Sequence[str | Path], log_path: Path) -> None:
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 (one syscall, nothing that locks)
        )

    def wait_ready(self, is_ready: Callable[[], bool], timeout: float) -> None:
        """Poll `is_ready` until it holds; fail at once if the server exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise ServerFailed(
                    f"{self.name} exited (status {code}) before it was ready; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if is_ready():
                return
            if time.monotonic() > deadline:
                raise ServerFailed(
                    f"{self.name} not ready after {timeout:.0f} s; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.2)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
