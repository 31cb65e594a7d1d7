import pytest

from tests.app.seed import seed_history


@pytest.fixture
def app_db(db, monkeypatch):
    """A seeded history that the app opens as its default database (MELT_DB), once in a real SQLite file and once in
    a real PostgreSQL database (the `db` fixture)."""
    monkeypatch.setenv("MELT_DB", str(db))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    ids = seed_history(db, 3, levels=(1, 4, 16), requests_per_level=60)
    return db, ids
