"""`python -m bench.worker RUN_ID [--db URL]`: the background process that owns one run.

The Streamlit app only inserts a queued run and spawns this; a browser refresh or a restart of the UI never touches
a running sweep. SIGTERM (Cancel) stops load, stops the engine, marks the run `cancelled` and keeps every result.
"""
from __future__ import annotations

import signal
import threading

# Before the heavy imports: a Cancel that arrives while the worker is still starting must not kill it outright
# (the run would stay `queued`); it only marks the stop, which run_sweep honours.
_EARLY_STOP = threading.Event()
if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: _EARLY_STOP.set())

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from bench.sweep import SweepHooks, run_sweep  # noqa: E402
from storage.recorder import Recorder  # noqa: E402


class Heartbeat(threading.Thread):
    """Marks the run alive every `period` s; a run whose heartbeat goes stale is reaped as `aborted`."""

    def __init__(self, rec: Recorder, period: float = 2.0):
        super().__init__(daemon=True, name="heartbeat")
        self.rec, self.period = rec, period
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.rec.heartbeat()
            except Exception:  # noqa: BLE001 - a locked DB for a moment must not kill the worker
                pass

    def stop(self) -> None:
        self._stop.set()


def install_stop_signals(stop: threading.Event, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
    """First signal: graceful stop (finish bookkeeping, stop the engine). Second SIGINT: hard KeyboardInterrupt."""

    def handler(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    for s in signals:
        signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.worker")
    ap.add_argument("run_id", type=int)
    ap.add_argument("--db", default=None, help="SQLite path or SQLAlchemy URL (default: MELT_DB or the user data dir)")
    args = ap.parse_args(argv)
    stop = _EARLY_STOP
    install_stop_signals(stop)
    rec = Recorder(args.run_id, args.db)
    hb = Heartbeat(rec)
    hb.start()
    try:
        # bench.runs.API_KEY_ENV / ENGINE_PARTS_ENV: secrets reach the worker through its environment only
        parts = os.environ.pop("MELT_ENGINE_SECRET_PARTS", None)
        status = run_sweep(args.run_id, args.db, stop, SweepHooks(log=lambda m: print(m, flush=True)),
                           api_key=os.environ.pop("MELT_ENGINE_API_KEY", None),
                           engine_parts=json.loads(parts) if parts else None)
    finally:
        hb.stop()
    status = _ended_with_agent(rec, status)
    return 0 if status.value in ("completed", "cancelled") else 1


def _ended_with_agent(rec: Recorder, status):
    """A worker started by an agent (bench/agent.py) gets SIGTERM when that agent dies: it has stopped load and its
    engine like a cancel, but nobody cancelled, so the run is `aborted` with the reason. Otherwise `status`."""
    from bench.runs import AGENT_PID_ENV
    from storage.models import RunStatus

    agent_pid = os.environ.get(AGENT_PID_ENV)
    if not agent_pid or os.getppid() == int(agent_pid) or status is not RunStatus.cancelled:
        return status
    why = (f"its agent (pid {agent_pid}) died mid-run; the worker stopped load and the engine, and kept the "
           f"finished levels")
    try:
        rec.set_status(RunStatus.aborted, why)
    except Exception as e:  # noqa: BLE001 - the history may be what failed; the reaper marks it then
        print(f"could not mark the run aborted: {e}", flush=True)
    print(why, flush=True)
    return RunStatus.aborted


if __name__ == "__main__":
    sys.exit(main())
