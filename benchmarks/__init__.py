"""Benchmarks for tfcascade: `python -m benchmarks.run [--quick]` (RESULTS.md), `python -m benchmarks.engines` (ENGINES.md)."""
