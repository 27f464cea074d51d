"""A TCP proxy on loopback that adds network latency, for benchmarks over a "slow link".

Every chunk is delivered `rtt / 2` after it was read, in each direction, without limiting
throughput (a queue per direction, not a sleep per write); the first client chunk of a
connection waits one extra `rtt`, standing for the TCP handshake the loopback does not cost.
The delay can be changed while it runs (0 while a benchmark sets up).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any


class LatencyProxy:
    def __init__(self, listen_port: int, target_port: int, rtt: float = 0.0) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.rtt = rtt
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> LatencyProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        self._run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)

    async def _serve(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pump(client_reader, upstream_writer, handshake=True),
            self._pump(upstream_reader, client_writer, handshake=False),
            return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    handshake: bool) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
            writer.close()

        delivering = asyncio.create_task(deliver())
        extra = self.rtt if handshake else 0.0
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.rtt / 2 + extra, data))
                extra = 0.0
        finally:
            queue.put_nowait((0.0, b""))
            await delivering
