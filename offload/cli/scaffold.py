"""``offload new job NAME``: write a new job from the template, ready to run and tested as generated.

Three files, each refused if it exists already (nothing is written then):

- ``pipelines/custom/NAME.py``: a payload model with field rules, two steps under the project's default
  retry policy, a declared result and the job, registered because every module of ``pipelines/custom/`` is
  loaded into the code location (``pipelines/__init__.py``);
- ``examples/NAME.yaml``: an example payload, for ``offload job execute -c``;
- ``tests/test_NAME.py``: runs the example to its result, checks a bad payload's one-line error, and that the
  job is in the code location.

The job is the shape of the built-in small jobs (``pipelines/hello_world.py``, ``pipelines/typed_task.py``),
and docs/jobs.md shows the template's output verbatim (tests/test_docs.py compares them). Trigger.dev users
look for ``init``: offload is a project you clone and run beside your app (the app only needs the client),
so ``offload init`` only says how to start (``bash scripts/demo.sh``) and how to add a job.
"""

from __future__ import annotations

import argparse
import keyword
import re
import sys
from pathlib import Path
from string import Template

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
NAME_RULE = "must be 1-32 characters of a-z, 0-9 and '_', starting with a letter (a Python name)"

JOB_TEMPLATE = Template('''\
"""``$name``: TODO say what it does and who triggers it.

Written by ``offload new job $name``; docs/jobs.md explains each part.
"""

from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from offload.keys import id_rule
from offload.log import StepLog
from offload.payload import payload_mapping
from offload.result import job_result
from offload.retry import retrying
from offload.runtime.concurrency import Queue

JOB = "$name"
QUEUE = Queue(JOB)  # limits, e.g. Queue(JOB, key_field="user_id", key_limit=1): docs/concurrency.md


class Payload(dg.Config):
    """What a trigger sends: checked before the run starts, one line per bad field."""

    user_id: str = Field(description="1-64 of A-Z a-z 0-9 _ -")
    items: list[str] = Field(min_length=1, max_length=100, description="1-100 items")

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return id_rule(value)


@dg.op(name=f"{JOB}_prepare")  # op names are unique in the code location: prefix them
@retrying()  # the project default: 3 attempts, waits from 1 s doubling, capped at 10 s
def prepare(context: dg.OpExecutionContext, config: Payload) -> dict[str, Any]:
    StepLog(context).info("prepared", {"items": len(config.items)})
    return {"user_id": config.user_id, "items": sorted(set(config.items))}


@dg.op(name=f"{JOB}_finish")
@retrying()
def finish(prepared: dict[str, Any]) -> dg.Output[dict[str, Any]]:
    return job_result({**prepared, "count": len(prepared["items"])})  # the run's output


@dg.job(
    config=payload_mapping(Payload, lambda p: {"ops": {prepare.name: {"config": p.model_dump()}}}),
    tags=QUEUE.job_tags(),
)
def $name() -> None:
    finish(prepare())
''')

EXAMPLE_TEMPLATE = Template("""\
# Payload of $name (checked before the run starts):
#   .venv/bin/offload job execute -f definitions.py -j $name -c examples/$name.yaml
# or from your app: Client().trigger("$name", {"user_id": "user_7", "items": ["b", "a", "b"]})
user_id: user_7
items: [b, a, b]
""")

TEST_TEMPLATE = Template('''\
"""The job as generated: its example payload runs to its result, a bad payload is refused with one line
per bad field, and the job is registered in the code location."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import pipelines.custom.$name as job
from offload.payload import payload_errors

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / f"{job.JOB}.yaml"


def test_example_payload_runs_to_its_result():
    payload = yaml.safe_load(EXAMPLE.read_text())
    result = job.$name.execute_in_process(run_config=payload)
    assert result.output_for_node(job.finish.name) == {"user_id": "user_7", "items": ["a", "b"], "count": 2}


def test_bad_payload_names_the_field():
    with pytest.raises(ValidationError) as caught:
        job.Payload(user_id="a/b", items=[])
    assert payload_errors(caught.value) == [
        "user_id = 'a/b': must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
        "items = []: List should have at least 1 item after validation, not 0",
    ]


def test_registered_in_the_code_location():
    from definitions import defs

    assert defs.get_job_def(job.JOB).name == job.JOB
''')


class ScaffoldError(ValueError):
    """A one-line reason why nothing was written."""


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(f"name = {name!r}: {NAME_RULE}")
    return name


def job_files(name: str) -> dict[str, str]:
    """The files ``offload new job NAME`` writes, by path relative to the project root."""
    check_name(name)
    fields = {"name": name}
    return {
        f"pipelines/custom/{name}.py": JOB_TEMPLATE.substitute(fields),
        f"examples/{name}.yaml": EXAMPLE_TEMPLATE.substitute(fields),
        f"tests/test_{name}.py": TEST_TEMPLATE.substitute(fields),
    }


def existing_job_names() -> set[str]:
    """Names of the jobs in the installed code location's ``pipelines`` (a new job must not reuse one)."""
    import pipelines

    return {job.name for job in pipelines.defs.jobs or ()}


def new_job(name: str, root: Path, taken: set[str] | None = None) -> list[Path]:
    """Write the job's files under ``root``; ``ScaffoldError`` (and nothing written) if any is in the way."""
    files = job_files(name)
    if name in (existing_job_names() if taken is None else taken):
        raise ScaffoldError(f"name = {name!r}: a job of that name exists already")
    if not (root / "pipelines").is_dir():
        raise ScaffoldError(f"{root}: not an offload project (no pipelines/); run it in the project's root")
    in_the_way = [path for path in files if (root / path).exists()]
    if in_the_way:
        raise ScaffoldError(f"{in_the_way[0]} exists already; nothing written")
    written = []
    package = root / "pipelines" / "custom" / "__init__.py"
    if not package.exists():  # a project from before pipelines/custom/ existed
        package.parent.mkdir(parents=True, exist_ok=True)
        package.write_text('"""Your own jobs: every module here is registered in the code location."""\n')
        written.append(package)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


INIT_HINT = """\
offload is a project you clone and run beside your app; there is nothing to init.
  set up and run the main job:  bash scripts/demo.sh
  add a job of your own:        .venv/bin/offload new job NAME
  trigger runs from your app:   docs/client.md"""


def main(argv: list[str]) -> int:
    """``offload new job NAME [--dir ROOT]`` and ``offload init``; returns the exit status."""
    if argv[:1] == ["init"]:
        print(INIT_HINT, file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="offload new", description="Write a new job from the template.")
    kinds = parser.add_subparsers(dest="kind", required=True)
    job = kinds.add_parser("job", help="a job in pipelines/custom/, its example payload and its test")
    job.add_argument("name", help=NAME_RULE.removeprefix("must be "))
    job.add_argument("--dir", type=Path, default=Path.cwd(), help="the project's root (default: here)")
    args = parser.parse_args(argv[1:])
    try:
        written = new_job(args.name, args.dir)
    except ScaffoldError as error:
        print(f"offload new job: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    name = args.name
    print(
        f"run its test:  .venv/bin/python -m pytest -q tests/test_{name}.py\n"
        f"run it:        .venv/bin/offload job execute -f definitions.py -j {name} -c examples/{name}.yaml\n"
        f'trigger it:    Client().trigger("{name}", {{"user_id": "user_7", "items": ["a"]}})'
    )
    return 0
