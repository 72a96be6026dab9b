"""A real TLS file server on 127.0.0.1 for the https:// source and the cache tests.

The standard library serves (:class:`tests.servers.loopback.LoopbackServer`); certificates come
from :class:`tests.controlplane.pki.CertificateAuthority`. It serves one directory with what
model downloads rely on: ``HEAD``, ``Range: bytes=N-``, strong ``ETag`` and ``If-Match``. Each
test may inject faults per file (:class:`Fault`): a status instead of the file, a body cut off
after N bytes (connection closed), a stall longer than the client's timeout, a delay before
answering, a ``Range`` header ignored (200 instead of 206), new content after the next request
(the file moved between resolve and fetch). Every request is recorded per path, so a test can
count downloads.

Own code rather than a ready-made server because no stdlib or PyPI server injects these faults.
The fixture ``https_server`` hands each test an empty directory and no faults; the server
itself lives for the whole session. ``python -m tests.servers.https DIR`` serves a directory
without faults (for benchmarks against curl): it prints the URL and the CA file's path.
"""

from __future__ import annotations

import argparse
import shutil
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.controlplane.pki import CertificateAuthority
from tests.servers.loopback import LoopbackServer, QuietHandler, byte_range
from weightgate.sources.base import SourceSettings

CHUNK_BYTES = 1024 * 1024


