"""Benchmarks and the evaluation harness: ``python -m bench --help`` lists the suites (docs/benchmarks.md)."""
