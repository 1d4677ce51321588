"""Benchmarks: the seed pipeline, faithfully, and dfserve side by side."""
