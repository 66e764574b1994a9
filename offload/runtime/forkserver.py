"""Run workers forked from a server that has Dagster and the code location imported already.

A run worker started the stock way is a new Python process that imports Dagster and the whole code location
before its first step: 4-15 s on a 2-core machine (``import definitions`` is most of it), which is most of
the time from a trigger or a webhook to its run starting. :class:`ForkServer` keeps a server process
(``python -m offload.runtime.forkserver``) that imported ``preload_modules`` once, in the code location's
directory,
and forks each run worker from it, so the worker only runs Dagster's own ``dagster api execute_run`` body
(:func:`execute_run`). ``offload/runtime/launcher.py`` uses it by default.

Why not the standard library's ``multiprocessing`` forkserver: it imports its preload with the launching
process's working directory (Python 3.11 ignores the ``sys_path`` it is given), there is one per process,
and every process forked from it holds its "alive" pipe, so stopping it waits for the longest run. This
server is a few lines: one request (a serialized ``ExecuteRunArgs``) per line on its stdin, the forked pid
back on a pipe of its own; it exits when its stdin closes.

**Standby.** After each request the server forks the next worker ahead of its run (:class:`Standby`): it
opens its Dagster instance and does what every worker does first with it (:func:`_warm`), then waits on a
pipe of its own; the next request is handed to it, so a run's
worker starts with its instance open (~25 ms sooner). It still runs one run and exits; it exits unused when
the server does. So each fork server has one idle process beside it, named ``offload-standby`` (``ps``
shows its role; a worker with a run is ``offload-worker``).

**Stale code.** A preloaded module is what the worker runs: Dagster's loader reuses a module already in
``sys.modules`` for the same file. Stock Dagster imports the code from disk for every run, so an edit (with
or without the UI's "Reload" of the code location) is what the next run executes. To keep that, every fork
first compares a fingerprint of the code location's Python files (path, mtime and size of every ``.py``
file under the working directory, descending only into packages: directories with an ``__init__.py``,
about 10 ms for this project) with the one the server was started with; if they differ, the server is
replaced before forking: the next run pays one preload (as a stock start), later runs are fast again. A
module outside the working directory (an installed package upgraded under a running daemon) is not watched.

**Ownership.** The server is a child of the process that launches (the Dagster daemon, whose run queue
calls the launcher; the webserver or the gateway, whose run coordinator starts runs that need not wait:
offload/runtime/coordinator.py) and exits when that process closes its stdin or is gone. Such a process
starts it
in the background (:meth:`ForkServer.warm_in_background`) and starts runs at once only when it is warm;
one server per process (:func:`shared`). Workers do not depend on it: they keep running when it exits (a
replaced server, a daemon restart), finish and record their outcome themselves; offload's launcher judges
them by pid and start time. A ``kill -9`` of the whole process group
kills them with it, as it kills the code server's workers in stock Dagster.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import deserialize_value, serialize_value

from offload import process_tree
from offload.runtime import (
    compute_logs,
    event_log_files,
    instance_settings,
    schema_scripts,
    sqlite_engines,
)

DEFAULT_PRELOAD = ("dagster", "definitions")
READY = b"ready"  # the server's first line: its preload is done
STANDBY_NAME = "offload-standby"  # a forked process waiting for its run (its name in ps and /proc)
WORKER_NAME = "offload-worker"  # a forked process running its run
# What every worker imports on its way to the first step, imported once here instead (Dagster's CLI module
# builds its click commands at import: ~40 ms of each worker's CPU).
WORKER_MODULES = (
    "dagster._cli.api",
    "dagster._cli.utils",
    "dagster._core.execution.plan.active",
    "dagster._core.execution.run_cancellation_thread",
    "dagster._core.execution.run_metrics_thread",
    "dagster._core.executor.in_process",
    "offload.runtime.coordinator",
    "offload.runtime.reexecution",
    "dagster._core.instance.factory",
    "dagster._core.storage.root",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.definitions.repository_definition.repository_data_builder",
    "dagster._core.system_config.composite_descent",
    "dagster._core.utility_ops",
    "dagster._core.workspace.autodiscovery",
    "dagster._utils.temp_file",
    "dagster._utils.test.definitions",
    # The instance's definitions-state storage, made in every worker: universal_pathlib, ~150 ms.
    "dagster._core.storage.defs_state.blob_storage_state_storage",
    "upath.core",
    "upath.implementations.local",
)

log = logging.getLogger("offload.runtime.forkserver")


def execute_run(serialized_args: str) -> int:
    """The run worker: Dagster's ``dagster api execute_run`` body, in a process forked with the code
    already imported. It logs "Started process for run (pid: N)" as a stock worker does."""
    from dagster._cli.utils import get_instance_for_cli
    from dagster._utils.interrupts import capture_interrupts

    args = deserialize_value(serialized_args, ExecuteRunArgs)
    with capture_interrupts(), get_instance_for_cli(instance_ref=args.instance_ref) as instance:
        return _run(args, instance)


def _run(args: ExecuteRunArgs, instance: Any) -> int:
    from dagster._cli.api import _execute_run_command_body

    return _execute_run_command_body(
        args.run_id, instance, lambda event: None, set_exit_code_on_failure=False
    )


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
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()


class ForkServer:
    """Forks run workers from a preloaded server, started (or replaced) as the code needs."""

    def __init__(self, working_directory: str, preload_modules: Sequence[str] = DEFAULT_PRELOAD):
        self.working_directory = os.path.abspath(working_directory)
        self.preload_modules = tuple(preload_modules)
        self._lock = threading.Lock()
        self._server: subprocess.Popen[bytes] | None = None
        self._replies: int | None = None  # the read end of the server's pid pipe
        self._fingerprint = ""  # of the code the running server imported ("" until its preload is done)
        self._warming = False

    def fingerprint(self) -> str:
        """The code's fingerprint now (:func:`code_fingerprint` of the working directory)."""
        return code_fingerprint(self.working_directory)

    def start_worker(self, args: ExecuteRunArgs, fingerprint: str | None = None) -> int:
        """Fork a run worker for ``args`` (starting or replacing the server first if needed); its pid.
        ``fingerprint``: the code's, if the caller has just taken it (:meth:`is_warm` for this run), so it is
        not walked twice for one launch. ``EOFError`` if the server exited instead (its preload raised: the
        traceback is on its stderr)."""
        with self._lock:
            self._ensure_current(fingerprint)
            assert self._server is not None and self._server.stdin is not None and self._replies is not None
            try:
                self._server.stdin.write(serialize_value(args).encode() + b"\n")
                self._server.stdin.flush()
            except BrokenPipeError as error:
                raise EOFError("the fork server exited") from error
            reply = _read_line(self._replies)
            if not reply:
                self._stop()
                raise EOFError("the fork server exited (see its traceback in this process's log)")
            return int(reply)

    def is_warm(self, fingerprint: str | None = None) -> bool:
        """A server is up, has finished its preload, and holds the current code (``fingerprint``, taken now
        if not given): a fork would not wait."""
        server = self._server
        return (
            server is not None
            and server.poll() is None
            and self._fingerprint == (fingerprint or self.fingerprint())
        )

    def warm_in_background(self) -> None:
        """Start (or replace) the server in a thread, so that a later fork finds it ready."""
        if self._warming:
            return
        self._warming = True

        def warm() -> None:
            try:
                with self._lock:
                    self._ensure_current()
            except Exception as error:  # the next start_worker reports it where a run can show it
                log.warning("fork server did not start: %s: %s", type(error).__name__, error)
            finally:
                self._warming = False

        threading.Thread(target=warm, name="forkserver-warm", daemon=True).start()

    def _ensure_current(self, fingerprint: str | None = None) -> None:
        """With the lock held: a server that is up and has imported the current code."""
        current = fingerprint or self.fingerprint()
        if self._server is None or self._server.poll() is not None or current != self._fingerprint:
            self._stop()
            self._start()
            self._fingerprint = current

    def stop(self) -> None:
        """Let the server go (workers forked from it keep running); the next fork starts a new one. Not
        needed at exit: the server exits by itself when this process is gone."""
        with self._lock:
            self._stop()

    def _start(self) -> None:
        """Start a server and wait for its preload: it writes ``ready`` when done, or exits (EOFError)."""
        replies, reply_to = os.pipe()
        try:
            self._server = subprocess.Popen(
                [sys.executable, "-m", "offload.runtime.forkserver", str(reply_to), *self.preload_modules],
                cwd=self.working_directory, stdin=subprocess.PIPE, pass_fds=(reply_to,),
            )  # fmt: skip
        finally:
            os.close(reply_to)
        self._replies = replies
        if _read_line(replies) != READY:
            self._stop()
            raise EOFError("the fork server exited while importing (see its traceback in this process's log)")

    def _stop(self) -> None:
        if self._server is not None:
            assert self._server.stdin is not None
            with contextlib.suppress(OSError):
                self._server.stdin.close()  # the server exits on EOF, at once
            server, self._server = self._server, None
            threading.Thread(target=server.wait, name=f"forkserver-{server.pid}-reaper", daemon=True).start()
        if self._replies is not None:
            os.close(self._replies)
            self._replies = None
        self._fingerprint = ""


