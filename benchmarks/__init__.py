"""Benchmarks of voicesessions: `python -m benchmarks` runs every comparison (BENCHMARKS.md)."""
