"""Bundles between backends: export from a SQLite or a PostgreSQL history, import into an empty history of either
kind, and every summary, series and request row is identical (SQLite -> PostgreSQL and PostgreSQL -> SQLite, and
each to itself), with the run columns equal too."""
import pytest

from app.perf.seed import seed_run
from bench.report import run_document
from storage.bundle import export_bundle, import_bundle
from storage.db import open_db
from storage.models import EngineInstance, EngineMetricSample, Event, Level, Request, Run, TelemetrySample
from storage import queries as q
from tests.unit.test_bundle import _count, _rows


def _history(kind: str, request, tmp_path, name: str) -> str:
    if kind == "sqlite":
        return str(tmp_path / f"{name}.db")
    from tests.conftest import drop_pg_database, new_pg_database

    server = request.getfixturevalue("pg_server")
    url = new_pg_database(server)
    request.addfinalizer(lambda: drop_pg_database(server, url))
    return url


@pytest.mark.parametrize("src_kind,dst_kind", [("sqlite", "postgresql"), ("postgresql", "sqlite"),
                                               ("postgresql", "postgresql"), ("sqlite", "sqlite")])
def test_export_import_between_backends_keeps_every_row(src_kind, dst_kind, request, tmp_path):
    src = _history(src_kind, request, tmp_path, "src")
    dst = _history(dst_kind, request, tmp_path, "dst")
    rid = seed_run(src, name="shared <b>sweep</b> ünïcode", levels=(1, 4), requests_per_level=60, tags=["x"],
                   error_rate=0.1)
    assert _count(dst) == 0  # an empty history
    res = import_bundle(export_bundle([rid], src), dst)
    assert len(res.imported) == 1
    new_id = res.imported[0][1]
    a, b = run_document(rid, src), run_document(new_id, dst)  # the summaries
    a.pop("run_id"), b.pop("run_id")
    assert a == b
    for model in (Level, Request, TelemetrySample, EngineMetricSample, Event, EngineInstance):
        got, want = _rows(dst, model, new_id), _rows(src, model, rid)
        if model is EngineInstance:  # machine-local fields are not carried
            for r in want:
                r.update(pid=None, proc_tag=None, log_path=None)
        assert got == want, model.__name__
        assert model is EngineInstance or got, model.__name__
    for series in (q.telemetry_series, q.engine_metric_series, q.request_points):  # what the charts draw
        x, y = series(rid, src), series(new_id, dst)
        x.pop("id", None), y.pop("id", None)
        assert x == y and any(x.values()), series.__name__
    assert q.request_aggregates(rid, src) == q.request_aggregates(new_id, dst)
    with open_db(src)() as s1, open_db(dst)() as s2:
        r1, r2 = s1.get(Run, rid), s2.get(Run, new_id)
        cols = [c.key for c in Run.__table__.columns if c.key not in {"id", "worker_pid", "heartbeat_at"}]
        assert {c: getattr(r1, c) for c in cols} == {c: getattr(r2, c) for c in cols}
