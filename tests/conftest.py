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
