"""The supervisor against a real (tiny, stdlib) server process on loopback: start, readiness, failures, and
above all that stop() leaves nothing behind, including children that ignore SIGTERM or escape the group."""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from engines.spec import LaunchPlan
from engines.supervisor import (EngineProcess, EngineStartCancelled, EngineStartError, ProcState,
                                ensure_port_free, free_port)

FAKE = Path(__file__).with_name("fake_engine_server.py")


def make_plan(*flags: str, port: int | None = None, model: str = "fake-model") -> LaunchPlan:
    port = port or free_port()
    return LaunchPlan(
        argv=[sys.executable, str(FAKE), "--port", str(port), *flags],
        port=port, served_model_name=model,
        phase_patterns=[(r"Loading weights", "loading weights"), (r"Capturing CUDA graphs", "capturing CUDA graphs"),
                        (r"Application startup complete", "ready")])


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, kind: str, msg: str) -> None:
        with self.lock:
            self.events.append((kind, msg))

    def of(self, kind: str) -> list[str]:
        return [m for k, m in self.events if k == kind]


def pids_in(pidfile: Path) -> dict[str, int]:
    out = {}
    for line in pidfile.read_text().splitlines():
        role, pid = line.split()
        out[role] = int(pid)
    return out


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def engines(tmp_path):
    """Every EngineProcess a test makes is stopped at the end, whatever happens; and should stop() itself be
    broken, every pid the fake recorded in tmp_path/pids is killed, so a failing test still leaves nothing."""
    made: list[EngineProcess] = []

    def make(plan: LaunchPlan, **kw) -> EngineProcess:
        e = EngineProcess(plan, tmp_path / f"engine-{len(made)}.log", **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop(grace_s=2)
    pidfile = tmp_path / "pids"
    if pidfile.exists():
        for pid in pids_in(pidfile).values():
            try:
                p = psutil.Process(pid)
                if p.create_time() >= made[0].launched_at - 1:  # not a recycled pid
                    p.kill()
            except (psutil.Error, TypeError):
                pass


def wait_for_lines(pidfile: Path, n: int) -> dict[str, int]:
    # the fake writes its pidfile before it serves; wait_ready() already waited for that, this is belt and braces
    for _ in range(100):
        if pidfile.exists() and len(pidfile.read_text().splitlines()) >= n:
            break
        time.sleep(0.05)
    return pids_in(pidfile)


def test_start_ready_stop_leaves_nothing(engines, tmp_path):
    rec = Recorder()
    pidfile = tmp_path / "pids"
    e = engines(make_plan("--pidfile", str(pidfile)), on_event=rec)
    assert e.state == ProcState.created
    e.start()
    assert e.state == ProcState.starting and e.pid and e.alive()
    startup = e.wait_ready(timeout_s=60)
    assert e.state == ProcState.ready
    assert startup > 0 and e.ready_at >= e.launched_at
    assert e.base_url == f"http://127.0.0.1:{e.plan.port}"
    assert "loading weights" in rec.of("phase") and rec.of("phase")[-1] == "ready"
    assert any("Loading weights" in m for m in rec.of("log"))
    report = e.stop(grace_s=10)
    assert report["exit_code"] == 0  # it handled SIGTERM itself
    assert report["killed"] is False and report["leftover_pids"] == [] and report["gpu_pids"] == []
    assert rec.of("state") == ["starting", "ready", "stopping", "stopped"]
    assert not running(pids_in(pidfile)["server"])
    assert e.stop() is report  # idempotent
    ensure_port_free("127.0.0.1", e.plan.port)  # and the port is free again


def test_exit_during_load_shows_exit_code_and_log_tail(engines):
    e = engines(make_plan("--exit-during-load", "3"))
    e.start()
    with pytest.raises(EngineStartError) as ei:
        e.wait_ready(timeout_s=60)
    msg = str(ei.value)
    assert "exit code 3" in msg
    assert "CUDA out of memory" in msg and "CUDA out of memory" in ei.value.log_tail
    assert e.state == ProcState.failed
    assert not e.alive()
    assert e.stop()["leftover_pids"] == []


def test_readiness_timeout_stops_the_engine(engines, tmp_path):
    pidfile = tmp_path / "pids"
    e = engines(make_plan("--never-ready", "--pidfile", str(pidfile)))
    e.start()
    with pytest.raises(EngineStartError) as ei:
        e.wait_ready(timeout_s=6)  # long enough for the fake to start and answer 503 on a loaded machine
    assert "did not become ready within 6 s" in str(ei.value)
    assert "503" in str(ei.value)  # says what the last check saw
    assert "Loading weights" in ei.value.log_tail
    assert e.state == ProcState.failed
    assert not running(pids_in(pidfile)["server"])


def test_rejected_completion_fails_fast(engines):
    e = engines(make_plan(model="not-the-served-name"))
    e.start()
    with pytest.raises(EngineStartError) as ei:
        e.wait_ready(timeout_s=60)
    assert "rejects a 1-token completion" in str(ei.value) and "404" in str(ei.value)
    assert e.state == ProcState.failed and not e.alive()


def test_engine_without_tokenizer_gets_a_token_id_prompt(engines):
    e = engines(make_plan("--ids-only"))
    e.start()
    assert e.wait_ready(timeout_s=60) > 0 and e.state == ProcState.ready


def test_cancel_while_waiting(engines):
    e = engines(make_plan("--never-ready"))
    e.start()
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    with pytest.raises(EngineStartCancelled):
        e.wait_ready(timeout_s=60, stop=stop)
    assert e.state == ProcState.stopped and not e.alive()


def test_port_in_use(engines):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(EngineStartError, match=f"port {port} on 127.0.0.1 is already in use"):
            ensure_port_free("127.0.0.1", port)
        e = engines(make_plan(port=port))
        with pytest.raises(EngineStartError, match="already in use"):
            e.start()
        assert e.pid is None and e.state == ProcState.failed  # nothing was launched


def test_missing_binary(engines):
    port = free_port()
    plan = LaunchPlan(argv=["/nonexistent/melt-no-such-engine", "--port", str(port)], port=port,
                      served_model_name="m")
    e = engines(plan)
    with pytest.raises(EngineStartError) as ei:
        e.start()
    msg = str(ei.value)
    assert "engine command not found" in msg and "/nonexistent/melt-no-such-engine" in msg
    assert "MELT_" in msg  # says how to fix it
    assert e.state == ProcState.failed and e.pid is None
    assert e.stop()["exit_code"] is None


def test_child_ignoring_sigterm_gets_sigkilled(engines, tmp_path):
    pidfile = tmp_path / "pids"
    e = engines(make_plan("--ignore-sigterm", "--child-ignores-sigterm", "--pidfile", str(pidfile)))
    e.start()
    e.wait_ready(timeout_s=60)
    pids = wait_for_lines(pidfile, 2)
    assert running(pids["server"]) and running(pids["child"])
    report = e.stop(grace_s=1)
    assert report["killed"] is True
    assert report["exit_code"] == -9
    assert report["leftover_pids"] == []
    assert not running(pids["server"]) and not running(pids["child"])


def test_escaped_grandchildren_are_found_and_killed(engines, tmp_path):
    """One grandchild moves to its own process group (found by session id), one calls setsid() through a
    middle process that exits (new session, new group, re-parented): found by the MELT_ENGINE_TAG env var."""
    pidfile = tmp_path / "pids"
    e = engines(make_plan("--escape-pgid", "--escape-session", "--pidfile", str(pidfile)))
    e.start()
    e.wait_ready(timeout_s=60)
    pids = wait_for_lines(pidfile, 3)
    esc_pgid, esc_sess = pids["escape-pgid"], pids["escape-session"]
    assert running(esc_pgid) and running(esc_sess)
    # make sure they really escaped, or the test would prove nothing
    for _ in range(50):
        if os.getpgid(esc_pgid) != e.pid:
            break
        time.sleep(0.05)
    assert os.getpgid(esc_pgid) != e.pid and os.getsid(esc_pgid) == e.pid
    assert os.getsid(esc_sess) != e.pid and os.getpgid(esc_sess) != e.pid
    assert psutil.Process(esc_sess).ppid() != e.pid
    report = e.stop(grace_s=5)
    assert report["leftover_pids"] == []
    assert not running(esc_pgid) and not running(esc_sess)


def test_stop_before_start_and_context_manager(tmp_path):
    e = EngineProcess(make_plan(), tmp_path / "x.log")
    assert e.stop() == {"exit_code": None, "killed": False, "leftover_pids": [], "gpu_pids": [], "nvml": False}
    assert e.state == ProcState.stopped
    with EngineProcess(make_plan(), tmp_path / "y.log") as e2:
        e2.start()
        e2.wait_ready(timeout_s=60)
        pid = e2.pid
    assert e2.state == ProcState.stopped and not running(pid)


def test_free_port_is_bindable():
    port = free_port()
    ensure_port_free("127.0.0.1", port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_gpu_memory_check_reports_our_holders(engines, monkeypatch):
    """No GPU here, so NVML is replaced (the one mock in this file): it claims the engine's pid still holds GPU
    memory after stop, as a stuck vLLM EngineCore would. stop() must wait, then report it, not hide it."""
    import engines.supervisor as sup

    e = engines(make_plan())
    e.start()
    e.wait_ready(timeout_s=60)
    stuck_pid = e.pid
    monkeypatch.setattr(sup, "_gpu_pids", lambda: {stuck_pid, 999_999_999})
    monkeypatch.setattr(sup, "_GPU_RELEASE_WAIT_S", 0.2)
    report = e.stop(grace_s=5)
    assert report["nvml"] is True
    assert report["gpu_pids"] == [stuck_pid]  # ours only, not the stranger's 999999999
