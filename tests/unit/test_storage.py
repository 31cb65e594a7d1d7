"""Storage round trip on a real SQLite file: migrations, WAL, UTC times, bulk rows, run document, stale reaping."""
from datetime import timedelta, timezone

from sqlalchemy import func, select, text

from bench.config import RunConfig
from bench.report import run_document
from bench.runs import create_run, reap_stale
from engines.spec import EngineSpec
from storage.db import get_engine, open_db
from storage.models import Level, LevelStatus, Request, Run, RunStatus, utcnow
from storage.recorder import Recorder

HEAD = "0009"  # the newest migration


def _config() -> RunConfig:
    return RunConfig(name="round <trip>", tags=["a", "b"], levels=[10, 100],
                     engine=EngineSpec(kind="sim", model="Qwen/Qwen3-0.6B", sim_gpu="H100-SXM-80GB", api_key="s3cret"))


def test_migrated_wal_database(db_path):
    eng = get_engine(db_path)
    with eng.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert c.execute(text("PRAGMA busy_timeout")).scalar() == 10000
        assert c.execute(text("select version_num from alembic_version")).scalar() == HEAD
    # reopening an existing file is idempotent
    open_db(db_path)


def test_an_older_database_is_upgraded_at_open_and_keeps_its_runs(db_path):
    from storage.db import migrate, to_url

    url = to_url(db_path)
    migrate(url, "0001")  # a file written by the first release: no engine_instances.proc_tag yet
    import sqlite3  # raw SQL: opening through storage.db would already migrate

    con = sqlite3.connect(db_path)
    con.execute("insert into runs (name, status, created_at, config, engine_kind, model, gpu_count, simulated, "
                "tags, notes, versions, host) values ('old', 'completed', '2026-11-01 10:00:00.000000', '{}', 'sim', "
                "'m', 1, 1, '[]', '', '{}', '{}')")
    con.execute("insert into engine_instances (run_id, kind, model, argv, env, state, log_tail, gpus) "
                "values (1, 'sim', 'm', '[]', '{}', 'stopped', '', '[]')")
    con.commit()
    con.close()
    factory = open_db(db_path)  # upgrades to head
    with factory() as s:
        run = s.get(Run, 1)
        assert run.name == "old" and run.instances[0].proc_tag is None
        assert s.execute(text("select version_num from alembic_version")).scalar() == HEAD


def test_a_0002_database_gets_request_users_and_level_repeats(db_path):
    from storage.db import migrate, to_url

    migrate(to_url(db_path), "0002")
    import sqlite3

    con = sqlite3.connect(db_path)
    con.execute("insert into runs (name, status, created_at, config, engine_kind, model, gpu_count, simulated, "
                "tags, notes, versions, host) values ('old', 'completed', '2026-11-01 10:00:00.000000', '{}', 'sim', "
                "'m', 1, 1, '[]', '', '{}', '{}')")
    con.execute("insert into levels (run_id, idx, concurrency, status, n_sent, n_ok, n_err, client_bound, summary, "
                "telemetry) values (1, 0, 4, 'completed', 1, 1, 0, 0, '{}', '{}')")
    con.execute("insert into requests (run_id, level_id, seq, warmup, send_ns, ok) values (1, 1, 0, 0, 5, 1)")
    con.commit()
    con.close()
    with open_db(db_path)() as s:
        assert s.get(Level, 1).repeat == 0 and s.get(Request, 1).user is None
    rec = Recorder(1, db_path)
    lid = rec.start_level(1, 4, 10, None, repeat=2)
    rec.insert_requests(lid, [dict(seq=0, warmup=False, send_ns=1, ok=True, user=3)])
    with open_db(db_path)() as s:
        assert s.get(Level, lid).repeat == 2
        assert s.scalars(select(Request.user).where(Request.level_id == lid)).all() == [3]


def _migrate_at(url: str, go) -> None:
    from storage.db import migrate

    go.wait()
    migrate(url)


