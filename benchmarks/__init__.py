"""Benchmarks: offload beside a baseline, run in the same invocation; not tests (CI does not run them).

``python -m benchmarks`` runs the video pipeline's three (``benchmarks/run.py``); the others run as modules,
e.g. ``python -m benchmarks.trigger_to_start``. See ``benchmarks/README.md``.
"""
