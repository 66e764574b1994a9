"""``dagster-daemon run`` for a test: started in a session of its own (Dagster maps SIGTERM to its SIGINT
handler, which a background process started without job control ignores), stopped by its process group,
so the code server and run workers it started go with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def running_daemon(
    definitions: Path, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    daemon = Path(sys.executable).with_name("dagster-daemon")
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(daemon), "run", "-f", str(definitions)],
            cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            yield process
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)  # the group this process leads: it and its children
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
