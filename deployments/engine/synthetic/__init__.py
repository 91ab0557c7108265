"""Synthetic pipelines built offline: tiny random ones (tests, CPU demo) and full-size random ones (GPU benchmarks)."""
