"""A fault-injecting proxy on loopback in front of a real registry: the registry's faults and the
network's, on demand, for requests whose path matches a rule.

It reads each request's head, decides, and either forwards it (one request per connection:
`Connection: close` is forced upstream, and the rest is piped both ways) or answers with the
fault: added latency, a connection reset mid-response, a stall past any timeout, a 5xx, a 429
with Retry-After, a truncated or endless body, a wrong Docker-Content-Digest. Every request is
logged with its time and the fault it got, so a test can check what the client did (retries,
the wait after a 429).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from harness.procs import free_port

HEAD_LIMIT = 64 * 1024
ENDLESS_LIMIT = 256 * 1024 * 1024  # an "endless" body still ends somewhere: bounded


@dataclass
class Fault:
    """What to do to matching requests: `kind` is one of latency, reset, stall, status,
    truncate, oversize, wrong-digest; `times` limits it to the first N matches."""

    kind: str
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    times: int | None = None
    method: str | None = None  # only requests with this method (e.g. a registry refusing HEAD)


@dataclass(frozen=True)
class Hit:
    time: float
    method: str
    path: str
    fault: str | None


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.rules: dict[str, Fault] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        """Close the listener, cancel the connections still open (a stall, an endless body)
        and let them end, then stop the loop."""
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        self._run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def set_rule(self, path_part: str, fault: Fault | None) -> None:
        with self._lock:
            if fault is None:
                self.rules.pop(path_part, None)
            else:
                self.rules[path_part] = fault

    def hits_for(self, path_part: str) -> list[Hit]:
        with self._lock:
            return [hit for hit in self.hits if path_part in hit.path]

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    def _choose(self, method: str, path: str) -> Fault | None:
        with self._lock:
            fault = None
            for part, rule in self.rules.items():
                if part in path and (rule.times is None or rule.times > 0) and (
                        rule.method is None or rule.method == method):
                    if rule.times is not None:
                        rule.times -= 1
                    fault = rule
                    break
            self.hits.append(Hit(time.monotonic(), method, path, fault.kind if fault else None))
            return fault

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(1)
            if not first.isupper():  # e.g. a TLS ClientHello (dockerd tries https first)
                writer.close()
                return
            head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                TimeoutError):
            writer.close()
            return
        method, path = [*head.split(b"\r\n", 1)[0].decode("latin-1").split(" "), "", ""][:2]
        fault = self._choose(method, path)
        try:
            await self._answer(fault, method, head, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, fault: Fault | None, method: str, head: bytes,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kind = fault.kind if fault else None
        if fault is not None and kind == "latency":
            await asyncio.sleep(fault.delay)
        if fault is not None and kind == "stall":
            await asyncio.sleep(fault.delay)
            return
        if fault is not None and kind == "status":
            extra = f"Retry-After: {fault.retry_after}\r\n" if fault.retry_after else ""
            body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
            writer.write(f"HTTP/1.1 {fault.status} Injected\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
                         .encode() + (body if method != "HEAD" else b""))
            await writer.drain()
            return
        if kind == "reset":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4000\r\n")
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        if kind == "oversize" and method == "GET":
            await self._endless(writer)
            return
        await self._forward(kind, method, head, reader, writer)

    async def _endless(self, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json"
                     f"\r\nContent-Length: {ENDLESS_LIMIT}\r\n\r\n".encode())
        chunk = b" " * 65536
        for _ in range(ENDLESS_LIMIT // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    async def _forward(self, kind: str | None, method: str, head: bytes,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1",
                                                                         self.target_port)
        lines = [line for line in head.decode("latin-1").split("\r\n")[:-2]
                 if not line.lower().startswith("connection:")]
        upstream_writer.write(("\r\n".join([*lines, "Connection: close"]) + "\r\n\r\n")
                              .encode("latin-1"))
        await upstream_writer.drain()
        upload = asyncio.ensure_future(_pipe(reader, upstream_writer))
        try:
            response_head = await upstream_reader.readuntil(b"\r\n\r\n")
            response_head, length = _rewrite(response_head, kind, method)
            writer.write(response_head)
            if kind == "truncate" and method == "GET" and length:
                body = await upstream_reader.read(length // 2)
                writer.write(body)
                await writer.drain()
                writer.transport.abort()
                return
            await _pipe(upstream_reader, writer)
        finally:
            upload.cancel()
            upstream_writer.close()


def _rewrite(head: bytes, kind: str | None, method: str) -> tuple[bytes, int]:
    """The response head with the fault's header changes; and the body length it announces."""
    lines = head.decode("latin-1").split("\r\n")[:-2]
    out, length = [], 0
    for line in lines:
        name, _, value = line.partition(":")
        lowered = name.strip().lower()
        if lowered == "content-length":
            length = int(value.strip() or 0)
        if lowered == "docker-content-digest":
            if kind in ("truncate", "oversize") and method == "HEAD":
                continue  # no digest on HEAD: the client must GET the manifest (and its body)
            if kind == "wrong-digest":
                wrong = hashlib.sha256(b"not this manifest" + value.encode()).hexdigest()
                out.append(f"{name}: sha256:{wrong}")
                continue
        out.append(line)
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1"), length


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