_shared: dict[tuple[str, tuple[str, ...]], ForkServer] = {}
_shared_lock = threading.Lock()


def shared(working_directory: str, preload_modules: Sequence[str] = DEFAULT_PRELOAD) -> ForkServer:
    """This process's fork server for that code: one per process however many instances (and launchers)
    it creates, since the server holds no instance (each request carries its instance's ref)."""
    key = (os.path.abspath(working_directory), tuple(preload_modules))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = ForkServer(*key)
        return _shared[key]


def _read_line(fd: int, size: int = 64) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, size)
        if not chunk:
            return b""
        line += chunk
    return line.strip()


def serve(reply_to: int, preload: Sequence[str]) -> None:
    """The server: import ``preload`` here (the code location's directory), then fork a worker per line."""
    sys.path.insert(0, os.getcwd())
    for module in (*preload, *WORKER_MODULES):
        __import__(module)
    event_log_files.install()  # a worker that writes its run's first event copies the template
    schema_scripts.warm()  # every worker checks the storage schema: inherit alembic's scripts read once
    # What the server imported is never freed: take it out of the garbage collector's sight, so a worker's
    # first full collection does not walk (and copy, page by page) the whole code location: 0.1-0.3 s.
    gc.freeze()
    os.write(reply_to, READY + b"\n")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel, never zombies here
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the group is for the workers; EOF stops us
    instance_settings.install()
    warmed = False
    standby: Standby | None = None
    for line in sys.stdin.buffer:
        if not warmed:  # the first request's instance: parsed here once, for every worker after it
            with contextlib.suppress(Exception):  # a worker parses for itself, as before
                instance_settings.warm(deserialize_value(line.decode(), ExecuteRunArgs).instance_ref)
        pid = standby.hand(line) if standby is not None else None
        if pid is None:  # no standby yet (the first request), or it is gone
            pid = os.fork()
            if pid == 0:
                _worker(line.decode(), reply_to)
        os.write(reply_to, f"{pid}\n".encode())
        if not warmed:  # after the reply: the first worker is not kept waiting for it
            warmed = True
            _warm_definitions(line.decode())
        standby = Standby.fork(line, reply_to)  # the next request's worker, made ready meanwhile


