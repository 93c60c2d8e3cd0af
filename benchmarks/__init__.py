"""Benchmarks of gatednorm: `python -m benchmarks.bench` (table + CSV), `python -m benchmarks.plot` (PNGs)."""
