"""The history database's disk fills up mid-sweep: a real tmpfs of a few MiB, filled by another writer while a CLI
sweep streams into it (root only: mount). Load stops, the engine is stopped, what was committed stays, the file
still opens, and the CLI says in one line what happened and what to do, with no traceback."""
from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engines.supervisor import kill_tagged
from tests.integration.test_sweep_cli import ROOT, SIM, _alive, melt


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def _fill(mnt: Path) -> Path:
    """Another writer takes every free byte of the disk."""
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        for _ in range(1 << 12):  # bounded: 4 GiB, far beyond the tmpfs
            try:
                f.write(b"\0" * (1 << 20))
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
    return filler


def test_disk_full_mid_sweep_stops_cleanly_and_says_what_to_do(small_disk):
    db = small_disk / "melt.db"
    from storage.db import get_engine

    get_engine(db).dispose()  # schema created here first; this process then keeps no connection open
    p = subprocess.Popen([sys.executable, "-m", "bench", "--db", str(db), "sweep", *SIM, "--levels", "8",
                          "--duration", "120", "--input-len", "16", "--output-len", "16", "--telemetry-hz", "4"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tags = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for committed request rows of the running level
            with _ro(db) as c:
                n = c.execute("select count(*) from requests").fetchone()[0]
                tags = [t for (t,) in c.execute("select proc_tag from engine_instances") if t]
            if n > 100:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never committed requests")
        with _ro(db) as c:
            engine_pid = c.execute("select pid from engine_instances").fetchone()[0]
        filler = _fill(small_disk)
        out, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(30)
        for t in tags:
            kill_tagged(t)
    text = out + err
    assert p.returncode == 1, text
    assert "Traceback" not in text and "OperationalError" not in text, text
    said = [ln for ln in text.splitlines() if "could not be written" in ln]
    assert len(said) == 1, text
    assert "the database or its disk is full" in said[0] and "free space" in said[0] and str(db) in said[0]
    assert not _alive(engine_pid), "engine left running after the disk filled up"
    # what was committed is kept and the file is consistent, while the disk is still full
    with _ro(db) as c:
        assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert c.execute("select count(*) from requests").fetchone()[0] > 100
    filler.unlink()
    listing = melt("runs", db=db)
    assert listing.returncode == 0 and ("failed" in listing.stdout or "aborted" in listing.stdout), listing


def test_database_full_mid_sweep_without_root(db_path, capsys):
    """The same fault where no tmpfs can be mounted: SQLite's max_page_count on every connection of the sweep makes
    the database full a few hundred kB after the run starts (SQLITE_FULL, the very error a full disk gives). The CLI
    runs in this process so that its connections get the limit."""
    import signal

    from sqlalchemy import event

    from bench.cli import main
    from storage.db import get_engine

    eng = get_engine(db_path)
    with eng.connect() as c:
        limit = c.exec_driver_sql("pragma page_count").scalar() + 60  # ~240 kB more: a few thousand request rows

    def cap(dbapi_conn, _record) -> None:
        dbapi_conn.execute(f"pragma max_page_count={limit}")

    event.listen(eng, "connect", cap)
    eng.dispose()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    tags = []
    try:
        rc = main(["--db", str(db_path), "sweep", *SIM, "--levels", "8", "--duration", "120", "--input-len", "16",
                   "--output-len", "16", "--telemetry-hz", "4"])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        event.remove(eng, "connect", cap)
        eng.dispose()
        with _ro(db_path) as c:
            rows = [(pid, tag) for pid, tag in c.execute("select pid, proc_tag from engine_instances")]
        for _, tag in rows:
            tags.append(tag)
            kill_tagged(tag or "")
    out, err = capsys.readouterr()
    text = out + err
    assert rc == 1, text
    assert "Traceback" not in text and "OperationalError" not in text, text
    said = [ln for ln in text.splitlines() if "could not be written" in ln]
    assert len(said) == 1 and "the database or its disk is full" in said[0], text
    assert rows and not _alive(rows[0][0]), "engine left running after the database filled up"
    with _ro(db_path) as c:
        assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert c.execute("select count(*) from requests").fetchone()[0] > 0
        status, error = c.execute("select status, error from runs").fetchone()
    assert status == "failed" and "could not be written" in error  # with room to update in place, it is stored
