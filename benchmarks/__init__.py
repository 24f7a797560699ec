"""Benchmark scripts (each runnable as `python benchmarks/NAME.py`); `floor` holds the in-run
matmul floor that several of them report."""
