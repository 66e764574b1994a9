"""offload.process_tree with real processes: a child started by ``popen`` dies when its parent is killed
(nobody watching), when its parent is interrupted inside the ``with`` block, and ``kill_tree`` ends a
worker, its descendants and a process left behind in a descendant's group."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from benchmarks.support.waiting import wait_for
from offload import process_tree

# A parent that starts ``sleep 600`` through process_tree.popen, prints the child's pid, then waits on it.
PARENT = """
import sys
from offload import process_tree
with process_tree.popen(["sleep", "600"]) as child:
    print(child.pid, flush=True)
    child.wait()
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids the test started or learned of; each is killed at the end if still there."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


def start_parent(started: list[int]) -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    started.append(parent.pid)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    started.append(child)
    return parent, child


def test_child_dies_when_its_parent_is_killed(started):
    parent, child = start_parent(started)
    assert os.getpgid(child) == child  # a group of its own
    parent.kill()
    parent.wait(timeout=10)
    wait_for(lambda: gone(child), 10, "the child to die with its parent")


def test_child_is_killed_when_its_parent_is_interrupted(started):
    parent, child = start_parent(started)
    parent.send_signal(signal.SIGINT)  # KeyboardInterrupt inside the with block, as Dagster's interrupt
    parent.wait(timeout=10)
    assert gone(child)  # killed before the parent left the block, not left running


def test_kill_tree_ends_descendants_and_their_groups(started, tmp_path):
    # worker -> sh (a group of its own) -> an orphan left in sh's group by a subshell that exited
    orphan_file = tmp_path / "orphan"
    worker = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"subprocess.Popen(['sh', '-c', '(sleep 600 & echo $! > {orphan_file}); exec sleep 600'],"
         " start_new_session=True)\ntime.sleep(600)"],
    )  # fmt: skip
    started.append(worker.pid)
    orphan = int(wait_for(lambda: orphan_file.exists() and orphan_file.read_text().strip(), 30, "the orphan"))
    started.append(orphan)
    shell = wait_for(lambda: psutil.Process(worker.pid).children(), 30, "the shell")[0].pid
    started.append(shell)
    assert orphan not in [p.pid for p in psutil.Process(worker.pid).children(recursive=True)]
    killed = process_tree.kill_tree(psutil.Process(worker.pid))
    worker.wait(timeout=10)
    assert {p.pid for p in killed} >= {worker.pid, shell}
    wait_for(lambda: gone(shell) and gone(orphan), 10, "the shell and the orphan in its group to die")
