"""Child processes that never outlive the process (and the run worker) that started them.

Why: a plain ``subprocess.Popen`` child keeps running when its parent dies. A run worker killed during
``transcode[mp4]`` left its ``ffmpeg`` writing the output file for half a minute while the resumed run's
``transcode[mp4]`` wrote the same file: the upload got a corrupt MP4 (issue 13).

* :func:`popen` starts a child in a process group of its own (so it and whatever it starts can be ended
  with one ``killpg``) with ``PR_SET_PDEATHSIG`` = SIGKILL: the kernel kills it the moment the thread
  that started it exits, however that thread's process died (``kill -9``, OOM), with nobody watching.
  It must be waited for in the thread that started it (a step waits for its ffmpeg: it does). If the
  parent died between the fork and the ``prctl``, the child kills itself at once. Leaving the ``with``
  block by an exception (Dagster's interrupt on cancel or max runtime) kills the group before waiting,
  where ``Popen.__exit__`` alone would wait for the child to finish.
* :func:`run` is :func:`popen` run to its end (``subprocess.run(..., check=True)`` without output capture).
* :func:`kill_tree` is what the launcher uses to end a run worker: the worker, every descendant, and the
  process group each descendant leads. The worker is stopped (SIGSTOP) first, so it cannot start a child
  between the listing and the kill.

Linux only (``prctl``); elsewhere :func:`popen` still gives the child its own group, without pdeathsig.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psutil

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PR_SET_NAME = 15


def _prctl() -> Any:
    """libc's ``prctl``, resolved in the parent: the forked child only calls it (no dlopen after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True).prctl


_PRCTL = _prctl()


def _die_with(parent: int) -> None:
    """In the forked child, before exec: SIGKILL when the parent thread exits. Kept to two system calls
    (the parent may have other threads, whose locks the child inherits held)."""
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def name_this_process(name: str) -> None:
    """Set this process's name as ``ps``, ``top`` and ``/proc/<pid>/comm`` show it (at most 15 bytes):
    forked processes that run the same command line can be told apart by role. A no-op off Linux."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


@contextlib.contextmanager
def popen(command: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[Any]]:
    """``subprocess.Popen(command, **kwargs)`` whose child dies with this process (see the module doc).

    On an exception inside the block the child's group is killed, then reaped."""
    parent = os.getpid()
    die_with_parent = (lambda: _die_with(parent)) if _PRCTL is not None else None
    with subprocess.Popen(command, process_group=0, preexec_fn=die_with_parent, **kwargs) as process:
        try:
            yield process
        except BaseException:
            kill_group(process.pid)  # not reaped yet: its pid (the group's id) cannot have been reused
            raise


def run(command: list[str]) -> None:
    """Run ``command`` to its end as a :func:`popen` child; ``CalledProcessError`` if it fails."""
    with popen(command) as process:
        code = process.wait()
    if code != 0:
        raise subprocess.CalledProcessError(code, command)


def kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid`` (a :func:`popen` child leads its own); no error if it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def kill_tree(process: psutil.Process) -> list[psutil.Process]:
    """SIGKILL ``process``, all its descendants and the process groups they lead; the processes killed.

    The group of ``process`` itself is left alone: a forked run worker shares the daemon's group."""
    try:
        process.suspend()  # stopped, it cannot start a child between the listing and the kill
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family[1:]:  # groups first, while their leaders live (their ids cannot be reused)
        with contextlib.suppress(psutil.NoSuchProcess, OSError):
            if os.getpgid(member.pid) == member.pid:
                kill_group(member.pid)
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    return family
