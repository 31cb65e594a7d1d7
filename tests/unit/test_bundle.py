"""Export bundles (storage/bundle.py): a round trip keeps every row and number, a second import is recognized, and
hostile or broken bundles are refused with a message naming what is wrong while nothing is written."""
import gzip
import json

import pytest
from sqlalchemy import func, select

from app.perf.seed import seed_run
from bench.report import run_document
from storage.bundle import BundleError, export_bundle, import_bundle, parse_bundle
from storage.db import open_db
from storage.models import EngineInstance, EngineMetricSample, Event, Level, Request, Run, TelemetrySample

SKIP = {"id", "run_id", "level_id", "instance_id"}


def _rows(db, model, run_id):
    """Every row of one run in `model`, ids left out, parents named by their position instead."""
    with open_db(db)() as s:
        lv_pos = {i: k for k, i in enumerate(s.scalars(select(Level.id).where(Level.run_id == run_id)
                                                       .order_by(Level.id)))}
        rows = s.scalars(select(model).where(model.run_id == run_id).order_by(model.id)).all()
        out = []
        for r in rows:
            d = {c.key: getattr(r, c.key) for c in model.__table__.columns if c.key not in SKIP}
            if hasattr(r, "level_id"):
                d["level"] = lv_pos.get(r.level_id)
            out.append(d)
        return out


def _count(db, model=Run) -> int:
    with open_db(db)() as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.fixture
def source(tmp_path):
    db = tmp_path / "source.db"
    rid = seed_run(db, name="shared <b>sweep</b>", levels=(1, 4), requests_per_level=60, tags=["x"], error_rate=0.1)
    return db, rid


def test_round_trip_keeps_every_number_and_is_recognized_on_reimport(source, tmp_path):
    db, rid = source
    other = tmp_path / "other.db"
    seed_run(other, name="already here", levels=(2,), requests_per_level=5)  # ids in the target differ
    data = export_bundle([rid], db)
    res = import_bundle(data, other)
    assert len(res.imported) == 1 and not res.already
    new_id = res.imported[0][1]
    assert new_id != rid
    a, b = run_document(rid, db), run_document(new_id, other)
    assert a.pop("run_id") == rid and b.pop("run_id") == new_id
    assert a == b
    for model in (Level, EngineInstance, Request, TelemetrySample, EngineMetricSample, Event):
        src, dst = _rows(db, model, rid), _rows(other, model, new_id)
        if model is EngineInstance:  # machine-local fields are not carried
            for r in src:
                r.update(pid=None, proc_tag=None, log_path=None)
        assert src == dst, model.__name__
        assert model in (EngineInstance,) or len(src) > 0, model.__name__
    with open_db(db)() as s1, open_db(other)() as s2:
        r1, r2 = s1.get(Run, rid), s2.get(Run, new_id)
        cols = [c.key for c in Run.__table__.columns if c.key not in {"id", "worker_pid", "heartbeat_at"}]
        assert {c: getattr(r1, c) for c in cols} == {c: getattr(r2, c) for c in cols}
    again = import_bundle(data, other)
    assert again.imported == [] and again.already == [(r1.uuid, new_id)]
    assert "already in this history as run(s) #%d" % new_id in again.message()
    assert _count(other) == 2


def _doc(data: bytes) -> dict:
    return json.loads(gzip.decompress(data))


def _pack(doc) -> bytes:
    return gzip.compress(json.dumps(doc).encode())


def _refused(data: bytes, target, match: str, **limits):
    before = _count(target)
    with pytest.raises(BundleError, match=match):
        import_bundle(data, target, **limits)
    assert _count(target) == before


