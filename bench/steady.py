"""Steady state of one level: the window in which every user is sending, and the figures measured inside it.

A closed-loop level has a ramp (users start one after another, bench/loadgen.py) and a drain (users run out of
work one after another); the whole-level numbers (bench/metrics.py, `vllm bench serve` definitions) include both.
The steady window leaves them out:

  completion(r) = send_ns + e2e_ms. A failed request without E2E has no recorded end: in a closed loop it ended when
                its user sent the next one (that user's next send_ns); a user's *last* request without E2E has an
                unknown end (a timeout may last minutes), so that user does not take part in `end` below, and if it
                was its only request its send time stands in for its end in `start`.
  closed loop   start = max over users of (completion of that user's first measured request)
                        = the moment every user has finished its first measured request (ramp and warm-up over);
                end   = min(min over users of (completion of that user's last measured request), take_until_ns)
                        = the first moment a user has no more work (a user asks for its next request the moment its
                        last one ends) or the moment the level stopped taking requests (duration deadline, the
                        steady rule's drain), whichever is first.
                A level in which some user never finished a measured request (a ramp longer than the level) has no
                steady window.
  request rate  users are only a cap, so: start = the first measured completion (by then the in-flight population
                has built up for one request's lifetime, which is what reaching steady state takes in an open
                loop); end = min(last measured send = the last arrival, take_until_ns).

Figures in the window [start, end), duration D = end - start:
  output_tok_s  each OK request's output tokens spread evenly over its streaming interval [send + TTFT,
                send + E2E] (as the Live page's throughput curve does), and the part of that interval inside the
                window counted: tokens x overlap / interval length. A request whose interval has zero length (one
                chunk) counts whole if that instant lies in the window. Sum / D.
  req_s         OK requests completed in the window / D.
  TTFT/TPOT/E2E stats (bench.metrics.stats) of the OK requests *sent* in the window; n_sent / n_ok / n_err
                count the measured requests sent in the window (failed ones included, never dropped).

Pure (no I/O), on RequestResult objects or anything with the same attributes (storage Request rows).
SteadyTracker is the online side of the same start condition: the load generator's parent feeds it results as they
arrive to decide when a steady-rule level has had enough.
"""
from __future__ import annotations

from typing import Any, Sequence

from bench.metrics import stats, tpot_ms

DEFINITION = ("window from the moment every user has finished its first measured request to the first moment a "
              "user has no more work (or the level stopped taking requests); tokens prorated over each request's "
              "streaming interval; latency stats of requests sent in the window")


def completion_ns(r: Any) -> int:
    """When a request ended: send + E2E, or its send time when it has no E2E (failed before any content; see the
    module docstring for how the window treats those)."""
    return r.send_ns + int(r.e2e_ms * 1e6) if r.e2e_ms is not None else r.send_ns


def steady_window(rows: Sequence[Any], take_until_ns: int | None = None, *, users: int | None = None,
                  open_loop: bool = False) -> tuple[int, int] | str:
    """(start_ns, end_ns) of the steady window, or a sentence saying why there is none. `rows` may include
    warm-up requests; `users` = the level's concurrency (closed loop: every one of them must have finished a
    measured request)."""
    measured = [r for r in rows if not r.warmup and r.user is not None]
    if not measured:
        return "no measured request"
    if open_loop:
        start = min(completion_ns(r) for r in measured)
        end = max(r.send_ns for r in measured)
    else:
        by_user: dict[int, list] = {}
        for r in measured:
            by_user.setdefault(r.user, []).append(r)
        if users is not None and len(by_user) < users:
            return f"only {len(by_user)} of {users} users sent a measured request"
        firsts, lasts = [], []
        for reqs in by_user.values():
            reqs.sort(key=lambda r: r.send_ns)
            first = reqs[0]
            firsts.append(completion_ns(first) if first.e2e_ms is not None or len(reqs) == 1 else reqs[1].send_ns)
            last = reqs[-1]
            if last.e2e_ms is not None:
                lasts.append(completion_ns(last))
        start = max(firsts)
        end = min(lasts) if lasts else take_until_ns
        if end is None:
            return "no user's last request has a known end"
    if take_until_ns is not None:
        end = min(end, take_until_ns)
    if end <= start:
        return "the ramp and the drain overlap: no moment had every user busy"
    return start, end


