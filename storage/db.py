"""Engine/session setup. SQLite by default (WAL: one writer = the worker, many readers = the UI); any
SQLAlchemy URL works. Migrations are applied at open, so an older shared history file keeps opening."""
from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class StorageError(RuntimeError):
    pass


def default_db_path() -> Path:
    """MELT_DB, else a per-user data directory (platformdirs)."""
    env = os.environ.get("MELT_DB")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("melt", appauthor=False)) / "melt.db"


def data_dir() -> Path:
    """Where Melt keeps logs, engine venvs and dummy model dirs: beside the default DB."""
    env = os.environ.get("MELT_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("melt", appauthor=False))


def to_url(db: str | Path | None) -> str:
    if db is None:
        db = default_db_path()
    s = str(db)
    if "://" in s:
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


def check_writable(db: str | Path | None) -> str:
    """Fail early with a clear message when a SQLite path cannot be created or written. Returns the URL."""
    url = to_url(db)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        parent = path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create the database directory {parent}: {e.strerror}") from None
        if path.exists() and not os.access(path, os.W_OK):
            raise StorageError(f"database file {path} is not writable")
        if not path.exists() and not os.access(parent, os.W_OK):
            raise StorageError(f"cannot write to {parent} (database {path})")
        if path.is_dir():
            raise StorageError(f"database path {path} is a directory")
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(eng, "connect", _sqlite_pragmas)
        return eng
    return create_engine(url, pool_pre_ping=True)


def migrate(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to `revision` (head; tests pin an older one to check upgrades)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    with _migration_lock(url):
        command.upgrade(cfg, revision)


@contextmanager
def _migration_lock(url: str):
    """One migrator per SQLite file at a time. SQLite runs Alembic's DDL outside one transaction, so two processes
    opening a new file together (the dashboard and a CLI sweep, a worker and its UI) would both see an empty
    schema and both create the tables; the second fails with "table already exists". The lock sits in a sibling
    file (flock, released by the kernel if a process dies), not on the database file SQLite locks itself."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        yield
        return
    import fcntl

    lock_path = url[len("sqlite:///"):] + ".migrate-lock"
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@lru_cache(maxsize=8)
def _open(url: str) -> tuple[Engine, sessionmaker]:
    migrate(url)
    eng = make_engine(url)
    return eng, sessionmaker(eng, expire_on_commit=False)


def open_db(db: str | Path | None = None) -> sessionmaker:
    """Validated, migrated session factory for DB path/URL (None = default). Cached per URL."""
    url = check_writable(db)
    return _open(url)[1]


def get_engine(db: str | Path | None = None) -> Engine:
    url = check_writable(db)
    return _open(url)[0]


def session(db: str | Path | None = None) -> Session:
    return open_db(db)()
