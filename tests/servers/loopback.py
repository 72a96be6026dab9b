"""What the in-process test servers share: a quiet threaded HTTP(S) server on 127.0.0.1.

The standard library serves (``ThreadingHTTPServer``); this adds what every fixture server
here wrote again: a free port on loopback, a daemon thread to serve from, TLS with the
handshake in the connection's own thread (so one client that hangs up cannot block the
others), silence about clients that hang up on purpose, and the ``Range: bytes=N-[M]`` header.
Also the two servers that never answer: :func:`silent_port` and :func:`refused_port`.
"""

from __future__ import annotations

import re
import socket
import ssl
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on a free 127.0.0.1 port; HTTPS when given a TLS `context`."""

    daemon_threads = True  # a stalled handler must not hold up shutdown

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext | None = None
    ) -> None:
        """Bind a free loopback port (not serving yet: see :meth:`start`)."""
        super().__init__(("127.0.0.1", 0), handler)
        self.context = context
        scheme = "https" if context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def start(self) -> None:
        """Serve from a daemon thread."""
        thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.shutdown()
        self.server_close()

    def finish_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Do the TLS handshake here, in the connection's thread, then answer."""
        if self.context is None:
            super().finish_request(request, client_address)
            return
        assert isinstance(request, socket.socket)
        try:
            wrapped = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # e.g. a client that does not trust our CA: nothing to answer
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that hang up (timeouts, cancelled downloads)."""
        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError):
            super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as real servers answer; no request log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: servers record what tests need to see themselves."""


@contextmanager
def server_directory(prefix: str) -> Iterator[Path]:
    """A temporary directory for a test server's state, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True) as directory:
        yield Path(directory)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`(start, end)` (end exclusive) that `Range: bytes=N-[M]` asks of `size` bytes, else None.

    `start` may be past the end: the caller answers 416.
    """
    match = _RANGE.fullmatch(header or "")
    if match is None:
        return None
    start = int(match.group(1))
    return start, min(int(match.group(2)) + 1 if match.group(2) else size, size)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield listener.getsockname()[1]


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port bound but never listening: every connection is refused at once."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]
