"""Benchmarks of `moderate` against the built-in simulator: `python -m bench` (see BENCHMARKS.md)."""
