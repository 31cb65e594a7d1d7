"""The steady-state window and its figures (bench/steady.py) on hand-made timelines."""
from dataclasses import dataclass

import pytest

from bench.steady import SteadyTracker, completion_ns, steady_summary, steady_window

S = 1_000_000_000  # ns per second


@dataclass
class Row:
    user: int | None
    send_ns: int
    ttft_ms: float | None
    e2e_ms: float | None
    output_tokens: int | None
    ok: bool = True
    warmup: bool = False


def req(user, send_s, e2e_s, ttft_s=0.5, out=10, ok=True, warmup=False):
    return Row(user, int(send_s * S), ttft_s * 1000 if ok else None, e2e_s * 1000 if ok else None,
               out if ok else None, ok, warmup)


def two_users():
    """User 0 starts at go (t=0), user 1 one second later (a 2 s ramp over 2 users); every request takes 2 s and
    streams 10 tokens over [send + 0.5, send + 2]."""
    return [req(0, -3, 1, warmup=True),                       # warm-up: ignored everywhere
            req(0, 0, 2), req(0, 2, 2), req(0, 4, 2),
            req(1, 1, 2), req(1, 3, 2), req(1, 5, 2)]


def test_window_starts_when_every_user_finished_one_and_ends_when_the_first_runs_out():
    assert steady_window(two_users()) == (3 * S, 6 * S)       # user 1's first ends at 3; user 0's last at 6


def test_steady_figures_prorate_tokens_over_the_streaming_interval():
    s = steady_summary(two_users(), go_ns=0)
    assert s["window"] and s["duration_s"] == 3.0 and (s["start_s"], s["end_s"]) == (3.0, 6.0)
    # in [3, 6): u0#2 streams [2.5, 4] -> 1/1.5 of 10; u0#3 [4.5, 6] -> all; u1#2 [3.5, 5] -> all;
    # u1#3 [5.5, 7] -> 0.5/1.5 of 10; u1#1 [1.5, 3] and u0#1 end at or before the start -> nothing
    assert s["output_tokens"] == pytest.approx(10 / 1.5 + 10 + 10 + 10 / 3)
    assert s["output_tok_s"] == pytest.approx(10.0)
    # completions in [3, 6): u1#1 at 3, u0#2 at 4, u1#2 at 5 (u0#3 at 6 is the end, excluded)
    assert s["n_completed"] == 3 and s["req_s"] == pytest.approx(1.0)
    # sent in [3, 6): u1#2 (3), u0#3 (4), u1#3 (5)
    assert s["n_sent"] == 3 and s["n_ok"] == 3 and s["n_err"] == 0
    assert s["ttft_ms"]["n"] == 3 and s["ttft_ms"]["mean"] == pytest.approx(500.0)
    assert s["e2e_ms"]["mean"] == pytest.approx(2000.0)
    assert s["tpot_ms"]["mean"] == pytest.approx(1500.0 / 9)


def test_the_stop_taking_moment_ends_the_window_when_it_comes_first():
    assert steady_window(two_users(), take_until_ns=5 * S) == (3 * S, 5 * S)
    assert steady_window(two_users(), take_until_ns=9 * S) == (3 * S, 6 * S)


def test_failed_requests_are_counted_and_bring_no_tokens():
    rows = two_users() + [req(1, 4.2, None, ok=False)]  # fails at once (no E2E): completion = its send time
    s = steady_summary(rows, go_ns=0)
    assert s["n_sent"] == 4 and s["n_ok"] == 3 and s["n_err"] == 1
    assert s["output_tok_s"] == pytest.approx(10.0)
    assert completion_ns(rows[-1]) == rows[-1].send_ns


def test_a_failure_without_e2e_ends_at_its_users_next_send_and_a_last_one_has_no_known_end():
    # user 0's first request times out (no E2E); it ended when user 0 sent its next one, at 2.5
    rows = [req(0, 0, None, ok=False), req(0, 2.5, 2), req(0, 4.5, 2),
            req(1, 0.2, 2), req(1, 2.2, 2), req(1, 4.2, 2)]
    assert steady_window(rows) == (int(2.5 * S), int(6.2 * S))     # not 2.2: user 0 was busy until 2.5
    # user 0's last request hangs from 6 on: it still had work, so user 1 (out of work at 7) ends the window
    assert steady_window(two_users() + [req(0, 6, None, ok=False)]) == (3 * S, 7 * S)
    assert steady_window(two_users() + [req(0, 6, None, ok=False)], take_until_ns=int(6.5 * S)) == (
        3 * S, int(6.5 * S))
    assert "known end" in steady_window([req(0, 0, None, ok=False), req(1, 0.1, None, ok=False)])


def test_no_window_when_a_user_never_finished_or_the_ramp_meets_the_drain():
    assert "2 of 3 users" in steady_window(two_users(), users=3)
    overlap = [req(0, 0, 2), req(1, 1, 2)]        # every user sends once: user 0 is done before user 1 finishes
    assert "overlap" in steady_window(overlap)
    s = steady_summary(overlap, go_ns=0)
    assert s["window"] is False and "output_tok_s" not in s and s["reason"]
    assert steady_window([req(0, 0, 1, warmup=True)]) == "no measured request"


def test_a_single_chunk_request_counts_whole_inside_the_window():
    rows = two_users() + [Row(0, int(3.2 * S), 100.0, 100.0, 1)]  # first and last token at 3.3 s
    assert steady_summary(rows, go_ns=0)["output_tokens"] == pytest.approx(31.0)


def test_request_rate_levels_use_first_completion_and_last_arrival():
    rows = [req(0, 0, 2), req(1, 0.5, 2), req(2, 1.0, 2), req(0, 3.0, 2), req(3, 3.5, 2)]
    assert steady_window(rows, open_loop=True) == (2 * S, int(3.5 * S))
    assert steady_window(rows, take_until_ns=3 * S, open_loop=True) == (2 * S, 3 * S)


def test_tracker_decides_like_the_window_and_waits_for_requests_per_user():
    rows = sorted([r for r in two_users() if not r.warmup], key=completion_ns)
    t = SteadyTracker(users=2, min_requests_per_user=3)
    for r in rows[:1]:
        t.add(r.user, completion_ns(r))
    assert t.start_ns is None and t.steady_s(10 * S) == 0.0  # user 1 has not finished one yet
    for r in rows[1:]:
        t.add(r.user, completion_ns(r))
    assert t.start_ns == steady_window(two_users())[0] == 3 * S
    assert t.enough(6 * S, min_steady_s=3.0) and not t.enough(6 * S - 1, min_steady_s=3.0)
    t2 = SteadyTracker(users=2, min_requests_per_user=4)
    for r in rows:
        t2.add(r.user, completion_ns(r))
    assert not t2.enough(100 * S, min_steady_s=1.0)       # 3 requests each, 4 asked for
    t2.add(None, 0)                                        # a lost result (user unknown) changes nothing
    open_t = SteadyTracker(users=8, min_requests_per_user=50, open_loop=True)
    open_t.add(5, 2 * S)
    assert open_t.start_ns == 2 * S and open_t.enough(4 * S, 2.0)  # rate levels: seconds only
