"""bench.server_cpu: the engine's per-level CPU from two snapshots of its process tree (hand-made numbers), and the
reading from a real process tree (this test's own child)."""

import subprocess
import sys
import time

from bench.server_cpu import SERVER_BOUND_PCT, CpuWindow, describe, window_summary


def test_busiest_process_and_frontend_bound():
    start = {"a": {10: ("VLLM::APIServer", 1.0, 5.0), 11: ("VLLM::EngineCore", 1.0, 20.0), 12: ("python", 1.0, 1.0)}}
    end = {"a": {10: ("VLLM::APIServer", 1.0, 14.6), 11: ("VLLM::EngineCore", 1.0, 26.0), 12: ("python", 1.0, 1.01)}}
    s = window_summary(start, end, wall_s=10.0)
    assert s["busiest"] == {"instance": "a", "name": "VLLM::APIServer", "pid": 10, "pct": 96.0}
    assert [r["pid"] for r in s["processes"]] == [10, 11]  # the idle helper (0.1%) is left out of the list
    assert s["total_pct"] == 156.1 and s["frontend_bound"] and 96.0 >= SERVER_BOUND_PCT
    assert "frontend-bound" in describe(s) and "VLLM::APIServer 96%" in describe(s)


def test_new_and_recycled_pids_count_from_zero_and_instances_are_named():
    start = {"r0": {10: ("old", 1.0, 50.0)}, "r1": {}}
    end = {"r0": {10: ("VLLM::APIServer", 2.0, 4.0)}, "r1": {20: ("VLLM::APIServer", 3.0, 3.0)}}
    s = window_summary(start, end, wall_s=5.0)
    assert [(r["instance"], r["pct"]) for r in s["processes"]] == [("r0", 80.0), ("r1", 60.0)]
    assert not s["frontend_bound"]
    assert describe(s).startswith("server CPU: busiest r0 VLLM::APIServer 80%")


def test_nothing_to_read_gives_none():
    assert window_summary({}, {"a": {}}, 3.0) is None
    assert window_summary({"a": {1: ("x", 1.0, 1.0)}}, {"a": {1: ("x", 1.0, 2.0)}}, 0.0) is None
    assert describe(None) == ""


class _Tree:
    """Something with cpu_times() over a real process: a busy child of this test."""

    def __init__(self, proc):
        import psutil

        self.p = psutil.Process(proc.pid)

    def cpu_times(self):
        t = self.p.cpu_times()
        return {self.p.pid: (self.p.name(), self.p.create_time(), t.user + t.system)}


def test_a_real_busy_process_reads_near_one_core():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<30: pass"])
    try:
        w = CpuWindow.open({"busy": _Tree(child)})
        time.sleep(1.5)
        s = w.close()
        # one spinning thread: most of a core (a shared CI machine may lend it less than all of one)
        assert 30.0 < s["busiest"]["pct"] <= 110.0, s
    finally:
        child.kill()
        child.wait()
