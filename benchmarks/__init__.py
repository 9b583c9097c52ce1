"""Benchmarks for tfcascade (issue 5): `python -m benchmarks.run [--quick]`."""
