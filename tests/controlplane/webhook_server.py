"""A tiny TLS admission webhook for tests: records every AdmissionReview and answers with a
decision the test chooses. It runs in a thread of the test process on a loopback port.
"""

from __future__ import annotations

import json
import ssl
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.controlplane.pki import CertificateAuthority


@dataclass(frozen=True)
class Decision:
    allowed: bool
    message: str = ""
    code: int = 403


Decide = Callable[[dict[str, Any]], Decision]


class RecordingWebhook:
    """`with RecordingWebhook(decide) as hook:` serves https://127.0.0.1:<port>/validate.

    `hook.ca_bundle` is the PEM to put in a webhook configuration's caBundle; `hook.received()`
    returns the `request` part of every AdmissionReview received, in order.
    """

    def __init__(self, decide: Decide) -> None:
        self.decide = decide
        self._requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        authority = CertificateAuthority("weightgate-test-webhook-ca")
        self.ca_bundle = authority.cert_pem
        self._serving = authority.issue_server("weightgate-test-webhook", ["127.0.0.1"])
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "webhook not started"
        return f"https://127.0.0.1:{self._server.server_address[1]}/validate"

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def forget(self) -> None:
        """Drop what was received so far."""
        with self._lock:
            self._requests.clear()

    def __enter__(self) -> RecordingWebhook:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as directory:
            cert, key = self._serving.write(Path(directory), "webhook")
            context.load_cert_chain(cert, key)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                review = json.loads(self.rfile.read(length))
                request = review["request"]
                with hook._lock:
                    hook._requests.append(request)
                decision = hook.decide(request)
                response: dict[str, Any] = {"uid": request["uid"], "allowed": decision.allowed}
                if not decision.allowed:
                    response["status"] = {"code": decision.code, "message": decision.message}
                body = json.dumps(
                    {
                        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
                        "kind": "AdmissionReview",
                        "response": response,
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the recorded requests are the log

        return Handler
