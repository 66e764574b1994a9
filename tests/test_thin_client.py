"""The thin client: ``import offload.client`` loads neither Dagster nor the code location, so a web app
needs only the client's dependencies (clients/python: httpx, sqlalchemy, itsdangerous)."""

import json
import subprocess
import sys
from pathlib import Path

from offload import result
from offload.client import runs

PROBE = """
import json, sys
import offload.client
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("dagster", "pipelines", "definitions",
      "resources", "dagster_graphql", "dagster_postgres"))))
"""


def test_import_offload_client_loads_no_dagster_nor_the_code_location():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


LAZY = """
import json, sys
import offload.client
from offload.client import Client, create_public_token
print(json.dumps(sorted(m for m in ("httpx", "sqlalchemy", "asyncio", "itsdangerous") if m in sys.modules)))
"""


def test_import_defers_what_only_some_calls_need():
    """What keeps ``import offload.client`` cheap (benchmarks/realtime.py measures it): httpx loads with the
    first Client, SQLAlchemy with the first key or batch, itsdangerous with the first token, asyncio with
    AsyncClient."""
    out = subprocess.run([sys.executable, "-c", LAZY], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_the_client_reads_results_under_the_label_steps_write():
    assert runs.RESULT_LABEL == result.RESULT_LABEL


# A run as the webserver's GraphQL answers the client's run query: one attempt, completed, with metadata.
RUN = {
    "runId": "r1", "jobName": "hello_world", "status": "STARTED", "creationTime": 1.0, "startTime": 2.0,
    "endTime": None, "rootRunId": None, "parentRunId": None, "runConfig": {"name": "Ada"},
    "tags": [{"key": "offload/metadata", "value": '{"progress":40}'}], "repositoryOrigin": {"id": "x"},
}  # fmt: skip
THIN_SCRIPT = """
import importlib.util, json, sys, time
started = time.perf_counter()
import offload.client
from offload.client import AsyncClient, Client, create_public_token, verify_public_token
imported = time.perf_counter() - started
run = Client(sys.argv[1]).retrieve("r1")
token = create_public_token(runs=["r1"], expires="15m", secret="s" * 32)
assert verify_public_token(token, secret="s" * 32).runs == {"r1"}
print(json.dumps({"dagster": importlib.util.find_spec("dagster") is not None, "status": run.status.value,
                  "metadata": run.metadata, "async": AsyncClient.__name__, "import_s": imported}))
"""


def test_the_thin_client_installs_alone_and_works_without_dagster(tmp_path):
    """One command, ``pip install ./clients/python``, into a fresh venv; then retrieve, metadata and tokens
    work there, and Dagster is not even installed."""
    from benchmarks.support.http_server import LocalHTTPServer, body

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", str(root / "clients" / "python")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    runs = {"__typename": "Runs", "results": []}
    answer = json.dumps({"data": {"runOrError": {"__typename": "Run", **RUN}, "runsOrError": runs}}).encode()
    with LocalHTTPServer({"/graphql": body(answer, headers={"Content-Type": "application/json"})}) as server:
        out = subprocess.run(
            [python, "-c", THIN_SCRIPT, server.url("")], capture_output=True, text=True, cwd=tmp_path
        )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["dagster"] is False
    assert (result["status"], result["metadata"], result["async"]) == (
        "EXECUTING",
        {"progress": 40},
        "AsyncClient",
    )
