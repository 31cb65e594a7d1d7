"""A small fault proxy on loopback, for the fault suite: sits between the load generator and a real engine server.

`FaultProxy(upstream_port)` listens on 127.0.0.1:<free port> in a thread of the test process (its own asyncio loop)
and forwards every connection to the upstream server, byte for byte, unless a fault is set. Faults apply to the
responses of POST requests (the measured ones), counted over the proxy's life in arrival order; `every` = n makes
only every n-th POST faulty (1 = all). GETs (the load generator's pre-connect, /health) pass untouched except in
the "blackhole" mode.

  latency_s         delay before each response piece is forwarded (a slow network)
  bandwidth_bps     response bytes per second, per connection (a capped link)
  stall_after       forward this many response bytes of a faulty request, then nothing more: the connection stays
                    open and silent (a hung engine: deadlocked scheduler, stuck collective)
  reset_after       forward this many response bytes, then reset the connection (RST: SO_LINGER 0)
  blackhole         accept connections, read what comes, never answer anything
  reply             send these raw bytes instead of the upstream's response, then close (a partial HTTP response, an
                    oversized line: whatever a broken server or middlebox could send)

Only loopback, only the upstream given; everything the proxy opened is closed by stop().
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
from dataclasses import dataclass


@dataclass
class Faults:
    every: int = 1
    latency_s: float = 0.0
    bandwidth_bps: float | None = None
    stall_after: int | None = None
    reset_after: int | None = None
    blackhole: bool = False
    reply: bytes | None = None


class FaultProxy:
    def __init__(self, upstream_port: int, faults: Faults | None = None):
        self.upstream_port = upstream_port
        self.faults = faults or Faults()
        self.posts = 0          # POST requests seen
        self.faulted = 0        # ... of which got the fault
        self.connections = 0
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            server = self._loop.run_until_complete(asyncio.start_server(self._client, sock=sock, backlog=1024))
            ready.set()
            self._loop.run_forever()
            server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._loop.run_until_complete(server.wait_closed())
            pending = asyncio.all_tasks(self._loop)
            for t in pending:
                t.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=serve, daemon=True, name="fault-proxy")
        self._thread.start()
        assert ready.wait(10), "fault proxy did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- one client connection ---------------------------------------------------------------------------------
    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(cw)
        f = self.faults
        try:
            if f.blackhole:
                while await cr.read(65536):
                    pass
                return
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(uw)
            state = {"faulty": False, "sent": 0}
            up = asyncio.ensure_future(self._pump_up(cr, uw, cw, state))
            down = asyncio.ensure_future(self._pump_down(ur, cw, state))
            try:
                done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
                if down in done and not up.done() and state["faulty"] and f.stall_after is not None:
                    await up  # a hung server keeps the connection open and silent until the client gives up
            finally:
                up.cancel()
                down.cancel()
                uw.transport.abort()
                self._writers.discard(uw)
        except (ConnectionError, OSError):
            pass
        finally:
            cw.transport.abort()
            self._writers.discard(cw)

    async def _pump_up(self, cr, uw, cw, state) -> None:
        """Client -> upstream. Each POST starts a new response; it is faulty if it is the every-th POST."""
        f = self.faults
        while data := await cr.read(65536):
            n = data.count(b"POST /")
            for _ in range(n):
                self.posts += 1
                state["faulty"] = self.posts % max(1, f.every) == 0
                state["sent"] = 0
                if state["faulty"]:
                    self.faulted += 1
            if n and state["faulty"] and f.reply is not None:
                cw.write(f.reply)
                await cw.drain()
                cw.transport.abort()
                return
            uw.write(data)
            await uw.drain()
        uw.write_eof()

    async def _pump_down(self, ur, cw, state) -> None:
        """Upstream -> client, with latency / bandwidth / stall / reset applied."""
        f = self.faults
        while data := await ur.read(16384):
            if f.latency_s:
                await asyncio.sleep(f.latency_s)
            if state["faulty"] and f.stall_after is not None:
                room = f.stall_after - state["sent"]
                if room <= 0:
                    continue  # silent from now on: read (so the upstream does not block) and drop
                data = data[:room]
            if state["faulty"] and f.reset_after is not None and state["sent"] + len(data) >= f.reset_after:
                cw.write(data[:max(0, f.reset_after - state["sent"])])
                await cw.drain()
                sock = cw.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                cw.transport.abort()
                return
            state["sent"] += len(data)
            if f.bandwidth_bps:
                step = max(1, int(f.bandwidth_bps / 20))
                for i in range(0, len(data), step):
                    cw.write(data[i:i + step])
                    await cw.drain()
                    await asyncio.sleep(len(data[i:i + step]) / f.bandwidth_bps)
            else:
                cw.write(data)
                await cw.drain()