def test_processes_opening_a_new_database_together_migrate_it_once(tmp_path):
    """The dashboard and a CLI sweep may open a fresh history file at the same moment."""
    import multiprocessing as mp

    from storage.db import to_url

    ctx = mp.get_context("spawn")
    for attempt in range(3):
        url = to_url(tmp_path / f"fresh{attempt}.db")
        go = ctx.Event()
        procs = [ctx.Process(target=_migrate_at, args=(url, go)) for _ in range(4)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        with open_db(tmp_path / f"fresh{attempt}.db")() as s:
            assert s.execute(text("select version_num from alembic_version")).scalar() == HEAD


def test_round_trip(db):
    run_id = create_run(_config(), db)
    rec = Recorder(run_id, db)
    rec.set_status(RunStatus.running)
    lid = rec.start_level(0, 10, 3, None)
    rows = [dict(seq=i, warmup=False, send_ns=1_000_000_000 * i, queue_ms=0.1, ttft_ms=10.0 + i, e2e_ms=100.0,
                 input_tokens=512, output_tokens=128, chunks=128, itl_mean_ms=0.7, itl_max_ms=2.0, ok=True,
                 status_code=200, error=None, not_a_column="ignored") for i in range(3)]
    assert rec.insert_requests(lid, rows) == 3
    summary = {"concurrency": 10, "n_sent": 3, "n_ok": 3, "n_err": 0, "duration_s": 1.5, "output_tok_s": 256.0,
               "total_tok_s": 1280.0, "req_s": 2.0, "goodput_req_s": 2.0,
               "ttft_ms": {"mean": 11.0, "p50": 11.0, "p90": 11.8, "p99": 11.98}}
    rec.finish_level(lid, LevelStatus.completed, summary)
    rec.set_status(RunStatus.completed)

    factory = open_db(db)
    with factory() as s:
        run = s.get(Run, run_id)
        assert run.status is RunStatus.completed and run.simulated
        assert run.created_at.tzinfo is timezone.utc and run.finished_at >= run.created_at
        assert "api_key" not in run.config["engine"]  # secrets never stored
        assert run.peak_output_tok_s == 256.0 and run.best_goodput_req_s == 2.0
        assert s.scalar(select(func.count()).select_from(Request).where(Request.level_id == lid)) == 3
        lv = s.get(Level, lid)
        assert lv.ttft_p50_ms == 11.0 and lv.ttft_p99_ms == 11.98 and lv.n_ok == 3

    doc = run_document(run_id, db)
    assert doc["run_id"] == run_id and doc["status"] == "completed" and doc["simulated"] is True
    assert doc["name"] == "round <trip>" and doc["tags"] == ["a", "b"]
    assert doc["levels"][0]["output_tok_s"] == 256.0 and doc["levels"][0]["status"] == "completed"


def test_client_bound_levels_stay_out_of_headline(db):
    run_id = create_run(_config(), db)
    rec = Recorder(run_id, db)
    lid = rec.start_level(0, 10, 3, None)
    rec.finish_level(lid, LevelStatus.completed, {"n_sent": 1, "output_tok_s": 999.0, "client_bound": True})
    with open_db(db)() as s:
        assert s.get(Run, run_id).peak_output_tok_s is None


def test_stale_runs_are_aborted(db):
    run_id = create_run(_config(), db)
    rec = Recorder(run_id, db)
    rec.set_status(RunStatus.running)
    rec.update_run(worker_pid=None, heartbeat_at=utcnow() - timedelta(minutes=5))
    fresh = create_run(_config(), db)
    Recorder(fresh, db).update_run(status=RunStatus.running, heartbeat_at=utcnow())
    assert reap_stale(db) == [run_id]
    with open_db(db)() as s:
        assert s.get(Run, run_id).status is RunStatus.aborted
        assert s.get(Run, fresh).status is RunStatus.running


def test_reaping_kills_the_dead_workers_engine_but_not_a_recycled_pid(db):
    import subprocess
    import sys

    def stale_run_with_engine(launched_at):
        run_id = create_run(_config(), db)
        rec = Recorder(run_id, db)
        rec.update_run(status=RunStatus.running, worker_pid=None, heartbeat_at=utcnow() - timedelta(minutes=5))
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        rec.add_instance(kind="sim", model="m", pid=p.pid, launched_at=launched_at(), state="ready")
        return p

    ours = stale_run_with_engine(utcnow)
    other = stale_run_with_engine(lambda: utcnow() - timedelta(hours=1))  # pid "reused" by an unrelated process
    try:
        assert len(reap_stale(db)) == 2
        assert ours.wait(10) == -9
        assert other.poll() is None
    finally:
        for p in (ours, other):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_reaping_finds_an_engine_child_that_outlived_its_group_leader(db, tmp_path):
    """vLLM's EngineCore can outlive a killed API server in another session; the launch's env tag finds it."""
    import os
    import subprocess
    import sys
    import time

    import psutil

    from engines.supervisor import TAG_ENV

    run_id = create_run(_config(), db)
    rec = Recorder(run_id, db)
    rec.update_run(status=RunStatus.running, worker_pid=None, heartbeat_at=utcnow() - timedelta(minutes=5))
    pidfile = tmp_path / "child.pid"
    # The "engine" leader starts a child in a new session, then exits: the child re-parents to init.
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
            f"start_new_session=True); open({str(pidfile)!r}, 'w').write(str(p.pid))")
    leader = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                              env=os.environ | {TAG_ENV: "tag-of-this-launch"})
    rec.add_instance(kind="sim", model="m", pid=leader.pid, proc_tag="tag-of-this-launch", launched_at=utcnow(),
                     state="ready")
    leader.wait(30)
    child = psutil.Process(int(pidfile.read_text()))
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True,
                                 env=os.environ | {TAG_ENV: "another-launch"})
    try:
        assert child.is_running() and os.getsid(child.pid) == child.pid  # outside the leader's group and session
        assert reap_stale(db) == [run_id]
        deadline = time.time() + 10
        while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
            time.sleep(0.1)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert bystander.poll() is None
    finally:
        if bystander.poll() is None:
            bystander.kill()
            bystander.wait()
        try:
            child.kill()
        except psutil.Error:
            pass


