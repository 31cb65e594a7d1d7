"""Zero-latency OpenAI-style streaming server for load-generator capacity benchmarks (not an engine).

Raw uvloop protocol, HTTP/1.1 keep-alive, chunked SSE exactly like vLLM's /v1/completions stream: one
token per chunk, the last one with finish_reason "length", then a usage-only chunk (choices: []) when
stream_options.include_usage is set, then [DONE]. Every byte is pre-encoded per request.

Tokens are produced in engine-like steps: each step writes one token to every active stream, then yields
to the loop. A stream whose socket buffer is full (the client is behind) is skipped until it drains, so
the server produces exactly as fast as the client consumes and never queues unbounded data.

GET /stats returns {"tokens", "requests", "done", "active"} for the benchmark's sampler; GET /health 200.
    python -m bench.perf.sse_server --port 0 [--cpu 1]     (prints "PORT <n>" when listening)
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time

import orjson

_HDR_STREAM = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _plain(status: str, body: bytes, ctype: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class Stats:
    tokens = 0
    requests = 0
    done = 0


class Stream:
    __slots__ = ("conn", "left", "tok", "tail")

    def __init__(self, conn: "Conn", left: int, tok: bytes, tail: bytes):
        self.conn, self.left, self.tok, self.tail = conn, left, tok, tail


class Engine:
    """The step loop: one token per active, writable stream per step."""

    def __init__(self) -> None:
        self.streams: list[Stream] = []
        self.wake = asyncio.Event()
        self.created = int(time.time())

    def add(self, s: Stream) -> None:
        self.streams.append(s)
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.streams:
                self.wake.clear()
                await self.wake.wait()
            keep = []
            produced = 0
            for s in self.streams:
                c = s.conn
                if c.closed:
                    continue
                if c.paused:
                    keep.append(s)
                    continue
                s.left -= 1
                produced += 1
                if s.left > 0:
                    c.transport.write(s.tok)
                    keep.append(s)
                else:
                    c.transport.write(s.tail)
                    c.stream = None
                    Stats.done += 1
            Stats.tokens += produced
            self.streams = keep
            await asyncio.sleep(0)


class Conn(asyncio.Protocol):
    engine: Engine

    def __init__(self) -> None:
        self.buf = b""
        self.transport = None
        self.paused = False
        self.closed = False
        self.stream: Stream | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=64 * 1024)

    def connection_lost(self, exc) -> None:
        self.closed = True

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            length = 0
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.handle(lines[0].split(" "), body)

    def handle(self, reqline: list[str], body: bytes) -> None:
        method, path = reqline[0], reqline[1]
        if method == "GET" and path == "/stats":
            self.transport.write(_plain("200 OK", orjson.dumps({
                "tokens": Stats.tokens, "requests": Stats.requests, "done": Stats.done,
                "active": len(self.engine.streams)})))
            return
        if method == "GET" and path in ("/health", "/v1/models"):
            self.transport.write(_plain("200 OK", b'{"object":"list","data":[{"id":"sse-bench","object":"model"}]}'))
            return
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            self.transport.write(_plain("404 Not Found", b'{"error":"not found"}'))
            return
        req = orjson.loads(body)
        chat = path.endswith("chat/completions")
        n_out = int(req.get("max_completion_tokens") or req.get("max_tokens") or 16)
        prompt = req["messages"][-1]["content"] if chat else req.get("prompt", "")
        n_in = len(prompt) if isinstance(prompt, list) else max(1, len(str(prompt).split()))
        Stats.requests += 1
        rid = Stats.requests
        model = orjson.dumps(req.get("model", "sse-bench"))
        created = str(self.engine.created).encode()
        if chat:
            head = (b'{"id":"chatcmpl-%d","object":"chat.completion.chunk","created":%s,"model":%s,'
                    b'"choices":[{"index":0,"delta":{"content":" hi"},"logprobs":null,"finish_reason":'
                    % (rid, created, model))
        else:
            head = (b'{"id":"cmpl-%d","object":"text_completion","created":%s,"model":%s,'
                    b'"choices":[{"index":0,"text":" hi","logprobs":null,"finish_reason":' % (rid, created, model))
        tok = _chunk(b"data: " + head + b'null,"stop_reason":null}],"usage":null}\n\n')
        last = b"data: " + head + b'"length","stop_reason":null}],"usage":null}\n\n'
        obj = b"chat.completion.chunk" if chat else b"text_completion"
        usage = b""
        if (req.get("stream_options") or {}).get("include_usage"):
            usage = (b'data: {"id":"cmpl-%d","object":"%s","created":%s,"model":%s,"choices":[],'
                     b'"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}}\n\n'
                     % (rid, obj, created, model, n_in, n_in + n_out, n_out))
        tail = _chunk(last) + (_chunk(usage) if usage else b"") + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.transport.write(_HDR_STREAM)
        self.stream = Stream(self, n_out, tok, tail)
        self.engine.add(self.stream)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    engine = Engine()
    Conn.engine = engine
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = await loop.create_server(Conn, sock=sock, backlog=16384)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    async with server:
        await engine.run()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cpu", type=int, action="append", help="pin to this CPU (repeatable)")
    a = ap.parse_args(argv)
    if a.cpu:
        os.sched_setaffinity(0, set(a.cpu))
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import uvloop
    try:
        uvloop.run(serve(a.host, a.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
