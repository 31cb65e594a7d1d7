"""Engine/session setup. SQLite by default (WAL: one writer = the worker, many readers = the UI); any
SQLAlchemy URL works. Migrations are applied at open, so an older shared history file keeps opening."""
from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class StorageError(RuntimeError):
    pass


class StorageFault(StorageError):
    """A write to the history database failed for a reason outside Melt (disk full, read-only file system, disk I/O
    error, lost database server). The message is one plain line: what happened and what to do."""


# SQLite / driver messages -> (what happened, what to do). Matched case-insensitively in the DBAPI error text.
_FAULTS = (
    ("disk is full", "the database or its disk is full",
     "free space on that disk or give another --db / MELT_DB, then run again"),
    ("readonly database", "it became read-only",
     "make the file and its directory writable (or give another --db / MELT_DB), then run again"),
    ("read-only file system", "the file system is read-only", "give a --db / MELT_DB on a writable disk"),
    ("disk i/o error", "the disk reported an I/O error", "check the disk (dmesg) and free space, then run again"),
    ("unable to open database file", "the file could not be opened", "check that the path still exists"),
    ("server closed the connection", "the database server closed the connection",
     "check the database server, then run again"),
    ("connection refused", "the database server refused the connection", "check the database server"),
    ("terminating connection", "the database server ended the connection", "check the database server"),
    ("the database system is shutting down", "the database server is shutting down", "check the database server"),
    ("connection is lost", "the connection to the database server was lost", "check the database server"),
    ("consuming input failed", "the connection to the database server was lost", "check the database server"),
    ("could not receive data from server", "the connection to the database server was lost",
     "check the database server"),
    ("no space left on device", "the database server's disk is full", "free space on the database server"),
)


def storage_fault(exc: BaseException, url: str) -> StorageFault | None:
    """The StorageFault for a failed write, or None when `exc` is not an outside fault (a bug must stay a bug)."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return None
    text = str(exc.orig or exc).lower()
    where = url[len("sqlite:///"):] if url.startswith("sqlite:///") else _hide_password(url)
    for needle, what, todo in _FAULTS:
        if needle in text:
            extra = _free_space_note(where) if needle == "disk is full" else ""
            return StorageFault(f"the history database {where} could not be written: {what}{extra}; to go on, {todo}")
    if exc.connection_invalidated:
        return StorageFault(f"the connection to the history database {where} was lost; to go on, check the "
                            f"database server, then run again")
    return None


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "(database URL)"


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing parent), None if unknown."""
    import shutil

    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _free_space_note(path: str) -> str:
    free = free_bytes(path)
    return f" ({free / 2**20:.1f} MiB free there)" if free is not None else ""


def default_db_path() -> Path | str:
    """MELT_DB (a SQLite path, or a SQLAlchemy URL such as postgresql+psycopg://... kept as given), else a per-user
    data directory (platformdirs)."""
    env = os.environ.get("MELT_DB")
    if env:
        return env if "://" in env else Path(env).expanduser()
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


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres://"))


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(eng, "connect", _sqlite_pragmas)
        return eng
    if is_postgres(url):
        # A lost server must fail a write within seconds, not hang the worker: a connect timeout, and TCP
        # keepalives so a half-open connection is noticed.
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10,
                             connect_args={"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                                           "keepalives_interval": 5, "keepalives_count": 3,
                                           "application_name": "melt"})
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
    """One migrator per database at a time. PostgreSQL: a transaction-level advisory lock is not enough (Alembic
    commits per migration), so a session advisory lock held on its own connection for the whole upgrade; a second
    process opening the same new history waits, then finds it at head. SQLite: one migrator per file. SQLite runs Alembic's DDL outside one transaction, so two processes
    opening a new file together (the dashboard and a CLI sweep, a worker and its UI) would both see an empty
    schema and both create the tables; the second fails with "table already exists". The lock sits in a sibling
    file (flock, released by the kernel if a process dies), not on the database file SQLite locks itself."""
    if is_postgres(url):
        from sqlalchemy import text

        eng = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})
        try:
            with eng.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATE_LOCK})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATE_LOCK})
                    conn.commit()
        finally:
            eng.dispose()
        return
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


_PG_MIGRATE_LOCK = 0x6D656C74  # "melt": the advisory lock key of Melt's migrations


@lru_cache(maxsize=8)
def _open(url: str) -> tuple[Engine, sessionmaker]:
    migrate(url)
    eng = make_engine(url)
    _OPENED[url] = eng
    return eng, sessionmaker(eng, expire_on_commit=False)


_OPENED: dict[str, Engine] = {}


def forget(db: str | Path) -> None:
    """Close the pooled connections of one history and drop it from the cache (tests drop their databases)."""
    url = to_url(db)
    for key in [k for k in list(_OPENED) if k == url]:
        _OPENED.pop(key).dispose()
    _open.cache_clear()


def open_db(db: str | Path | None = None) -> sessionmaker:
    """Validated, migrated session factory for DB path/URL (None = default). Cached per URL."""
    url = check_writable(db)
    return _open(url)[1]


def get_engine(db: str | Path | None = None) -> Engine:
    url = check_writable(db)
    return _open(url)[0]


def session(db: str | Path | None = None) -> Session:
    return open_db(db)()
