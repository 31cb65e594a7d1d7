"""Melt's benchmark core (no UI): workload, load generator, metrics, sweep runner, worker, CLI."""

__version__ = "0.1.0"