def test_old_runs_get_their_prompt_format(tmp_path):
    """Runs stored before prompt formats existed keep what they really sent (token ids for completions, text for
    chat) instead of inheriting the new default, text."""
    import json
    import sqlite3

    from storage import queries as q
    from storage.db import migrate

    db = tmp_path / "old.db"
    migrate(f"sqlite:///{db}", "0002")
    con = sqlite3.connect(db)
    cols = [r[1] for r in con.execute("pragma table_info(runs)")]
    for rid, endpoint in ((1, "completions"), (2, "chat")):
        row = {c: None for c in cols}
        row.update(id=rid, name="", status="completed", created_at="2026-11-01 00:00:00", engine_kind="sim",
                   model="m", gpu_count=1, simulated=1, tags="[]", notes="", versions="{}", host="{}",
                   config=json.dumps({"workload": {"endpoint": endpoint}, "levels": [1]}))
        con.execute(f"insert into runs ({','.join(row)}) values ({','.join('?' * len(row))})", list(row.values()))
    con.commit()
    con.close()
    open_db(db)  # migrates to head
    got = {d.run.id: d.config["workload"]["prompt_format"] for d in q.get_runs([1, 2], db)}
    assert got == {1: "token-ids", 2: "text"}


def test_0005_gives_existing_runs_distinct_uuids_and_new_runs_one(db_path):
    from storage.db import migrate, to_url

    migrate(to_url(db_path), "0004")
    import sqlite3

    con = sqlite3.connect(db_path)
    for name in ("a", "b"):
        con.execute("insert into runs (name, status, created_at, config, engine_kind, model, gpu_count, simulated, "
                    f"tags, notes, versions, host) values ('{name}', 'completed', '2026-11-01 10:00:00.000000', '{{}}', "
                    "'sim', 'm', 1, 1, '[]', '', '{}', '{}')")
    con.commit()
    con.close()
    new_id = create_run(_config(), db_path)  # migrates to head, then inserts
    with open_db(db_path)() as s:
        uuids = [r.uuid for r in s.scalars(select(Run).order_by(Run.id))]
    assert len(uuids) == 3 and len(set(uuids)) == 3 and all(len(u) == 36 for u in uuids)
    assert new_id == 3
