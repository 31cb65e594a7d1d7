"""The same schema on a real PostgreSQL server: every migration 0001..head runs there with data in the tables
(0003's new columns, 0004's JSON rewrite, 0005's UUID fill), and several processes opening one new history at once
migrate it once (the advisory lock in storage.db)."""
import json
import multiprocessing as mp

from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool

from storage.db import migrate, open_db
from storage.models import Run
from tests.conftest import drop_pg_database, new_pg_database
from tests.unit.test_storage import HEAD, _migrate_at

RUN_COLS = ("name, status, created_at, config, engine_kind, model, gpu_count, simulated, tags, notes, versions, host")


def _insert_run(url: str, name: str, config: dict) -> None:
    eng = create_engine(url, poolclass=NullPool)
    with eng.begin() as c:
        c.execute(text(f"insert into runs ({RUN_COLS}) values (:n, 'completed', now(), :cfg, 'sim', 'm', 1, true, "
                       "'[]', '', '{}', '{}')"), {"n": name, "cfg": json.dumps(config)})
    eng.dispose()


def test_every_migration_runs_on_postgresql_with_rows_in_place(pg_server):
    url = new_pg_database(pg_server, template=None)  # empty: nothing migrated yet
    try:
        migrate(url, "0002")
        _insert_run(url, "old completions", {"workload": {"endpoint": "completions"}, "levels": [1]})
        _insert_run(url, "old chat", {"workload": {"endpoint": "chat"}, "levels": [1]})
        eng = create_engine(url, poolclass=NullPool)
        with eng.begin() as c:
            c.execute(text("insert into levels (run_id, idx, concurrency, status, n_sent, n_ok, n_err, client_bound, "
                           "summary, telemetry) values (1, 0, 4, 'completed', 1, 1, 0, false, '{}', '{}')"))
        migrate(url)  # 0003, 0004, 0005
        with eng.connect() as c:
            assert c.execute(text("select version_num from alembic_version")).scalar() == HEAD
            assert c.execute(text("select repeat from levels")).scalar() == 0  # 0003's server default
            cols = {r[0] for r in c.execute(text("select column_name from information_schema.columns "
                                                 "where table_name = 'requests'"))}
            assert "user" in cols  # a reserved word in PostgreSQL: quoted by SQLAlchemy
        eng.dispose()
        with open_db(url)() as s:
            runs = s.scalars(select(Run).order_by(Run.id)).all()
            assert [r.config["workload"]["prompt_format"] for r in runs] == ["token-ids", "text"]  # 0004
            assert len({r.uuid for r in runs}) == 2 and all(len(r.uuid) == 36 for r in runs)  # 0005
    finally:
        drop_pg_database(pg_server, url)


def test_processes_opening_a_new_postgresql_history_together_migrate_it_once(pg_server):
    ctx = mp.get_context("spawn")
    url = new_pg_database(pg_server, template=None)
    try:
        go = ctx.Event()
        procs = [ctx.Process(target=_migrate_at, args=(url, go)) for _ in range(4)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        with open_db(url)() as s:
            assert s.execute(text("select version_num from alembic_version")).scalar() == HEAD
    finally:
        drop_pg_database(pg_server, url)
