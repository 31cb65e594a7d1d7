"""TTFT by wave (issue #13, text prompts at high concurrency): a closed-loop level of C users and 2C requests starts
every user at once, so its first C requests (the first wave) arrive together and the second wave trickles in as
the first ends. Per wave, the mean, median and largest TTFT of host d's stored real runs (docs/data/h200_host_d,
Melt text and token-id prompts, real vLLM 0.25.1 on an H200, Qwen3-0.6B, 512 in / 128 out) beside the simulator's
with host d's profile. Where text and token ids part ways, and by how much, is what the sim must reproduce.

    python scripts/ttft_waves.py      (~10 s; docs/PERFORMANCE.md "Text prompts at 512 and 1,024 users")
"""
import gzip
import shutil
import sqlite3
import statistics as st
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DB = ROOT / "docs/data/h200_host_d/melt_0.6b_and_8b.db.gz"
HOST, MODEL = "h200-host-d-2026-12-03", "Qwen/Qwen3-0.6B"


def waves(ttfts_in_send_order: list[float], users: int) -> str:
    a, b = ttfts_in_send_order[:users], ttfts_in_send_order[users:]
    return " | ".join(f"{st.mean(w):,.0f} / {st.median(w):,.0f} / {max(w):,.0f}" for w in (a, b))


def main() -> None:
    from catalog import get_gpu, get_model
    from engines.sim.host import load_host_profile
    from engines.sim.model import PerfModel
    from engines.sim.scheduler import simulate_closed_loop

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "hostd.db"
        with gzip.open(DB) as src, open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        con = sqlite3.connect(path)
        real = []
        for rid, cfg in con.execute("select id, config from runs where model = ? order by id", (MODEL,)):
            lv = con.execute("select id, concurrency from levels where run_id = ?", (rid,)).fetchone()
            kind = "text" if '"prompt_format": "text"' in cfg else "ids"
            if lv[1] < 512:
                continue
            ttfts = [r[0] for r in con.execute("select ttft_ms from requests where level_id = ? and ok = 1 "
                                                "order by send_ns", (lv[0],))]
            real.append((lv[1], kind, f"real run {rid}", ttfts))
        con.close()
    host = load_host_profile(HOST)
    perf = PerfModel(get_gpu("H200-141GB"), get_model(MODEL), host=host)
    print("| users | prompts | source | wave 1 TTFT ms: mean / median / max | wave 2 TTFT ms: mean / median / max |")
    print("|---:|---|---|---:|---:|")
    for c in (512, 1024):
        for kind in ("ids", "text"):
            for cc, k, src, ttfts in real:
                if (cc, k) == (c, kind):
                    print(f"| {c:,} | {kind} | {src} | {waves(ttfts, c)} |")
            s = simulate_closed_loop(perf, c, 2 * c, 512, 128, host=host, text_prompt=kind == "text")
            ttfts = [r[1] * 1e3 for r in sorted(s.records, key=lambda r: r[0])]
            print(f"| {c:,} | {kind} | sim (SIMULATED), {HOST} | {waves(ttfts, c)} |")


if __name__ == "__main__":
    main()
