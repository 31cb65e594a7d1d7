"""Traffic for a deployment's non-LLM services during each LLM level: translate, TTS and ASR servers beside the LLMs.

A recipe's service with a `request` (catalog.recipes.ServiceRequest: path, method, JSON body, rate) is sent that
request at a steady Poisson rate for as long as an LLM level runs (bench/sweep.py starts it before the level's load
generator and stops it after). It is an open loop, separate from the LLM load generator: one background thread with
its own asyncio loop and one aiohttp session per service. A slow service never slows the LLM users, and a level never
waits on a service. The point is to measure the box with its services busy, the way the dwani.ai mix really runs, and
to see what the services themselves get.

Every arrival ends in exactly one outcome, and none is dropped:
  * ok: a 2xx answer read to its end (latency = last byte - send);
  * an error: an HTTP status outside 2xx, a timeout (timeout_s), a connection error;
  * "over max_in_flight": max_in_flight requests were already open, so the service is behind. The arrival is counted
    as an error, not queued in the client (a queue would hide the backlog inside the client's clock);
  * "unfinished when the level ended": still open after the grace time at stop.
Per service: sent, ok, err, the five most frequent errors, ok req/s over the window (answers before the arrivals
stopped), the latency stats of the ok ones (bench.metrics.stats) and how far the client's own loop fell behind its
schedule (a stall on Melt's side restarts the schedule instead of bursting the missed arrivals at the service). These land in the level's summary["services"] (storage: the level's summary JSON) and in the CLI's level log.

Only the URL that Melt started the service at is used (loopback by default). The body is sent as given: data, never
evaluated.
"""
from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from catalog.recipes import ServiceRequest

UNFINISHED = "unfinished when the level ended"


@dataclass(frozen=True)
class ServiceTarget:
    name: str
    base_url: str
    request: ServiceRequest


@dataclass
class _Stats:
    sent: int = 0
    ok: int = 0
    ok_in_window: int = 0           # answered before the arrivals stopped (for req/s over the window)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    in_flight: int = 0
    client_lag_max_s: float = 0.0   # how far the client's own loop fell behind the arrival schedule

    def fail(self, why: str) -> None:
        self.errors[why[:200]] += 1


# The client's loop fell this far behind its schedule (a stall on Melt's side): the schedule restarts from now
# instead of firing the missed arrivals in one burst, which would then be blamed on the service as "behind".
MAX_CATCH_UP_S = 1.0


def next_due(due: float, now: float, gap: float) -> tuple[float, float]:
    """The next arrival time after `due` (`gap` = the drawn inter-arrival time) and how late the client is: when it is
    more than MAX_CATCH_UP_S behind, the schedule restarts at `now` (pure; the lag is what gets reported)."""
    due += gap
    lag = now - due
    return (now, lag) if lag > MAX_CATCH_UP_S else (due, max(0.0, lag))


def summarize(name: str, st: _Stats, window_s: float) -> dict:
    from bench.metrics import stats

    return {"name": name, "sent": st.sent, "ok": st.ok, "err": sum(st.errors.values()),
            "errors": dict(st.errors.most_common(5)), "error_kinds": len(st.errors), "window_s": window_s,
            "req_s": st.ok_in_window / window_s if window_s > 0 else None,
            "client_lag_max_ms": 1e3 * st.client_lag_max_s,
            "latency_ms": stats(st.latencies_ms)}   # the LLM levels' definitions (numpy percentiles)


def describe(s: dict) -> str:
    """One CLI line for a service's level figures."""
    lat = s["latency_ms"]
    ms = (f", latency p50 {lat['p50']:,.1f} ms / p99 {lat['p99']:,.1f} ms" if lat["p50"] is not None else "")
    errs = ("; errors: " + "; ".join(f"{n} x {k}" for k, n in s["errors"].items())) if s["err"] else ""
    rate = f", {s['req_s']:,.2f} ok req/s" if s["req_s"] is not None else ""
    lag = (f"; the client fell {s['client_lag_max_ms']:,.0f} ms behind its schedule"
           if s.get("client_lag_max_ms", 0) > 100 else "")
    fault = f"; {s['error']}" if s.get("error") else ""
    return f"service {s['name']}: {s['sent']} sent, {s['ok']} ok, {s['err']} err{rate}{ms}{errs}{lag}{fault}"


