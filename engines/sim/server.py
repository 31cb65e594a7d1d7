"""The simulator's OpenAI-compatible HTTP server (aiohttp on uvloop).

One engine task runs the scheduler in modelled time that is anchored to the wall clock: a step that starts at t and
lasts d (roofline model) ends at t + d; the task sleeps until then, applies the step and wakes the streams that got
tokens. Modelled time never stretches when the CPU is slow: if the task wakes late (event-loop lag: thousands of
streams on two cores) it still ends the step at t + d and runs the following steps back to back, so a stream that
could not be written in time receives several tokens in ONE SSE chunk instead of each token arriving late. The lag
(wall time - modelled step end) is exposed on /metrics as melt:sim_lag_seconds and friends.

Routes: POST /v1/completions, /v1/chat/completions (stream or not), /tokenize, /detokenize; GET /health,
/v1/models, /version, /metrics (vLLM V1 names), /sim/telemetry (modelled NVML sample, {"simulated": true, ...}).
Every response that could be mistaken for a real engine's says simulated: /version, /v1/models, /sim/telemetry and
the `melt:sim_simulated` metric.

Request fields honoured: model (must be the served name, else 404), prompt / messages (counted by engines/sim/tokens),
max_tokens (chat: max_completion_tokens first), min_tokens (validated; always met), stream,
stream_options.include_usage, n (1 only). Sampling parameters (temperature, top_p, ignore_eos, logprobs, ...) are
accepted and ignored: there is no EOS, every request generates exactly max_tokens (default: max_model_len - prompt),
finish_reason "length". stream_options.continuous_usage_stats is ignored.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque

import orjson
from aiohttp import web

from engines.sim import SIM_VERSION
from engines.sim import tokens as tok
from engines.sim.metrics import E2E_BUCKETS, ITL_BUCKETS, TTFT_BUCKETS, Histogram, label_str, metric
from engines.sim.host import HostProfile
from engines.sim.model import PerfModel
from engines.sim.scheduler import Scheduler, SimRequest, StepResult
from engines.sim.telemetry import GpuTelemetryModel

log = logging.getLogger("melt.sim")

LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
# The engine task yields to the streams after this many steps run back to back while behind the wall clock.
_CATCHUP_YIELD_EVERY = 4


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


def error_response(status: int, message: str, param: str | None = None) -> web.Response:
    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type=_JSON)


class _Stream:
    """One HTTP request: one or more SimRequests (a completions batch prompt gives several), and the future the
    engine task resolves when any of them has new tokens."""

    __slots__ = ("reqs", "delivered", "fut", "rid", "chat")

    def __init__(self, reqs: list[SimRequest], rid: str, chat: bool):
        self.reqs, self.rid, self.chat = reqs, rid, chat
        self.delivered = [0] * len(reqs)
        self.fut: asyncio.Future | None = None
        for r in reqs:
            r.owner = self


def _int_field(body: dict, name: str, minimum: int) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise BadRequest(f"{name} must be an integer, got {v!r}", param=name)
    if v < minimum:
        raise BadRequest(f"{name} must be at least {minimum}, got {v}", param=name)
    return v


class SimServer:
    def __init__(self, perf: PerfModel, served_model_name: str | None = None, host: HostProfile | None = None,
                 gpu_indices: list[int] | None = None):
        self.perf = perf
        # One modelled GPU per TP rank, labelled with its position on the box (all ranks run every step together).
        self.gpu_indices = list(gpu_indices) if gpu_indices is not None else list(range(perf.tp))
        # The API server's single core (engines/sim/host.py); None: tokens reach clients at the engine's times.
        self.host = host
        self.api_free = 0.0          # loop time at which the modelled API core is next free
        self.tok_free = 0.0          # ... and the tokenizer's one worker thread
        self.api_open = 0            # streams open in the API server
        self._outbox: deque[tuple[float, SimRequest]] = deque()   # (framed at, request), in time order
        self._outbox_wake: asyncio.Future | None = None
        self._outbox_task: asyncio.Task | None = None
        self.name = served_model_name or perf.model.id
        self.created = int(time.time())
        self.sched: Scheduler | None = None       # made in start(): its clock is the running loop's
        self.telemetry: list[GpuTelemetryModel] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Future | None = None
        self._engine_task: asyncio.Task | None = None
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._name_json = orjson.dumps(self.name)
        self.text_tok = tok.TextTokenizer(perf.model.vocab_size)  # real BPE counts for text prompts
        self._labels = label_str(engine="0", model_name=self.name)
        self.h_ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                                TTFT_BUCKETS)
        self.h_itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                               ITL_BUCKETS)
        self.h_e2e = Histogram("vllm:e2e_request_latency_seconds",
                               "Histogram of e2e request latency in seconds.", E2E_BUCKETS)
        self.h_lag = Histogram("melt:sim_step_lag_seconds",
                               "How late (wall clock) the simulator applied each modelled step end.", LAG_BUCKETS)
        self.lag_last = 0.0
        self.lag_max = 0.0
        self.chunks_total = 0
        self.stream_tokens_total = 0
        self.open_streams = 0

    # -- lifecycle

    async def start(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self.sched = Scheduler(self.perf, clock=loop.time)
        self.telemetry = [GpuTelemetryModel(self.perf.gpu, loop.time(), self.perf.knobs.mem_fraction, index=i,
                                            peak_flops=self.perf.peak_flops,
                                            bandwidth_bytes_s=self.perf.gpu.mem_bandwidth_gbs * 1e9)
                          for i in self.gpu_indices]
        self._engine_task = asyncio.create_task(self._engine_loop(), name="sim-engine")
        if self.host is not None:
            self._outbox_task = asyncio.create_task(self._outbox_loop(), name="sim-api-out")

    async def stop(self) -> None:
        if self._outbox_task:
            self._outbox_task.cancel()
            try:
                await self._outbox_task
            except asyncio.CancelledError:
                pass
        if self._engine_task:
            self._engine_task.cancel()
            try:
                await self._engine_task
            except asyncio.CancelledError:
                pass

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/detokenize", self.detokenize)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/version", self.version)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/sim/telemetry", self.sim_telemetry)

        async def on_startup(_app: web.Application) -> None:
            await self.start()

        async def on_cleanup(_app: web.Application) -> None:
            await self.stop()

        app.on_startup.append(on_startup)
        app.on_cleanup.append(on_cleanup)
        return app

    # -- the engine task

    async def _engine_loop(self) -> None:
        loop = self._loop
        sched = self.sched
        t_free = loop.time()       # modelled time at which the engine is free for its next step
        behind = 0
        while True:
            step = sched.schedule(t_free) if sched.has_work() else None
            if step is None:
                # Sleep until a request arrives (nothing pending) or the next pending one is ready, unless one that is
                # ready sooner arrives meanwhile (a text prompt in the tokenizer is ready later than a token-id
                # prompt sent after it).
                ready = sched.next_ready_time()
                wake = self._wake = loop.create_future()
                d = None if ready is None else max(t_free, ready) - loop.time()
                if d is None or d > 0:
                    await asyncio.wait({wake}, timeout=d)
                self._wake = None
                if ready is not None and not wake.done():
                    t_free = max(t_free, ready)
                    while (d := t_free - loop.time()) > 0:   # timers may fire a little early
                        await asyncio.sleep(d)
                continue
            if self.host is not None:   # API and engine on one core: the API's queued work stretches the step
                step.end += self.host.shared_core_stretch(self.api_free, step.start, step.end - step.start)
            if step.end > loop.time():
                behind = 0
                # Timers may fire a little early (millisecond granularity): never release tokens before their time.
                while (d := step.end - loop.time()) > 0:
                    await asyncio.sleep(d)
            else:
                behind += 1
                if behind % _CATCHUP_YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let streams write; they will coalesce the tokens of the steps we ran
            lag = loop.time() - step.end
            res = sched.complete(step)
            t_free = step.end
            self._account(res, lag)
            if self.host is not None:
                self._frame(res, step.end)
                continue
            for req in res.sampled:
                fut = req.owner.fut if req.owner is not None else None
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _frame(self, res: StepResult, t: float) -> None:
        """Queue this step's tokens on the API core: each is visible to its client once framed."""
        host, free = self.host, max(self.api_free, t)
        if res.sampled:
            free += host.api_per_step_s
        for req in res.sampled:
            free += host.per_token_s(self.api_open)
            self._outbox.append((free, req))
            if req.finished:
                self.api_open -= 1
        self.api_free = free
        if self._outbox_wake is not None and not self._outbox_wake.done():
            self._outbox_wake.set_result(None)

    async def _outbox_loop(self) -> None:
        loop, box = self._loop, self._outbox
        while True:
            if not box:
                self._outbox_wake = loop.create_future()
                await self._outbox_wake
                self._outbox_wake = None
                continue
            while (d := box[0][0] - loop.time()) > 0:
                await asyncio.sleep(d)
            now = loop.time()
            while box and box[0][0] <= now:
                req = box.popleft()[1]
                req.visible += 1
                fut = req.owner.fut if req.owner is not None else None
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _visible(self, r: SimRequest) -> int:
        return r.num_output if self.host is None else r.visible

    def _account(self, res: StepResult, lag: float) -> None:
        step = res.step
        n = len(self.telemetry)
        for gpu in self.telemetry:  # each TP rank moves and computes its share of the step
            gpu.on_step(step.start, step.end, step.cost.bytes_moved / n, step.cost.flops / n)
        self.lag_last = lag
        if lag > self.lag_max:
            self.lag_max = lag
        self.h_lag.observe(max(lag, 0.0))
        for req in res.first_tokens:
            self.h_ttft.observe(req.first_token_time - req.arrival)
        for gap, n in res.itl_groups.items():
            self.h_itl.observe(gap, n)
        for req in res.finished:
            self.h_e2e.observe(req.finish_time - req.arrival)

    def _submit(self, prompt_counts: list[int], max_tokens: int | None, min_tokens: int, chat: bool,
                text: bool = True) -> _Stream:
        limit = self.perf.max_model_len
        reqs = []
        for n in prompt_counts:
            want = max_tokens if max_tokens is not None else limit - n
            if n + want > limit or want < 1:
                what = "messages" if chat else "prompt"
                raise BadRequest(
                    f"This model's maximum context length is {limit} tokens. However, you requested {n + want} "
                    f"tokens ({n} in the {what}, {want} in the completion). Please reduce the length of the "
                    f"{what} or completion.", param="max_tokens")
            if min_tokens > want:
                raise BadRequest(f"min_tokens ({min_tokens}) must be less than or equal to max_tokens ({want})",
                                 param="min_tokens")
            reqs.append((n, want))
        rid = f"{self._id_prefix}{next(self._ids):x}"
        sim_reqs = [SimRequest(rid=f"{rid}-{i}", prompt_tokens=n, max_tokens=want, min_tokens=min_tokens)
                    for i, (n, want) in enumerate(reqs)]
        st = _Stream(sim_reqs, rid, chat)
        for r in sim_reqs:
            if self.host is None:
                self.sched.add(r)
                continue
            # A text prompt is tokenized first in the tokenizer's one worker thread (its own FIFO: tok_free), off
            # the API core, then the core does the request's bookkeeping (engines/sim/host.py). The one-timestamp
            # core model cannot leave a gap for the tokenizer, so the core's share is booked now (tokens framed
            # meanwhile are not held up behind a gap) and the request is ready no sooner than tokenization +
            # bookkeeping. On a shared core (api_shares_engine_core) tokenizing is the core's own work.
            now, cost = self._loop.time(), self.host.request_cost_s()
            tok, tok_done = self.host.tokenize_s(r.prompt_tokens, text), now
            if tok and self.host.api_shares_engine_core:
                cost += tok
            elif tok:
                self.tok_free = tok_done = max(self.tok_free, now) + tok
            self.api_free = max(self.api_free, now) + cost
            self.api_open += 1
            self.sched.add(r, after=max(self.api_free, tok_done + cost))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return st

    def _abort(self, st: _Stream) -> None:
        for r in st.reqs:
            if not r.finished:
                if self.host is not None and not r.aborted:
                    self.api_open -= 1
                self.sched.abort(r)

    # -- request parsing

    async def _json_body(self, request: web.Request) -> dict:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.name:
            raise BadRequest(f"The model `{model}` does not exist.", status=404, param="model")
        if body.get("n") not in (None, 1):
            raise BadRequest("the simulator supports n=1 only", param="n")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("stream must be a boolean", param="stream")
        opts = body.get("stream_options")
        if opts is not None and not stream:
            raise BadRequest("Stream options can only be defined when `stream=True`.", param="stream_options")
        if opts is not None and not isinstance(opts, dict):
            raise BadRequest("stream_options must be an object", param="stream_options")
        return body

    def _prompt_counts(self, prompt) -> list[int]:
        """Token counts of a completions `prompt`: a string, a list of token ids, a list of strings, or a list of
        token-id lists (the last two are batches: one completion per prompt)."""
        if isinstance(prompt, str):
            counts = [self.text_tok.count(prompt)]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, int) and not isinstance(p, bool)
                                                          for p in prompt):
            if min(prompt) < 0 or max(prompt) >= self.perf.model.vocab_size:
                raise BadRequest(f"token ids must be in [0, {self.perf.model.vocab_size})", param="prompt")
            counts = [len(prompt)]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            counts = [self.text_tok.count(p) for p in prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
            counts = []
            for p in prompt:
                if not all(isinstance(x, int) and not isinstance(x, bool) for x in p):
                    raise BadRequest("prompt token-id lists must contain integers only", param="prompt")
                counts.append(len(p))
        else:
            raise BadRequest("prompt must be a string, a list of token ids, a list of strings or a list of "
                             "token-id lists", param="prompt")
        if min(counts) < 1:
            raise BadRequest("The prompt cannot be empty.", param="prompt")
        return counts

    def _chat_count(self, messages) -> int:
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list", param="messages")
        n = tok.CHAT_TOKENS_GENERATION_PROMPT
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise BadRequest("each message must be an object with a string role", param="messages")
            content = m.get("content")
            if content is None:
                words = 0
            elif isinstance(content, str):
                words = self.text_tok.count(content)
            elif isinstance(content, list):
                words = 0
                for part in content:
                    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"),
                                                                                                    str):
                        raise BadRequest("the simulator accepts text content parts only", param="messages")
                    words += self.text_tok.count(part["text"])
            else:
                raise BadRequest("message content must be a string or a list of parts", param="messages")
            n += words + tok.CHAT_TOKENS_PER_MESSAGE
        return n

    # -- OpenAI routes

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._json_body(request)
            prompt = body.get("prompt")
            counts = self._prompt_counts(prompt)
            max_tokens = _int_field(body, "max_tokens", 1)
            min_tokens = _int_field(body, "min_tokens", 0) or 0
            text = isinstance(prompt, str) or (isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], str))
            st = self._submit(counts, max_tokens, min_tokens, chat=False, text=text)
        except BadRequest as e:
            return error_response(e.status, str(e), e.param)
        return await self._respond(request, body, st)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._json_body(request)
            count = self._chat_count(body.get("messages"))
            max_tokens = _int_field(body, "max_completion_tokens", 1)
            if max_tokens is None:
                max_tokens = _int_field(body, "max_tokens", 1)
            min_tokens = _int_field(body, "min_tokens", 0) or 0
            st = self._submit([count], max_tokens, min_tokens, chat=True)
        except BadRequest as e:
            return error_response(e.status, str(e), e.param)
        return await self._respond(request, body, st)

    async def _respond(self, request: web.Request, body: dict, st: _Stream) -> web.StreamResponse:
        self.open_streams += 1
        try:
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return await self._stream(request, st, include_usage)
            return await self._whole(st)
        except BaseException:
            self._abort(st)  # client gone (cancelled handler or reset connection): free the engine's KV
            raise
        finally:
            self.open_streams -= 1

    def _usage(self, st: _Stream) -> dict:
        p = sum(r.prompt_tokens for r in st.reqs)
        c = sum(r.num_output for r in st.reqs)
        return {"prompt_tokens": p, "total_tokens": p + c, "completion_tokens": c}

    async def _wait(self, st: _Stream) -> None:
        st.fut = self._loop.create_future()
        try:
            await st.fut
        finally:
            st.fut = None

    async def _whole(self, st: _Stream) -> web.Response:
        while not all(r.finished and self._visible(r) >= r.num_output for r in st.reqs):
            await self._wait(st)
        cid = ("chatcmpl-" if st.chat else "cmpl-") + st.rid
        if st.chat:
            r = st.reqs[0]
            choices = [{"index": 0, "message": {"role": "assistant", "content": tok.text(0, r.num_output),
                                                "tool_calls": []},
                        "logprobs": None, "finish_reason": "length", "stop_reason": None}]
            obj = "chat.completion"
        else:
            choices = [{"index": i, "text": tok.text(0, r.num_output), "logprobs": None, "finish_reason": "length",
                        "stop_reason": None, "prompt_logprobs": None} for i, r in enumerate(st.reqs)]
            obj = "text_completion"
        body = {"id": cid, "object": obj, "created": int(time.time()), "model": self.name, "choices": choices,
                "usage": self._usage(st)}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    def _chunk_parts(self, st: _Stream) -> tuple[bytes, bytes, bytes, bytes]:
        """Pre-encoded pieces of this stream's SSE chunks: head (up to the choice index), the text opener, and the
        two tails (still running / finished). A chunk is head + index + opener + text + tail."""
        created = str(int(time.time())).encode()
        if st.chat:
            head = (b'data: {"id":"chatcmpl-' + st.rid.encode() + b'","object":"chat.completion.chunk","created":'
                    + created + b',"model":' + self._name_json + b',"choices":[{"index":')
            return (head, b',"delta":{"content":"', b'"},"logprobs":null,"finish_reason":null}]}\n\n',
                    b'"},"logprobs":null,"finish_reason":"length"}]}\n\n')
        head = (b'data: {"id":"cmpl-' + st.rid.encode() + b'","object":"text_completion","created":' + created
                + b',"model":' + self._name_json + b',"choices":[{"index":')
        return (head, b',"text":"', b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n',
                b'","logprobs":null,"finish_reason":"length","stop_reason":null}]}\n\n')

    async def _stream(self, request: web.Request, st: _Stream, include_usage: bool) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=_SSE_HEADERS)
        await resp.prepare(request)
        head, opener, tail_run, tail_end = self._chunk_parts(st)
        indexes = [str(i).encode() for i in range(len(st.reqs))]
        reqs, delivered = st.reqs, st.delivered
        while True:
            parts = []
            done = True
            for i, r in enumerate(reqs):
                have = self._visible(r)
                sent = delivered[i]
                if have > sent:
                    if st.chat and sent == 0:
                        parts.append(head + indexes[i] + b',"delta":{"role":"assistant","content":""},'
                                     b'"logprobs":null,"finish_reason":null}]}\n\n')
                    last = r.finished and have >= r.max_tokens
                    parts.append(head + indexes[i] + opener + tok.text_bytes(sent, have - sent)
                                 + (tail_end if last else tail_run))
                    self.chunks_total += 1
                    self.stream_tokens_total += have - sent
                    delivered[i] = have
                if not r.finished or have < r.num_output:
                    done = False
            if parts:
                await resp.write(b"".join(parts))
                if not done:
                    continue  # more tokens may have arrived while we were writing
            if done:
                break
            await self._wait(st)
        tail = b""
        if include_usage:
            obj = b"chat.completion.chunk" if st.chat else b"text_completion"
            cid = (b"chatcmpl-" if st.chat else b"cmpl-") + st.rid.encode()
            tail = (b'data: {"id":"' + cid + b'","object":"' + obj + b'","created":' + str(int(time.time())).encode()
                    + b',"model":' + self._name_json + b',"choices":[],"usage":' + orjson.dumps(self._usage(st))
                    + b'}\n\n')
        await resp.write(tail + _DONE)
        await resp.write_eof()
        return resp

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            body = await self._json_body(request)
            if "messages" in body:
                n = self._chat_count(body["messages"])
                ids = [0] * n
            else:
                prompt = body.get("prompt")
                if not isinstance(prompt, str):
                    raise BadRequest("prompt must be a string", param="prompt")
                ids = self.text_tok.ids(prompt)
        except BadRequest as e:
            return error_response(e.status, str(e), e.param)
        return web.json_response({"count": len(ids), "max_model_len": self.perf.max_model_len, "tokens": ids,
                                  "token_strs": None}, dumps=lambda o: orjson.dumps(o).decode())

    async def detokenize(self, request: web.Request) -> web.Response:
        try:
            body = await self._json_body(request)
            ids = body.get("tokens")
            if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                raise BadRequest("tokens must be a list of integers", param="tokens")
        except BadRequest as e:
            return error_response(e.status, str(e), e.param)
        if any(i < 0 or i >= self.perf.model.vocab_size for i in ids):
            return error_response(400, f"token ids must be in [0, {self.perf.model.vocab_size})", "tokens")
        return web.json_response({"prompt": self.text_tok.decode(ids)})

    # -- GET routes

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.name, "object": "model", "created": self.created, "owned_by": "melt-sim",
                "root": self.perf.model.id, "parent": None, "max_model_len": self.perf.max_model_len,
                "permission": [], "simulated": True, "sim_gpu": self.perf.gpu.id}
        return web.json_response({"object": "list", "data": [card]})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": f"melt-sim-{SIM_VERSION}", "engine": "sim", "simulated": True,
                                  **self.perf.describe()})

    async def sim_telemetry(self, request: web.Request) -> web.Response:
        now = self._loop.time()
        return web.json_response({"simulated": True, "t_wall": time.time(), "gpu": self.perf.gpu.id,
                                  "gpus": [gpu.sample(now) for gpu in self.telemetry]})

    async def metrics(self, request: web.Request) -> web.Response:
        s = self.sched
        st = s.stats
        L = self._labels
        lines: list[str] = []
        lines += metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
                        [(L, s.num_running)])
        lines += metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
                        [(L, s.num_waiting)])
        lines += metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.",
                        [(L, s.kv_usage)])
        lines += metric("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.",
                        [(L, st.prompt_tokens)])
        lines += metric("vllm:generation_tokens", "counter", "Number of generation tokens processed.",
                        [(L, st.generation_tokens)])
        lines += metric("vllm:num_preemptions", "counter", "Cumulative number of preemption from the engine.",
                        [(L, st.preemptions)])
        lines += metric("vllm:request_success", "counter", "Count of successfully processed requests.",
                        [(label_str(engine="0", finished_reason=reason, model_name=self.name), v)
                         for reason, v in (("stop", 0), ("length", st.finished), ("abort", st.aborted),
                                              ("error", 0), ("repetition", 0))])
        for h in (self.h_ttft, self.h_itl, self.h_e2e):
            lines += h.render(L)
        lines += metric("melt:sim_simulated", "gauge", "1: this engine is the Melt simulator; nothing ran on a GPU.",
                        [(label_str(gpu=self.perf.gpu.id, model_name=self.name), 1)])
        lines += metric("melt:sim_lag_seconds", "gauge",
                        "Wall-clock lateness of the last applied modelled step end (simulator CPU lag).",
                        [(L, self.lag_last)])
        lines += metric("melt:sim_lag_max_seconds", "gauge", "Largest lag seen since start.", [(L, self.lag_max)])
        lines += self.h_lag.render(L)
        lines += metric("melt:sim_steps", "counter", "Engine steps simulated.", [(L, st.steps)])
        lines += metric("melt:sim_busy_seconds", "counter", "Modelled GPU busy time.", [(L, st.busy_s)])
        lines += metric("melt:sim_stream_chunks", "counter", "SSE token chunks written.", [(L, self.chunks_total)])
        lines += metric("melt:sim_stream_tokens", "counter",
                        "Tokens written in SSE chunks (tokens / chunks > 1 means coalescing under lag).",
                        [(L, self.stream_tokens_total)])
        lines += metric("melt:sim_open_requests", "gauge", "HTTP requests in flight.", [(L, self.open_streams)])
        lines += metric("melt:sim_kv_capacity_tokens", "gauge", "Modelled KV-cache capacity in tokens.",
                        [(L, self.perf.kv_capacity_tokens)])
        return web.Response(body=("\n".join(lines) + "\n").encode(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8",
                                     "X-Melt-Simulated": "1"})
