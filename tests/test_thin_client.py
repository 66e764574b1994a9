"""The thin client: ``import offload.client`` loads neither Dagster nor the code location, so a web app
needs only the client's dependencies (clients/python: httpx, sqlalchemy, itsdangerous)."""

import json
import subprocess
import sys

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


def test_the_client_reads_results_under_the_label_steps_write():
    assert runs.RESULT_LABEL == result.RESULT_LABEL
