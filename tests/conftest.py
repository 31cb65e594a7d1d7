import itertools
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def db_path(tmp_path) -> Path:
    """A fresh SQLite file per test (real file, WAL, migrated on open)."""
    return tmp_path / "melt-test.db"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    # Never touch the user's real history or data dir from a test.
    monkeypatch.setenv("MELT_HOME", str(tmp_path / "melt-home"))
    monkeypatch.setenv("MELT_DB", str(tmp_path / "melt-default.db"))


# -- PostgreSQL ----------------------------------------------------------------------------------------------------
PG_TEMPLATE = "melt_template"
_pg_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL server for the session (tests/pgserver.py), with a template database migrated once by
    Melt's own migrations (storage.db.migrate), so each test's fresh database is a fast copy. Missing PostgreSQL
    skips, unless MELT_REQUIRE_PG=1 (CI, scripts/test.sh) makes it an error."""
    from tests.pgserver import PgServer, pg_bin_dir

    if pg_bin_dir() is None:
        if os.environ.get("MELT_REQUIRE_PG") == "1":
            pytest.fail("MELT_REQUIRE_PG=1 but PostgreSQL is not installed (apt-get install -y postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    server = PgServer().init().start()
    try:
        server.wait_ready()
        server.admin(f"CREATE DATABASE {PG_TEMPLATE}")
        from storage.db import migrate

        migrate(server.url(PG_TEMPLATE))
        yield server
    finally:
        server.remove()


def new_pg_database(server, template: str | None = PG_TEMPLATE) -> str:
    """A fresh database on `server` (a copy of the migrated template, or empty with template=None); its URL."""
    name = f"t{os.getpid()}_{next(_pg_names)}"
    server.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    return server.url(name)


def drop_pg_database(server, url: str) -> None:
    from storage.db import forget

    forget(url)
    if server.running():
        server.admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_server):
    """A fresh, migrated PostgreSQL database for one test: its SQLAlchemy URL (postgresql+psycopg://...)."""
    url = new_pg_database(pg_server)
    yield url
    drop_pg_database(pg_server, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    """The history a storage/CLI/dashboard test runs against, once per backend: a SQLite file path, or the URL of a
    fresh database on the session's real PostgreSQL server. Both are what `--db` / MELT_DB accept."""
    if request.param == "sqlite":
        return str(tmp_path / "melt-test.db")
    return request.getfixturevalue("pg_url")
