"""The harness benchmarks and tests share: real services started as process groups, a Dagster deployment
on free ports, in-thread HTTP servers, signed webhook deliveries, throwaway Postgres databases, and the
one ``wait_for``.

It lives here, not in ``tests/support``, because benchmarks must not import the test suite (a benchmark
run needs no test files); tests import it from here. Test-only helpers (fake providers, the test code
locations) stay in ``tests/support`` and build on these.
"""