def test_broken_and_hostile_bundles_are_refused_and_write_nothing(source, tmp_path):
    db, rid = source
    target = tmp_path / "target.db"
    seed_run(target, name="keep me", levels=(2,), requests_per_level=5)
    good = export_bundle([rid], db)
    _refused(b"PK\x03\x04 not gzip", target, "not gzip-compressed")
    _refused(good[: len(good) // 2], target, "truncated")
    _refused(good + b"trailing", target, "unexpected bytes after")
    _refused(gzip.compress(b'{"format": "melt-bundle", "version": 1, "runs": ['), target, "not valid JSON")
    _refused(gzip.compress(b"[1, 2]"), target, "no format and version")

    doc = _doc(good)
    _refused(_pack({**doc, "version": 2}), target, "version 2 is not supported.*newer Melt")
    _refused(_pack({**doc, "format": "zip"}), target, "format is 'zip'")

    bad = _doc(good)
    bad["runs"][0]["instances"][0]["log_path"] = "/etc/passwd"  # a path from the bundle: never taken
    _refused(_pack(bad), target, r"runs\[0\]\.instances\[0\]\.log_path: Extra inputs are not permitted")
    bad = _doc(good)
    bad["runs"][0]["run"]["worker_pid"] = 1
    _refused(_pack(bad), target, r"runs\[0\]\.run\.worker_pid")
    bad = _doc(good)
    bad["runs"][0]["requests"][3]["ttft_ms"] = "fast"
    _refused(_pack(bad), target, r"runs\[0\]\.requests\[3\]\.ttft_ms")
    bad = _doc(good)
    bad["runs"][0]["requests"][5]["send_ns"] = 10**30  # more than a database integer holds
    _refused(_pack(bad), target, r"runs\[0\]\.requests\[5\]\.send_ns: Input should be less than or equal")
    bad = _doc(good)
    bad["runs"][0]["requests"][0]["level_ref"] = 987654
    _refused(_pack(bad), target, r"requests\[0\]\.level_ref: 987654 is not a row of this run")
    bad = _doc(good)
    bad["runs"][0]["run"]["status"] = "running"
    _refused(_pack(bad), target, "only finished runs")
    bad = _doc(good)
    bad["runs"][0]["run"]["name"] = "x" * 201
    _refused(_pack(bad), target, r"run\.name: String should have at most 200")
    bad = _doc(good)
    bad["runs"][0]["levels"][1]["summary"]["ttft_ms"] = 5  # the pages read ttft_ms["p50"]
    _refused(_pack(bad), target, r"runs\[0\]\.levels\[1\]\.summary\.ttft_ms: Input should be an object")
    bad = _doc(good)
    bad["runs"][0]["run"]["tags"] = [{"x": 1}]  # the Runs page joins tags as text
    _refused(_pack(bad), target, r"runs\[0\]\.run\.tags\[0\]: Input should be a valid string")
    bad = _doc(good)
    bad["runs"][0]["run"]["config"] = ["not", "a", "config"]
    _refused(_pack(bad), target, r"runs\[0\]\.run\.config: Input should be an object")
    bad = _doc(good)
    bad["runs"][0]["run"]["uuid"] = "../../etc"
    _refused(_pack(bad), target, "is not a UUID")


def test_size_limits_before_and_after_decompression(source, tmp_path):
    db, rid = source
    target = tmp_path / "target.db"
    good = export_bundle([rid], db)
    _refused(good, target, "more than the import limit", max_compressed=len(good) - 1)
    _refused(good, target, "expands to more than.*decompression bomb", max_expanded=1000)
    bomb = gzip.compress(b"[" + b" " * (200 << 20) + b"]", compresslevel=9)  # 200 MiB of spaces in ~200 KiB
    assert len(bomb) < 1 << 20
    _refused(bomb, target, "decompression bomb", max_expanded=16 << 20)
    parse_bundle(good)  # the defaults take a normal bundle


def test_a_failure_inside_the_transaction_writes_none_of_the_runs(source, tmp_path, monkeypatch):
    db, rid = source
    rid2 = seed_run(db, name="second", levels=(2,), requests_per_level=10)
    target = tmp_path / "target.db"
    data = export_bundle([rid, rid2], db)
    import storage.bundle as bundle

    real = bundle.insert
    calls = {"n": 0}

    def failing(model):
        calls["n"] += 1
        if calls["n"] > 5:  # the second run's bulk rows
            raise RuntimeError("disk went away")
        return real(model)

    monkeypatch.setattr(bundle, "insert", failing)
    with pytest.raises(RuntimeError):
        import_bundle(data, target)
    assert _count(target) == 0 and _count(target, Request) == 0
    monkeypatch.setattr(bundle, "insert", real)
    assert [i for _, i in import_bundle(data, target).imported] == [1, 2]


def test_exporting_an_active_or_unknown_run_says_so(tmp_path):
    db = tmp_path / "a.db"
    rid = seed_run(db, status="running", levels=(1, 2), requests_per_level=10)
    with pytest.raises(BundleError, match=f"run {rid} is running: export it once it has finished"):
        export_bundle([rid], db)
    with pytest.raises(LookupError, match="run 99 not found"):
        export_bundle([99], db)
