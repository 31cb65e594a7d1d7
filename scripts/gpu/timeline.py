"""One client run of a compare result, second by second, from the server's side (scripts/gpu/vllm_compare.py data).

  python3 scripts/gpu/timeline.py RESULT.json[.gz] ROW_INDEX [SECONDS]

Per probe sample: requests the client had sent and had a first token for (from its own per-request times), what the
engine knew (running + waiting + finished since the run began: requests that had passed vLLM's arrival stamp),
its first tokens, sockets on the server's port with unread request bytes, connections waiting in the accept queue,
client sockets with unread response bytes, and CPU % of the API server and of the EngineCore.
"""
from __future__ import annotations

import gzip
import json
import sys


def load(path: str) -> dict:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def client_times(r: dict, who: str) -> tuple[list[float], list[float], str]:
    """(send times, first-token times, probe clock key): Melt's are wall clock, vllm bench's perf_counter."""
    if who.startswith("melt"):
        t0 = r[who]["start_ns"] / 1e9
        sends = [t0 + s / 1000 for s, _ in r[who + "_ttfts_ms"]]
        firsts = [s + (t or 0) / 1000 for s, (_, t) in zip(sends, r[who + "_ttfts_ms"])]
        return sends, firsts, "t"
    v = r[who]
    return list(v["start_times"]), [s + t for s, t in zip(v["start_times"], v["ttfts"])], "mono"


def main(path: str, idx: int, horizon: float = 10.0) -> None:
    r = load(path)["rows"][idx]
    for who in r["order"]:
        sends, firsts, clock = client_times(r, who)
        probe = r[who + "_probe"]
        base = next(s for s in probe if "finished" in s)
        t0 = min(sends)
        print(f"== {who}  (concurrency {r['concurrency']}, pair {r['pair']}, "
              f"new connections during the level: {r[who].get('new_connections', 'n/a')})")
        print("   t s   sent  1st tok | engine: known running waiting 1st tok | unread conns  accept q  "
              "client unread | API %  core %")
        for s in probe:
            rel = s[clock] - t0
            if rel < -0.3 or rel > horizon or ("finished" not in s and rel > 1.5):
                continue
            sent = sum(1 for x in sends if x <= s[clock])
            got = sum(1 for x in firsts if x <= s[clock])
            api = max([v for k, v in s["cpu_pct"].items() if not k.startswith("VLLM")] or [0])
            core = max([v for k, v in s["cpu_pct"].items() if "EngineCore" in k] or [0])
            eng = (f"{s['running'] + s['waiting'] + s['finished'] - base['finished']:5.0f} {s['running']:7.0f} "
                   f"{s['waiting']:7.0f} {s['first_tokens'] - base['first_tokens']:7.0f}") if "finished" in s else " " * 30
            print(f"{rel:6.2f} {sent:6d} {got:7d} | {eng:>37} | {s['srv_unread_conns']:12d} {s['accept_queue']:9d} "
                  f"{s['cli_unread_conns']:14d} | {api:5.0f} {core:6.0f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 10.0)