def _tokens_in(r: Any, start: int, end: int) -> float:
    t0 = r.send_ns + int(r.ttft_ms * 1e6)
    t1 = r.send_ns + int(r.e2e_ms * 1e6)
    if t1 <= t0:
        return float(r.output_tokens) if start <= t0 < end else 0.0
    overlap = min(t1, end) - max(t0, start)
    return r.output_tokens * overlap / (t1 - t0) if overlap > 0 else 0.0


def steady_summary(rows: Sequence[Any], go_ns: int | None, take_until_ns: int | None = None, *,
                   users: int | None = None, open_loop: bool = False) -> dict[str, Any]:
    """summary["steady"]: the window and the figures in it (module docstring). Without a window, `window` is
    False and `reason` says why; the figures are then absent, never zeros."""
    win = steady_window(rows, take_until_ns, users=users, open_loop=open_loop)
    if isinstance(win, str):
        return {"window": False, "reason": win, "definition": DEFINITION}
    start, end = win
    dur = (end - start) / 1e9
    measured = [r for r in rows if not r.warmup]
    tokens = 0.0
    done = 0
    for r in measured:
        if r.ok and r.output_tokens and r.ttft_ms is not None and r.e2e_ms is not None:
            tokens += _tokens_in(r, start, end)
        if r.ok and start <= completion_ns(r) < end:
            done += 1
    sent = [r for r in measured if start <= r.send_ns < end]
    ok = [r for r in sent if r.ok]
    return {
        "window": True, "definition": DEFINITION,
        "start_ns": start, "end_ns": end, "duration_s": dur,
        # offsets from the level's "go", for people reading a table
        "start_s": (start - go_ns) / 1e9 if go_ns is not None else None,
        "end_s": (end - go_ns) / 1e9 if go_ns is not None else None,
        "output_tokens": tokens, "output_tok_s": tokens / dur, "req_s": done / dur, "n_completed": done,
        "n_sent": len(sent), "n_ok": len(ok), "n_err": len(sent) - len(ok),
        "ttft_ms": stats([r.ttft_ms for r in ok]),
        "tpot_ms": stats([t for t in (tpot_ms(r) for r in ok) if t is not None]),
        "e2e_ms": stats([r.e2e_ms for r in ok]),
    }


class SteadyTracker:
    """Online: has the level had `min_steady_s` of steady state and `min_requests_per_user` measured requests per
    user yet? Fed with each measured result as it arrives (two list updates per result: cheap at any rate).
    The start condition is steady_window's; a request-rate level (open_loop) checks the seconds alone."""

    def __init__(self, users: int, min_requests_per_user: int, open_loop: bool = False):
        self.users, self.min_per_user, self.open_loop = users, min_requests_per_user, open_loop
        self.counts = [0] * users
        self.started = 0          # users with >= 1 finished measured request
        self.enough_users = 0     # users with >= min_per_user
        self.latest_first = 0     # closed loop: the latest first completion so far
        self.first_any: int | None = None

    def add(self, user: int | None, completion: int) -> None:
        if user is None or not 0 <= user < self.users:
            return
        if self.first_any is None or completion < self.first_any:
            self.first_any = completion
        n = self.counts[user] = self.counts[user] + 1
        if n == 1:
            self.started += 1
            if completion > self.latest_first:
                self.latest_first = completion
        if n == self.min_per_user:
            self.enough_users += 1

    @property
    def start_ns(self) -> int | None:
        if self.open_loop:
            return self.first_any
        return self.latest_first if self.started == self.users else None

    def steady_s(self, now_ns: int) -> float:
        start = self.start_ns
        return max(0.0, (now_ns - start) / 1e9) if start is not None else 0.0

    def enough(self, now_ns: int, min_steady_s: float) -> bool:
        if self.start_ns is None or self.steady_s(now_ns) < min_steady_s:
            return False
        return self.open_loop or self.enough_users == self.users
