"""The API's HTTP listener, hardened: a client cannot hold it. Its request (line and headers)
must arrive whole within REQUEST_DEADLINE and within MAX_REQUEST_BYTES, or the connection is
closed; at most MAX_CONNECTIONS are open at once, and when a new one comes at the cap the
oldest connection still sending its request is closed for it, so health keeps answering under
a flood of idle or slow connections. (Standard library server, one thread per connection.)"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("updater.serve.api")

REQUEST_DEADLINE = 10.0
MAX_REQUEST_BYTES = 16 * 1024  # request line and headers; only a push notification has a body
MAX_CONNECTIONS = 64
# After an early answer (431), how long the rest of the request is read and dropped.
LINGER_SECONDS = 2.0


class RequestTooLarge(Exception):
    pass


class DeadlineReader(io.RawIOBase):
    """A connection's socket as a raw stream that gives up at a deadline and after a byte
    budget, however slowly the client drips its bytes (a socket timeout alone restarts at
    every byte)."""

    def __init__(self, connection: socket.socket, deadline: float, budget: int) -> None:
        self._connection = connection
        self._deadline = deadline
        self._left = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request not complete in time")
        if self._left <= 0:
            raise RequestTooLarge
        self._connection.settimeout(remaining)
        count = self._connection.recv_into(memoryview(buffer)[:self._left])
        self._left -= count
        return count

    def allow(self, more: int) -> None:
        """Let `more` bytes (a body) be read after the request line and headers."""
        self._left += more


def linger(connection: socket.socket) -> None:
    """Close after an answer given before the request was read whole: end the sending side,
    then read (and drop) what the client still sends, bounded, so the close does not reset
    the connection and lose the answer on the client's side."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        left = MAX_REQUEST_BYTES * 64
        while left > 0 and (remaining := deadline - time.monotonic()) > 0:
            connection.settimeout(remaining)
            chunk = connection.recv(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)


class Server(ThreadingHTTPServer):
    """One thread per connection, at most MAX_CONNECTIONS; at the cap the oldest connection
    still sending its request makes room."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._reading: dict[socket.socket, float] = {}  # still sending its request: since

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            if len(self._open) >= MAX_CONNECTIONS and self._reading:
                oldest = min(self._reading, key=self._reading.__getitem__)
                self._forget(oldest)
                with contextlib.suppress(OSError):  # wakes its thread, which closes it
                    oldest.shutdown(socket.SHUT_RDWR)
            admitted = len(self._open) < MAX_CONNECTIONS  # else every one is being answered
            if admitted:
                self._open.add(request)
                self._reading[request] = time.monotonic()
        if admitted:
            super().process_request(request, client_address)
        else:
            self.shutdown_request(request)

    def request_read(self, request: socket.socket) -> None:
        with self._lock:
            self._reading.pop(request, None)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._forget(request)
        super().shutdown_request(request)

    def _forget(self, request: socket.socket) -> None:
        self._open.discard(request)
        self._reading.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("api: connection from %s ended with an error", client_address, exc_info=True)
