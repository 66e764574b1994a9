"""How runs are started, watched and resumed: the Dagster instance, run coordinator and launcher, the
fork server, max runtime, re-execution, concurrency and step executors.

Every import of Dagster's private modules (``dagster._*``) lives in this package, most of them in
``dagster_internals``, so an upgrade of Dagster has one place to check (tests/test_layout.py).
"""
