"""The whole core path on loopback: CLI -> worker code -> sim engine subprocess -> load generator -> the history
(SQLite, and a real PostgreSQL server for the tests taking the `db` fixture)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.report import run_document
from engines.supervisor import direct_opener

ROOT = Path(__file__).resolve().parents[2]
SIM = ["--engine", "sim", "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B"]


def melt(*args: str, db: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "--db", str(db), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _children_of(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split(")")[-1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_sweep_json_accounts_for_every_request(db):
    r = melt("sweep", *SIM, "--levels", "4,32", "--input-len", "64:256", "--output-len", "16", "--requests", "40",
             "--json", db=db)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "completed" and doc["simulated"] is True and isinstance(doc["run_id"], int)
    assert [lv["concurrency"] for lv in doc["levels"]] == [4, 32]
    for lv in doc["levels"]:
        assert lv["n_sent"] == lv["n_ok"] + lv["n_err"] == 40
        assert lv["n_err"] == 0
        assert lv["output_tok_s"] > 0 and lv["total_tok_s"] > lv["output_tok_s"] and lv["req_s"] > 0
        assert lv["output_tokens"] == 40 * 16          # server usage, fixed output length
        for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            assert set(lv[key]) >= {"mean", "p50", "p90", "p99"}
            assert lv[key]["p50"] <= lv[key]["p99"]
        assert lv["ttft_ms"]["mean"] < lv["e2e_ms"]["mean"]
        assert lv["goodput_req_s"] == pytest.approx(lv["req_s"])  # no SLO set: every ok request is good
    inst = doc["engine_instances"][0]
    assert inst["kind"] == "sim" and "engines.sim" in " ".join(inst["argv"]) and inst["startup_s"] > 0
    # stored and shown the same way
    assert melt("show", str(doc["run_id"]), "--json", db=db).stdout.strip() == json.dumps(
        run_document(doc["run_id"], db), indent=2)
    listing = melt("runs", db=db).stdout
    assert "SIMULATED" in listing and str(doc["run_id"]) in listing
    # human table mode labels simulation too
    shown = melt("show", str(doc["run_id"]), db=db).stdout
    assert "[SIMULATED]" in shown and "TTFT p50" in shown


def test_default_stop_rule_steady_state_and_repeats_on_the_sim(db_path):
    """No --requests/--duration: each level runs until min-steady seconds of steady state and min requests per
    user, then drains; --repeat 2 runs the sweep twice and `show` prints mean ± 95% CI across the repeats."""
    from sqlalchemy import func, select

    from storage.db import open_db
    from storage.models import Level, Request

    r = melt("sweep", *SIM, "--levels", "4", "--input-len", "32", "--output-len", "16", "--min-steady", "1.5",
             "--min-requests-per-user", "3", "--repeat", "2", "--telemetry-hz", "0", "--json", db=db_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [(lv["concurrency"], lv["repeat"], lv["status"]) for lv in doc["levels"]] == [(4, 0, "completed"),
                                                                                       (4, 1, "completed")]
    with open_db(db_path)() as s:
        for lv in doc["levels"]:
            st = lv["steady"]
            assert lv["stop_reason"].startswith("steady rule met") and lv["ramp_s"] == pytest.approx(0.15)
            assert st["window"] and st["duration_s"] >= 1.5 and st["start_s"] >= 0.15
            assert st["output_tok_s"] > 0 and st["n_err"] == 0 and st["ttft_ms"]["n"] == st["n_ok"] > 0
            assert lv["n_sent"] == lv["n_ok"] == lv["output_tokens"] / 16     # whole level: nothing dropped
            level_id = s.scalar(select(Level.id).where(Level.run_id == doc["run_id"], Level.repeat == lv["repeat"]))
            users = dict(s.execute(select(Request.user, func.count()).where(Request.level_id == level_id)
                                   .group_by(Request.user)).all())
            assert sorted(users) == [0, 1, 2, 3] and min(users.values()) >= 3
    shown = melt("show", str(doc["run_id"]), db=db_path).stdout
    assert "95% confidence interval" in shown and "±" in shown and "steady tok/s" in shown


def test_telemetry_hz_0_turns_gpu_sampling_off_and_says_so(db_path):
    """--telemetry-hz 0 is "no GPU sampling" (an A/B against a tool that samples nothing), not a crash or a
    silent error event; the sweep itself is unchanged."""
    r = melt("sweep", *SIM, "--levels", "2", "--requests", "6", "--output-len", "4", "--telemetry-hz", "0", "--json",
             db=db_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "completed" and doc["levels"][0]["n_ok"] == 6
    assert doc["levels"][0].get("telemetry") is None
    from storage import queries as q

    assert q.telemetry_series(doc["run_id"], db_path)["id"] == []
    msgs = [e.message for e in q.events(doc["run_id"], db_path)]
    assert any("GPU telemetry off" in m for m in msgs) and not any("failed to start" in m for m in msgs)
    bad = melt("sweep", *SIM, "--levels", "2", "--telemetry-hz", "-1", db=db_path)
    assert bad.returncode == 2 and "telemetry_hz" in bad.stderr


def test_sim_sweep_summary_and_show_carry_the_expected_error(db_path):
    """A sim run's end-of-sweep summary and `show` say each level's expected error against measured runs, from
    the calibration asset (engines/sim/accuracy.py): computed here from its rows, not typed in."""
    import math

    from engines.sim.accuracy import load_accuracy, pct

    rows = [r for r in load_accuracy().rows if r.model == "Qwen/Qwen3-0.6B"]
    rows = [r for r in rows if r.gpu == "H100-SXM-80GB"] or rows

    def band(c: int) -> str:
        near = min({r.concurrency for r in rows}, key=lambda m: (abs(math.log(c / m)), -m))
        at = [r for r in rows if r.concurrency == near]
        return (f"{pct(max(abs(r.output_tok_s_error) for r in at))} output tok/s, "
                f"{pct(max(abs(r.mean_ttft_error) for r in at))} mean TTFT")

    r = melt("sweep", *SIM, "--levels", "2,100", "--requests", "6", "--output-len", "4", "--telemetry-hz", "0",
             db=db_path)
    assert r.returncode == 0, r.stderr
    summary = r.stdout[r.stdout.rindex("completed"):]               # after the run's last line: the summary
    assert f"SIMULATED: expected error {band(2)} at 2 users, nearest measured 1" in summary
    assert f"SIMULATED: expected error {band(100)} at 100 users, nearest measured 128" in summary
    run_id = re.search(r"run (\d+) \[SIMULATED\]", r.stdout).group(1)
    shown = melt("show", run_id, db=db_path).stdout
    assert f"expected error {band(2)} at 2 users" in shown and f"{band(100)} at 100 users" in shown


def test_bad_input_fails_before_anything_starts(db_path):
    r = melt("sweep", "--engine", "sim", "--gpu", "H100-SXM-80G", "--model", "Qwen/Qwen3-0.6B", db=db_path)
    assert r.returncode == 2 and "unknown GPU" in r.stderr and "H100-SXM-80GB" in r.stderr
    assert not db_path.exists() or "run " not in melt("runs", db=db_path).stdout.split("\n", 2)[-1]


def test_openai_engine_against_running_sim(db_path, tmp_path):
    from tests.integration.test_sim_server import start_sim, stop

    sim, url, out = start_sim(tmp_path, "--gpu", "H100-SXM-80GB", "--model", "Qwen/Qwen3-0.6B")
    try:
        assert url, f"sim did not start: {out}"
        r = melt("sweep", "--engine", "openai", "--base-url", url, "--model",
                 "Qwen/Qwen3-0.6B", "--levels", "8", "--requests", "20", "--output-len", "8", "--input-len", "32",
                 "--json", db=db_path)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["levels"][0]["n_ok"] == 20 and doc["simulated"] is False  # we can't know what's behind a URL
        assert sim.poll() is None  # attaching never stops somebody else's server
        bad = melt("sweep", "--engine", "openai", "--base-url", url, "--model", "nope",
                   "--levels", "1", "--requests", "1", "--json", db=db_path)
        assert bad.returncode == 1 and json.loads(bad.stdout)["status"] == "failed"
        assert "404" in json.loads(bad.stdout)["error"]
    finally:
        stop(sim)


def _sim_engine_of(cli_pid: int) -> tuple[int, int]:
    """(pid, port) of the sim engine a `bench sweep` process launched."""
    for pid in _children_of(cli_pid):
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        if "engines.sim" in argv:
            return pid, int(argv[argv.index("--port") + 1])
    raise AssertionError("no sim engine child found")


def _wait_until_level2_is_in_flight(p: subprocess.Popen, db_path: Path) -> int:
    """Block until the sweep's second level has requests inside the engine; returns the engine's pid.

    The level row is written before its first request is sent, so the row alone does not mean anything is in
    flight; the engine's own running-requests gauge does (level 1 has finished by then)."""
    from storage.db import open_db
    from storage.models import Level

    deadline = time.time() + 120
    while time.time() < deadline:
        with open_db(db_path)() as s:
            if s.query(Level).filter(Level.idx == 1).first() is not None:
                break
        time.sleep(0.2)
    else:
        pytest.fail("second level never started")
    engine_pid, port = _sim_engine_of(p.pid)
    while time.time() < deadline:
        try:
            text = direct_opener().open(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            text = ""
        running = re.search(r"^vllm:num_requests_running\{[^}]*\} (\S+)", text, re.M)
        if running and float(running.group(1)) > 0:
            return engine_pid
        time.sleep(0.1)
    pytest.fail("level 2 never reached the engine")


def _end_sweep(p: subprocess.Popen, db_path: Path) -> None:
    """Test cleanup: the CLI and every engine process it launched (found by their launch tags), so a failed test
    leaves nothing streaming into the next one."""
    from engines.supervisor import kill_tagged
    from storage.db import open_db
    from storage.models import EngineInstance

    if p.poll() is None:
        p.kill()
        p.wait(30)
    with open_db(db_path)() as s:
        for inst in s.query(EngineInstance).all():
            kill_tagged(inst.proc_tag or "")


def _sweep_with_a_long_second_level(db_path: Path) -> subprocess.Popen:
    from storage.db import open_db

    open_db(db_path)  # create the schema before the CLI starts, so this process never migrates alongside it
    return subprocess.Popen([sys.executable, "-m", "bench", "--db", str(db_path), "sweep", *SIM, "--levels", "2,2",
                             "--requests", "4", "--output-len", "4000", "--input-len", "16", "--json"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_ctrl_c_keeps_finished_levels_and_stops_engine(db_path):
    p = _sweep_with_a_long_second_level(db_path)
    try:
        engine_pid = _wait_until_level2_is_in_flight(p, db_path)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 130, err
        doc = json.loads(out)
        assert doc["status"] == "cancelled"
        assert [lv["status"] for lv in doc["levels"]] == ["completed", "cancelled"]
        first, second = doc["levels"]
        assert first["n_ok"] == 4
        # the two requests in flight were cut off: counted as errors, not dropped
        assert second["n_sent"] == second["n_ok"] + second["n_err"] and second["n_err"] > 0
        assert not _alive(engine_pid), "engine still running after Ctrl-C"
    finally:
        _end_sweep(p, db_path)


def test_background_worker_and_cancel(db):
    from bench.cli import build_config, make_parser
    from bench.runs import cancel_run, start_run
    from storage.models import RunStatus

    cfg = build_config(make_parser().parse_args(["sweep", *SIM, "--levels", "2", "--requests", "50",
                                                 "--output-len", "2000", "--input-len", "16"]))
    run_id = start_run(cfg, db)
    try:
        _wait_run(db, run_id, lambda r: r.status is RunStatus.running, 120)
        assert cancel_run(run_id, db)
        run = _wait_run(db, run_id, lambda r: r.status.finished, 120)
        assert run.status is RunStatus.cancelled
        end = time.time() + 20  # the status is written just before the worker exits
        while _alive(run.worker_pid) and time.time() < end:
            time.sleep(0.2)
        assert not _alive(run.worker_pid)
    finally:
        _end_worker(run_id, db)


def _wait_run(db_path: Path, run_id: int, done, timeout: float):
    """Poll the run row until done(run) or timeout; returns the last row read."""
    from storage.db import open_db
    from storage.models import Run

    deadline = time.time() + timeout
    while True:
        with open_db(db_path)() as s:
            run = s.get(Run, run_id)
        if done(run) or time.time() >= deadline:
            return run
        time.sleep(0.3)


def _end_worker(run_id: int, db_path: Path) -> None:
    """Test cleanup: a background worker (its own session) and its engines, whatever state the test left them in."""
    from engines.supervisor import kill_tagged
    from storage.db import open_db
    from storage.models import Run

    with open_db(db_path)() as s:
        run = s.get(Run, run_id)
        pid, tags = run.worker_pid, [i.proc_tag for i in run.instances]
    if pid and _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)  # spawned with start_new_session: its pid is its group
        except OSError:
            pass
    for tag in tags:
        kill_tagged(tag or "")


def test_engine_killed_mid_level_fails_the_run_and_keeps_finished_levels(db_path):
    p = _sweep_with_a_long_second_level(db_path)
    try:
        engine_pid = _wait_until_level2_is_in_flight(p, db_path)
        os.kill(engine_pid, signal.SIGKILL)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 1, err
        doc = json.loads(out)
        assert doc["status"] == "failed" and "engine was killed by signal 9 during level 2" in doc["error"]
        assert [lv["status"] for lv in doc["levels"]] == ["completed", "failed"]
        assert doc["levels"][0]["n_ok"] == 4
        second = doc["levels"][1]
        assert second["n_sent"] == second["n_ok"] + second["n_err"] and second["n_err"] > 0
    finally:
        _end_sweep(p, db_path)


def test_api_key_reaches_the_server_and_is_never_stored(db_path):
    from bench.cli import build_config, make_parser
    from bench.runs import start_run
    from tests.integration.test_loadgen import StreamServer

    srv = StreamServer()
    srv.api_key = "sk-test-123"
    srv.start()
    try:
        args = ["--engine", "openai", "--base-url", srv.base_url, "--model", "m", "--levels", "2", "--requests",
                "4", "--output-len", "3", "--input-len", "4", "--prompt-format", "token-ids"]
        ok = melt("sweep", *args, "--api-key", "sk-test-123", "--json", db=db_path)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["levels"][0]["n_ok"] == 4
        bad = melt("sweep", *args, "--json", db=db_path)
        assert bad.returncode == 1 and "401" in json.loads(bad.stdout)["error"]
        # the dashboard path: a background worker gets the key through its environment
        cfg = build_config(make_parser().parse_args(["sweep", *args, "--api-key", "sk-test-123"]))
        run_id = start_run(cfg, db_path)
        run = _wait_run(db_path, run_id, lambda r: r.status.finished, 60)
        assert run.status.value == "completed", run.error
        for f in db_path.parent.glob(db_path.name + "*"):  # the database and its WAL
            assert b"sk-test-123" not in f.read_bytes()
        assert "Bearer sk-test-123" in srv.auth_seen
    finally:
        srv.stop()
