"""Run workers forked from a server that has Dagster and the code location imported already.

A run worker started the stock way is a new Python process that imports Dagster and the whole code location
before its first step: 4-15 s on a 2-core machine (``import definitions`` is most of it), which is most of
the time from a trigger or a webhook to its run starting. :class:`ForkServer` keeps a Python
``forkserver`` process (the mechanism the multiprocess executor already uses, ``offload/executors.py``)
that imported ``preload_modules`` once, and forks each run worker from it, so the worker only runs Dagster's
own ``dagster api execute_run`` body (:func:`execute_run`). ``offload/launcher.py`` uses it by default.

**Stale code.** A preloaded module is what the worker runs: Dagster's loader reuses a module already in
``sys.modules`` for the same file. Stock Dagster imports the code from disk for every run, so an edit (with
or without the UI's "Reload" of the code location) is what the next run executes. To keep that, every fork
first compares a fingerprint of the code location's Python files (path, mtime and size of every ``.py``
file under the working directory, descending only into packages: directories with an ``__init__.py``,
about 10 ms for this project) with the one the server was started with; if they differ, the server is
replaced before forking: the next run pays one preload (as a stock start), later runs are fast again. A
module outside the working directory (an installed package upgraded under a running daemon) is not watched.

**Ownership.** The server is a child of the process that launches (the Dagster daemon, whose run queue
calls the launcher) and stops when that process stops or closes it. Workers do not depend on it: a worker
is detached from multiprocessing's bookkeeping as soon as it started, so neither a replaced server nor a
daemon exiting waits for, signals or kills it. A daemon restart leaves running workers running (they finish
and record their outcome themselves; offload's launcher judges them by pid and start time); a ``kill -9``
of the whole process group kills them with it, as it kills the code server's workers in stock Dagster.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.process
import multiprocessing.util
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import deserialize_value, serialize_value

DEFAULT_PRELOAD = ("dagster", "definitions")


def execute_run(serialized_args: str, working_directory: str) -> None:
    """The run worker: Dagster's ``dagster api execute_run`` body, in a process forked with the code
    already imported. It logs "Started process for run (pid: N)" as a stock worker does."""
    from dagster._cli.api import _execute_run_command_body
    from dagster._cli.utils import get_instance_for_cli
    from dagster._utils.interrupts import capture_interrupts

    os.chdir(working_directory)
    if working_directory not in sys.path:  # local imports inside steps resolve as in the code server
        sys.path.insert(0, working_directory)
    args = deserialize_value(serialized_args, ExecuteRunArgs)
    with capture_interrupts(), get_instance_for_cli(instance_ref=args.instance_ref) as instance:
        code = _execute_run_command_body(
            args.run_id, instance, lambda event: None, set_exit_code_on_failure=False
        )
    sys.exit(code)


def code_fingerprint(root: str) -> str:
    """A digest of every ``.py`` file's path, mtime and size under ``root``, in packages only (so data
    directories such as ``var/`` and the virtualenv are never walked)."""
    digest = hashlib.sha256()
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(
            d for d in subdirectories if os.path.isfile(os.path.join(directory, d, "__init__.py"))
        )
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    stat = os.stat(path)
                    digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()


# Python keeps one forkserver per process, so what it was started with is per process too: the launcher's
# settings and the code fingerprint, or None while there is none.
_lock = threading.Lock()
_started_with: tuple[str, tuple[str, ...], str] | None = None


class ForkServer:
    """Forks run workers from the process's preloaded server, started (or replaced) as the code needs."""

    def __init__(self, working_directory: str, preload_modules: Sequence[str] = DEFAULT_PRELOAD):
        self.working_directory = os.path.abspath(working_directory)
        self.preload_modules = tuple(preload_modules)

    def start_worker(self, args: ExecuteRunArgs) -> int:
        """Fork a run worker for ``args`` (starting or replacing the server first if needed); its pid."""
        global _started_with
        with _lock:
            wanted = (self.working_directory, self.preload_modules, code_fingerprint(self.working_directory))
            if wanted != _started_with:
                _retire_server()
                _started_with = None
                multiprocessing.get_context("forkserver").set_forkserver_preload(list(self.preload_modules))
                with _on_sys_path(
                    self.working_directory
                ):  # the server imports with the sys.path it starts with
                    multiprocessing.forkserver.ensure_running()
                _started_with = wanted
            worker = multiprocessing.get_context("forkserver").Process(
                target=execute_run,
                args=(serialize_value(args), self.working_directory),
                name=f"run-{args.run_id}",
            )
            worker.start()
            # Detach it: multiprocessing would join every child at this process's exit (a daemon restart
            # would wait for its runs to finish), and reads a replaced server's closed pipe as the child's
            # exit. The worker is tracked by pid (offload/launcher.py); the forkserver reaps it.
            multiprocessing.process._children.discard(worker)  # type: ignore[attr-defined]
            assert worker.pid is not None
            return worker.pid

    @staticmethod
    def stop() -> None:
        """Let the process's server go (workers forked from it keep running); the next fork starts one.
        Not needed at exit: the server stops by itself when this process is gone."""
        global _started_with
        with _lock:
            _retire_server()
            _started_with = None


def _retire_server() -> None:
    """Detach this process from its forkserver without waiting for it.

    The standard library's own stop (``ForkServer._stop``, for its tests) waits for the server to exit,
    which it does only when every process forked from it has (each holds the server's "alive" pipe): a
    restart would wait for the longest run. So the pipe is closed and the server forgotten here; it exits
    after its last worker, and a thread reaps it then.
    """
    server: Any = multiprocessing.forkserver._forkserver
    with server._lock:
        pid, address = server._forkserver_pid, server._forkserver_address
        if pid is None:
            return
        os.close(server._forkserver_alive_fd)
        server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None
    if address and not multiprocessing.util.is_abstract_socket_namespace(address):
        with contextlib.suppress(OSError):
            os.unlink(address)
    threading.Thread(target=_reap, args=(pid,), name=f"forkserver-{pid}-reaper", daemon=True).start()


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@contextlib.contextmanager
def _on_sys_path(directory: str) -> Iterator[None]:
    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(directory)