class Standby:
    """A run worker forked before its run, that has opened its Dagster instance and waits to be handed a
    request on a pipe of its own.

    Opening the instance (its storages, their schema checks, the launcher and compute log settings) is
    ~25 ms of a forked worker's start, the largest part before its ``RUN_START``; a standby does it while
    no run waits, for the instance of the request before (a launching process always sends its own). It
    runs one run and exits, as any worker: nothing of a run is shared with the next. If the request names
    another instance, or the code location's ``.env`` changed since it opened it, it opens the instance
    anew, as a worker forked on demand does. It exits when the server does (its pipe closes).
    """

    def __init__(self, pid: int, handoff: int):
        self.pid = pid
        self._handoff = handoff  # the write end of the standby's pipe

    @classmethod
    def fork(cls, request: bytes, reply_to: int) -> Standby:
        """Fork a standby that opens the instance of ``request`` (a serialized ``ExecuteRunArgs``)."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write_end)
            _standby(request.decode(), reply_to, read_end)
        os.close(read_end)
        return cls(pid, write_end)

    def hand(self, request: bytes) -> int | None:
        """Give ``request`` to the standby; its pid, or None if it is gone (then fork one as before)."""
        try:
            view = memoryview(request)
            while view:
                view = view[os.write(self._handoff, view) :]
            return self.pid
        except OSError:  # EPIPE: it exited (killed by someone): nothing was handed over
            return None
        finally:
            os.close(self._handoff)


def _warm(instance: Any) -> None:
    """In a standby, what every run's worker does with its instance whatever the run: build the run
    coordinator from its settings, which the run's step context reads the concurrency settings from
    (~10 ms of a worker's path to its first step, profiled)."""
    instance.get_concurrency_config()


def _warm_definitions(serialized_args: str) -> None:
    """Build the code location's repository and its jobs here, once, as the first worker did for itself:
    Dagster caches them on the ``Definitions`` object, so every later worker inherits them (~25 ms of each
    worker's start). A failure leaves each worker to build them, as before."""
    from dagster._utils.hosted_user_process import recon_job_from_origin

    with contextlib.suppress(Exception):
        job = recon_job_from_origin(deserialize_value(serialized_args, ExecuteRunArgs).job_origin)
        repository = job.get_repository_definition()
        if repository is not None:
            repository.get_all_jobs()


def _become_worker(reply_to: int) -> None:
    """In a forked child: none of the server's plumbing (signals, its stdin, its reply pipe)."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # steps wait for their subprocesses (ffmpeg ...)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.close(reply_to)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    compute_logs.stop_mirroring()  # steps' output to their log files only (runtime/compute_logs.py)
    sqlite_engines.hold_connections()  # a connection per file for the worker's life, not per event


def _worker(serialized_args: str, reply_to: int) -> None:
    """In the forked child: a run worker with the server's imports and none of its plumbing."""

    def body() -> int:
        _become_worker(reply_to)
        process_tree.name_this_process(WORKER_NAME)
        return execute_run(serialized_args)

    _exit_with(body)


def _exit_with(body: Callable[[], int], quiet: tuple[type[BaseException], ...] = ()) -> NoReturn:
    """In a forked child: run ``body``, then exit with its code (1 if it raised; the traceback printed
    unless the exception is one of ``quiet``), never returning into the server's loop."""
    code = 1
    try:
        code = body()
    except quiet:
        pass
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sqlite_engines.close_all()  # the held connections' last close checkpoints their files
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _standby(previous_request: str, reply_to: int, handoff: int) -> None:
    """In the forked child: open the instance ``previous_request`` names, wait for a request on
    ``handoff``, run it (with that instance if the request names the same one), exit."""
    from dagster._cli.utils import get_instance_for_cli
    from dagster._core.instance import DagsterInstance
    from dagster._core.secrets.env_file import get_env_var_dict
    from dagster._utils.interrupts import capture_interrupts

    def body() -> int:
        _become_worker(reply_to)
        process_tree.name_this_process(STANDBY_NAME)
        ref = deserialize_value(previous_request, ExecuteRunArgs).instance_ref
        with contextlib.ExitStack() as stack:
            env = get_env_var_dict(os.getcwd())
            instance: DagsterInstance | None = None
            with contextlib.suppress(Exception):  # the request's worker opens it and reports the error
                instance = stack.enter_context(get_instance_for_cli(instance_ref=ref))
                _warm(instance)
            request = _read_line(handoff, size=65536)
            if not request:  # the server exited: no run for this one
                return 0
            process_tree.name_this_process(WORKER_NAME)
            args = deserialize_value(request.decode(), ExecuteRunArgs)
            if instance is None or args.instance_ref != ref or get_env_var_dict(os.getcwd()) != env:
                stack.close()
                return execute_run(request.decode())
            with capture_interrupts():
                return _run(args, instance)

    # A Ctrl-C of the group while it waited exits quietly (one during a run is the run's, as in any worker).
    _exit_with(body, quiet=(KeyboardInterrupt,))


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2:])
