"""Benchmark scripts (not tests): they print tables, see docs/PERFORMANCE.md."""
