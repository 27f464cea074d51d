"""Notification sinks on loopback for the tests: an HTTP endpoint that keeps every JSON body
POSTed to it (Apprise's json://), and an SMTP server that keeps every mail (mailto://)."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from harness.procs import free_port


class JsonSink:
    def __init__(self, port: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.port = self._server.server_address[1]
        self.url = f"json://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> JsonSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with sink._lock:
                    sink.received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class _Collector:
    def __init__(self) -> None:
        self.mails: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.mails.append(message)
        return "250 OK"


class SmtpSink:
    def __init__(self) -> None:
        self.port = free_port()
        self._collector = _Collector()
        self._controller = Controller(self._collector, hostname="127.0.0.1", port=self.port)
        self.url = (f"mailto://127.0.0.1:{self.port}?from=updater@example.invalid"
                    "&to=ops@example.invalid")

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def texts(self) -> list[str]:
        """Subject and plain-text body of every mail received."""
        found = []
        for mail in self._collector.mails:
            part = mail.get_body(preferencelist=("plain",))
            body = part.get_content() if part is not None else ""
            found.append(f"{mail['Subject']}\n{body}")
        return found


class TricklingSink(JsonSink):
    """A json:// endpoint that takes the request, then answers one header byte a second for up
    to `seconds` (per-read timeouts never fire): a notification sink that hangs its caller."""

    def __init__(self, seconds: float = 120.0) -> None:
        self.seconds = seconds
        self.requests = 0
        self._closing = threading.Event()
        super().__init__()

    def stop(self) -> None:
        self._closing.set()
        super().stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with sink._lock:
                    sink.requests += 1
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(int(sink.seconds)):
                    if sink._closing.wait(1.0):
                        return
                    try:
                        self.wfile.write(b"a")
                        self.wfile.flush()
                    except OSError:
                        return

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
