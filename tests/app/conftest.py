import pytest

from tests.app.seed import seed_history


@pytest.fixture
def app_db(db_path, monkeypatch):
    """A seeded history in a real SQLite file that the app opens as its default database (MELT_DB)."""
    monkeypatch.setenv("MELT_DB", str(db_path))
    monkeypatch.delenv("MELT_PASSWORD", raising=False)
    ids = seed_history(db_path, 3, levels=(1, 4, 16), requests_per_level=60)
    return db_path, ids
