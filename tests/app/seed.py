"""Seeding helper for the dashboard tests: realistic runs written through the storage models into real SQLite.
The generator lives in app/perf/seed.py so the render benchmark uses the same data."""
from app.perf.seed import run_config, seed_history, seed_run, seed_services

__all__ = ["run_config", "seed_history", "seed_run", "seed_services"]
