"""Benchmarks: each measures offload beside a baseline in the same run and reports the ratio."""