class ServiceLoad:
    """`start()` begins every target's arrivals; `stop()` ends them and returns one summary per target. `stop()`
    joins the thread: a summary says so if it could not (the figures are then marked as incomplete)."""

    def __init__(self, targets: list[ServiceTarget], seed: int = 0, grace_s: float = 5.0):
        self.targets, self.seed, self.grace_s = targets, seed, grace_s
        self.stats = [_Stats() for _ in targets]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = threading.Event()   # stop() was called: a loop that starts late ends at once
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._t0 = self._t1 = 0.0

    def start(self) -> "ServiceLoad":
        if not self.targets:
            return self
        self._thread = threading.Thread(target=self._run, name="melt-service-load", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        return self

    def stop(self) -> list[dict]:
        self._stopping.set()
        alive = False
        if self._thread is not None:
            self._signal()
            self._thread.join(self.grace_s + 30)
            alive = self._thread.is_alive()
            if not alive:
                self._thread = None
        window = max(0.0, (self._t1 or time.perf_counter()) - self._t0) if self._t0 else 0.0
        out = [summarize(t.name, st, window) for t, st in zip(self.targets, self.stats)]
        why = (f"service load stopped early: {self._error!r}" if self._error is not None else
               "the service load thread did not end in time: these figures are incomplete" if alive else None)
        if why:
            for s in out:
                s["error"] = why
        return out

    def _signal(self) -> None:
        loop, ev = self._loop, self._stop
        if loop is not None and ev is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # the loop already finished (it failed): nothing to signal
                pass

    # -- the thread -----------------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - reported in the summaries, never raised into the sweep
            self._error = e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        import aiohttp

        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        if self._stopping.is_set():   # stop() came before this loop existed (a slow start): send nothing
            return
        self._t0 = time.perf_counter()
        self._ready.set()
        async with aiohttp.ClientSession(trust_env=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
            open_reqs: set[asyncio.Task] = set()
            drivers = [asyncio.create_task(self._drive(session, i, open_reqs)) for i in range(len(self.targets))]
            stopped = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stopped, *drivers], return_when=asyncio.FIRST_COMPLETED)
            self._t1 = time.perf_counter()
            for d in drivers:
                d.cancel()
            for d, res in zip(drivers, await asyncio.gather(*drivers, return_exceptions=True)):
                if isinstance(res, Exception):   # a bug in a driver: said in the summaries, not swallowed
                    self._error = res
            stopped.cancel()
            if open_reqs:
                _, pending = await asyncio.wait(set(open_reqs), timeout=self.grace_s)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    async def _drive(self, session, i: int, open_reqs: set) -> None:
        """Poisson arrivals at the target's rate until cancelled."""
        t, st = self.targets[i], self.stats[i]
        r = t.request
        url = t.base_url.rstrip("/") + r.path
        data = json.dumps(r.body).encode() if r.body is not None else None   # once (checked as JSON in the model)
        rng = random.Random(self.seed * 1_000_003 + i)
        due = time.perf_counter()
        while not self._stopping.is_set():
            due, lag = next_due(due, time.perf_counter(), rng.expovariate(r.rate))
            st.client_lag_max_s = max(st.client_lag_max_s, lag)
            delay = due - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))   # always yields: the open requests run between arrivals
            st.sent += 1
            if st.in_flight >= r.max_in_flight:
                st.fail(f"over max_in_flight ({r.max_in_flight} open): the service is behind")
                continue
            st.in_flight += 1   # here, not in _one: the next arrival must see it before the task first runs
            task = asyncio.create_task(self._one(session, url, data, r, st))
            open_reqs.add(task)
            task.add_done_callback(open_reqs.discard)

    async def _one(self, session, url: str, data: bytes | None, r: ServiceRequest, st: _Stats) -> None:
        import aiohttp

        headers = {"Content-Type": "application/json"} if data is not None else None
        t_send = time.perf_counter()
        try:
            async with session.request(r.method, url, data=data, headers=headers, allow_redirects=False,
                                       timeout=aiohttp.ClientTimeout(total=r.timeout_s)) as resp:
                text = await resp.read()
                if 200 <= resp.status < 300:
                    st.ok += 1
                    st.ok_in_window += not self._t1
                    st.latencies_ms.append((time.perf_counter() - t_send) * 1e3)
                else:
                    snippet = text[:120].decode("utf-8", "replace").strip()
                    st.fail(f"HTTP {resp.status}" + (f": {snippet}" if snippet else ""))
        except asyncio.CancelledError:
            st.fail(UNFINISHED)
            raise
        except asyncio.TimeoutError:
            st.fail(f"timeout after {r.timeout_s:g}s")
        except Exception as e:  # noqa: BLE001 - every failure is a counted error, with its cause
            st.fail(f"{type(e).__name__}: {e}")
        finally:
            st.in_flight -= 1
