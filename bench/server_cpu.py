"""The engine's own CPU per level: is the server's frontend, not the GPU, the limit?

A frontend-bound vLLM or SGLang shows it in one number: its API-server process (tokenize, detokenize, SSE framing,
request bookkeeping; one Python thread) busy ~100% of one core while the GPU waits. The load generator already
reports its own shards' CPU (a client-bound level is flagged); this is the same reading for the server side, taken
from the engine's process tree (engines/supervisor.EngineProcess.cpu_times) just before the level's first request and
just after its last (ramp-up and drain included, as the level's wall time). Only for engines Melt launched (a remote `--engine openai` server's processes are not ours to read).

summary["server_cpu"] = {"processes": [{"instance", "name", "pid", "pct"}...] (busiest first, % of one core over
the window), "busiest": that first entry, "total_pct": all of them, "wall_s", "frontend_bound": the busiest process
at or above SERVER_BOUND_PCT}. Processes born during the window are counted from their birth; ones that ended are
left out (their CPU cannot be read any more)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

SERVER_BOUND_PCT = 90.0  # as the client side's CLIENT_BOUND_PCT: a single thread past this is saturated
_MIN_PCT = 1.0           # idle helpers (resource trackers, guardians) are left out of the list


@dataclass
class CpuWindow:
    """A snapshot of each instance's engine processes; `close()` turns it into the level's summary entry."""

    procs: dict[str, object]                      # instance name -> EngineProcess (anything with cpu_times())
    t0: float = field(default_factory=time.monotonic)
    start: dict[str, dict[int, tuple[str, float, float]]] = field(default_factory=dict)

    @classmethod
    def open(cls, procs: dict[str, object]) -> "CpuWindow":
        w = cls({k: p for k, p in procs.items() if p is not None})
        w.start = {k: _read(p) for k, p in w.procs.items()}
        w.t0 = time.monotonic()
        return w

    def close(self) -> dict | None:
        wall = time.monotonic() - self.t0
        end = {k: _read(p) for k, p in self.procs.items()}
        return window_summary(self.start, end, wall)


def _read(proc) -> dict[int, tuple[str, float, float]]:
    try:
        return proc.cpu_times()
    except Exception:  # noqa: BLE001 - a reading, never a reason to fail a level
        return {}


def window_summary(start: dict[str, dict[int, tuple[str, float, float]]],
                   end: dict[str, dict[int, tuple[str, float, float]]], wall_s: float) -> dict | None:
    """The summary entry from two snapshots (instance -> pid -> (name, create time, cpu s)) `wall_s` apart.
    A pid whose create time changed between them is a new process (a recycled number): counted from zero."""
    if wall_s <= 0 or not any(end.values()):
        return None
    rows = []
    for inst, now in end.items():
        before = start.get(inst, {})
        for pid, (name, created, cpu) in now.items():
            b = before.get(pid)
            used = cpu - (b[2] if b is not None and b[1] == created else 0.0)
            pct = 100.0 * max(used, 0.0) / wall_s
            rows.append({"instance": inst, "name": name, "pid": pid, "pct": round(pct, 1)})
    rows.sort(key=lambda r: -r["pct"])
    total = round(sum(r["pct"] for r in rows), 1)
    shown = [r for r in rows if r["pct"] >= _MIN_PCT] or rows[:1]
    busiest = shown[0]
    return {"processes": shown, "busiest": busiest, "total_pct": total, "wall_s": round(wall_s, 3),
            "frontend_bound": busiest["pct"] >= SERVER_BOUND_PCT}


def describe(entry: dict | None) -> str:
    """One line for the log and the CLI: 'server CPU: VLLM::APIServer 97% of a core (frontend-bound), all 310%'."""
    if not entry:
        return ""
    b = entry["busiest"]
    who = f"{b['instance']} " if len({r["instance"] for r in entry["processes"]}) > 1 else ""
    bound = " (frontend-bound: one server process saturates a core)" if entry.get("frontend_bound") else ""
    return f"server CPU: busiest {who}{b['name']} {b['pct']:.0f}% of a core{bound}, all processes {entry['total_pct']:.0f}%"
