"""A loopback webhook receiver for tests: verifies every request with the ``standardwebhooks`` package
and records it; can answer 500 to every n-th request, be slow, or be down."""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass


@dataclass
class Received:
    number: int
    msg_id: str
    timestamp: str
    body: bytes
    valid: bool
    status: int

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """``fail_every=5``: requests 5, 10, 15, ... get 500. ``secret`` may be set after start."""

    def __init__(self, port: int = 0, *, fail_every: int = 0, delay_s: float = 0.0, secret: str | None = None):
        self.fail_every, self.delay_s, self.secret = fail_every, delay_s, secret
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = receiver._record(body, dict(self.headers))
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, *_args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client killed mid-request: not our failure
                pass

        self._server = Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, body: bytes, headers: dict[str, str]) -> int:
        from standardwebhooks.webhooks import Webhook

        if self.delay_s:
            time.sleep(self.delay_s)
        try:
            Webhook(self.secret).verify(body, headers)
            valid = True
        except Exception:  # noqa: BLE001 - any failure is an invalid request
            valid = False
        low = {k.lower(): v for k, v in headers.items()}
        with self._lock:
            number = len(self.received) + 1
            status = 500 if self.fail_every and number % self.fail_every == 0 else 200
            self.received.append(Received(number, low.get("webhook-id", ""), low.get("webhook-timestamp", ""), body,
                                          valid, status))
        return status

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def accepted_ids(self) -> list[str]:
        with self._lock:
            return [r.msg_id for r in self.received if r.status == 200]

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)
