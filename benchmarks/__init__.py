"""Benchmarks for `cas`; run each as a module, e.g. ``python -m benchmarks.ingest``."""