@dataclass
class Fault:
    """What goes wrong with the next `times` matching requests for one file (None: all).

    Attributes:
        methods: The request methods the fault applies to.
        status: Answer with this status (and no file) instead.
        truncate_after: Close the connection after this many body bytes (Content-Length full).
        stall_after: Send this many body bytes, then stall (until `release()` or 60 s).
        delay: Seconds to wait before answering.
        ignore_range: Answer a ranged request with the whole file (200), as some servers do.
        replace_with: After answering, replace the file's content with these bytes.
        hide_etag: Send no ETag (and ignore If-Match), as plain static servers may.
        times: How many requests the fault applies to; None for every one.
    """

    methods: frozenset[str] = frozenset({"GET"})
    status: int | None = None
    truncate_after: int | None = None
    stall_after: int | None = None
    delay: float = 0.0
    ignore_range: bool = False
    replace_with: bytes | None = None
    hide_etag: bool = False
    times: int | None = 1


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server answered."""

    method: str
    range: str | None
    if_match: str | None
    status: int


@dataclass
class _State:
    root: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    requests: dict[str, list[RecordedRequest]] = field(default_factory=dict)
    stalled: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def take_fault(self, path: str, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults.get(path, []):
                if method in fault.methods and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def record(self, path: str, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.setdefault(path, []).append(request)


def etag_of(path: Path) -> str:
    """The strong ETag the server sends for `path`: changes whenever the file is replaced."""
    status = path.stat()
    return f'"{status.st_ino:x}-{status.st_mtime_ns:x}-{status.st_size:x}"'


class _Handler(QuietHandler):  # the request log is `RecordedRequest`s
    server: _TlsServer

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def _answer(self, with_body: bool) -> None:
        state = self.server.state
        relative = unquote(urlsplit(self.path).path).lstrip("/")
        fault = state.take_fault(relative, self.command)
        if fault is not None and fault.delay:
            state.released.wait(fault.delay)
        self._respond(relative, fault, with_body)
        if fault is not None and fault.replace_with is not None:
            replacement = state.root / (relative + ".replacement")
            replacement.write_bytes(fault.replace_with)
            replacement.replace(state.root / relative)

    def _start(self, relative: str, status: int) -> None:
        # Recorded before any byte goes out, so a client that has its answer sees the record.
        request = RecordedRequest(
            self.command, self.headers.get("Range"), self.headers.get("If-Match"), status
        )
        self.server.state.record(relative, request)
        self.send_response(status)

    def _respond(self, relative: str, fault: Fault | None, with_body: bool) -> int:
        path = self.server.state.root / relative
        if fault is not None and fault.status is not None:
            return self._empty(relative, fault.status)
        if not relative or ".." in relative.split("/") or not path.is_file():
            return self._empty(relative, 404)
        etag = etag_of(path)
        hide_etag = fault is not None and fault.hide_etag
        if_match = None if hide_etag else self.headers.get("If-Match")
        if if_match and if_match.strip() != "*" and etag not in if_match.split(", "):
            return self._empty(relative, 412)
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        requested = byte_range(self.headers.get("Range"), size)
        if requested and not (fault is not None and fault.ignore_range):
            start, end, status = requested[0], requested[1] - 1, 206
            if start >= size:
                return self._empty(relative, 416, {"Content-Range": f"bytes */{size}"})
        self._start(relative, status)
        self.send_header("Content-Length", str(end - start + 1))
        if not hide_etag:
            self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if with_body:
            with path.open("rb") as body:
                body.seek(start)
                self._send_body(body, end - start + 1, fault)
        return status

    def _send_body(self, body: BinaryIO, length: int, fault: Fault | None) -> None:
        limit = length
        if fault is not None and fault.truncate_after is not None:
            limit = min(limit, fault.truncate_after)
        if fault is not None and fault.stall_after is not None:
            limit = min(limit, fault.stall_after)
        sent = 0
        while sent < limit:
            chunk = body.read(min(CHUNK_BYTES, limit - sent))
            if not chunk:
                break
            self.wfile.write(chunk)
            sent += len(chunk)
        if sent < length:  # a fault cut the body short
            if fault is not None and fault.stall_after is not None:
                self.server.state.stalled.set()
                self.server.state.released.wait(60)
            self.close_connection = True

    def _empty(self, relative: str, status: int, headers: dict[str, str] | None = None) -> int:
        self._start(relative, status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return status


class _TlsServer(LoopbackServer):
    def __init__(self, context: ssl.SSLContext, state: _State) -> None:
        super().__init__(_Handler, context)
        self.state = state


class HttpsFileServer:
    """A TLS file server on 127.0.0.1 serving `root`, with per-file fault injection."""

    def __init__(self, root: Path, certificates: Path) -> None:
        self.root = root
        self.state = _State(root)
        authority = CertificateAuthority("weightgate-test-https-ca")
        self.ca_bundle = certificates / "ca.crt"
        self.ca_bundle.write_bytes(authority.cert_pem)
        cert, key = authority.issue_server("127.0.0.1", ["127.0.0.1", "localhost"]).write(
            certificates, "server"
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._server = _TlsServer(context, self.state)
        self.base_url = self._server.url

    def start(self) -> None:
        """Start serving in a background thread."""
        self._server.start()

    def stop(self) -> None:
        """End stalls, stop serving and close the socket."""
        self.state.released.set()
        self._server.stop()

    def settings(self, cache_dir: Path, **changes: Any) -> SourceSettings:
        """Source settings that trust this server, with quick retries (override any field)."""
        values: dict[str, Any] = {
            "timeout": 5.0,
            "retries": 2,
            "backoff": 0.01,
            "cache_dir": cache_dir,
            "ca_bundle": self.ca_bundle,
        }
        values.update(changes)
        return SourceSettings(**values)

    def url(self, path: str) -> str:
        """The https:// URL of `path` (relative to the served directory)."""
        return f"{self.base_url}/{quote(path)}"

    def put(self, path: str, data: bytes) -> str:
        """Serve `data` as `path` (replacing any earlier content); returns its URL."""
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.url(path)

    def link(self, path: str, source: Path) -> str:
        """Serve the existing file `source` as `path` (a symlink: nothing copied)."""
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
        return self.url(path)

    def inject(self, path: str, fault: Fault) -> None:
        """Apply `fault` to the next matching requests for `path` (after earlier faults)."""
        with self.state.lock:
            self.state.faults.setdefault(path, []).append(fault)

    def clear_faults(self, path: str) -> None:
        """Drop the faults still pending for `path`."""
        with self.state.lock:
            self.state.faults.pop(path, None)

    def requests(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The requests answered for `path` so far (only `method`'s, when given)."""
        with self.state.lock:
            recorded = list(self.state.requests.get(path, []))
        return [request for request in recorded if method is None or request.method == method]

    def downloads(self, path: str) -> int:
        """How many GET requests for `path` were answered with file content."""
        return sum(1 for request in self.requests(path, "GET") if request.status in (200, 206))

    def wait_stalled(self, timeout: float = 10.0) -> bool:
        """Wait until a response stalls on a `stall_after` fault."""
        return self.state.stalled.wait(timeout)

    def release(self) -> None:
        """End every stall and delay, now and until `reset()` (stalled connections close)."""
        self.state.released.set()

    def reset(self) -> None:
        """No files, faults, recorded requests or stalls: a fresh server for the next test."""
        self.release()
        with self.state.lock:
            self.state.faults.clear()
            self.state.requests.clear()
            self.state.stalled = threading.Event()
            self.state.released = threading.Event()
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@pytest.fixture(scope="session")
def _https_server_session() -> Iterator[HttpsFileServer]:
    with tempfile.TemporaryDirectory(prefix="weightgate-https-") as workdir:
        root = Path(workdir) / "files"
        root.mkdir()
        server = HttpsFileServer(root, Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def https_server(_https_server_session: HttpsFileServer) -> Iterator[HttpsFileServer]:
    """The session's TLS file server, emptied: no files, faults or recorded requests."""
    _https_server_session.reset()
    yield _https_server_session
    _https_server_session.reset()


def main() -> None:
    """Serve a directory without faults until interrupted (for benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--certificates", type=Path, default=None, help="where to write ca.crt")
    arguments = parser.parse_args()
    certificates = arguments.certificates or Path(tempfile.mkdtemp(prefix="weightgate-https-"))
    server = HttpsFileServer(arguments.directory.resolve(), certificates)
    print(server.base_url, server.ca_bundle, flush=True)
    try:
        server._server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        server._server.server_close()


if __name__ == "__main__":
    main()
