"""The docs' code runs: a renamed function or module breaks this test, not the reader.

Every fenced block in README.md, docs/*.md and benchmarks/README.md is checked by its info string (the
convention is described in docs/README.md):

- ``python``: compiles, and every name it imports exists (``from offload.client import Client`` imports
  ``offload.client`` and looks ``Client`` up);
- ``python runnable``: also executed, in order, in one namespace per file (a later block sees what an earlier
  one defined), with the data directory in a temporary folder and no Dagster instance of the project's;
- ``bash``: ``bash -n`` (syntax);
- ``bash runnable``: also run with ``bash -euo pipefail`` in a throwaway copy of the project
  (``tests/support/project_copy.py``), so commands that write files write them there.

And the job that docs/jobs.md shows is exactly what ``offload new job resize_image`` writes.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from offload.cli.scaffold import job_files
from offload.paths import PROJECT_ROOT
from tests.support.project_copy import copy_env, copy_project

PAGES = sorted([PROJECT_ROOT / "README.md", *(PROJECT_ROOT / "docs").glob("*.md"),
                PROJECT_ROOT / "benchmarks" / "README.md"])  # fmt: skip
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
FLAGS = {"runnable"}


@dataclass(frozen=True)
class Snippet:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str  # "python", "bash", or another fence language (not checked)
    runnable: bool
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(PROJECT_ROOT)}:{self.line}"


def snippets(page: Path) -> list[Snippet]:
    found = []
    for token in MarkdownIt().parse(page.read_text()):
        if token.type != "fence" or token.map is None:
            continue
        language, *flags = token.info.split() or [""]
        unknown = set(flags) - FLAGS
        where = f"{page.relative_to(PROJECT_ROOT)}:{token.map[0] + 1}"
        assert not unknown, f"{where}: unknown fence flag(s) {sorted(unknown)}; known: {sorted(FLAGS)}"
        checked = LANGUAGES.get(language, language)
        assert not flags or checked in ("python", "bash"), f"{where}: only python and bash can be runnable"
        found.append(Snippet(page, token.map[0] + 1, checked, "runnable" in flags, token.content))
    return found


ALL = [snippet for page in PAGES for snippet in snippets(page)]
PYTHON = [s for s in ALL if s.language == "python"]
BASH = [s for s in ALL if s.language == "bash"]


def _check_imports(snippet: Snippet) -> None:
    for node in ast.walk(ast.parse(snippet.code)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                if alias.name != "*" and not hasattr(module, alias.name):
                    importlib.import_module(f"{node.module}.{alias.name}")  # a submodule, else it fails


@pytest.mark.parametrize("snippet", PYTHON, ids=[s.where for s in PYTHON])
def test_python_snippet_compiles_and_its_imports_exist(snippet: Snippet):
    compile(snippet.code, snippet.where, "exec")
    _check_imports(snippet)


def test_python_runnable_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OFFLOAD_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # execute_in_process then uses a throwaway instance
    monkeypatch.chdir(tmp_path)
    ran = 0
    for page in PAGES:
        namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
        for snippet in (s for s in PYTHON if s.page == page and s.runnable):
            exec(compile(snippet.code, snippet.where, "exec"), namespace)
            ran += 1
    assert ran >= 2, "the docs lost their runnable Python snippets"


@pytest.mark.parametrize("snippet", BASH, ids=[s.where for s in BASH])
def test_bash_snippet_syntax(snippet: Snippet):
    checked = subprocess.run(["bash", "-n"], input=snippet.code, capture_output=True, text=True)
    assert checked.returncode == 0, f"{snippet.where}: {checked.stderr}"


@pytest.mark.parametrize("snippet", [s for s in BASH if s.runnable],
                         ids=[s.where for s in BASH if s.runnable])  # fmt: skip
def test_bash_runnable_snippet_runs(snippet: Snippet, tmp_path: Path):
    project_copy = copy_project(tmp_path / "project")  # one per snippet: each starts from the project as is
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", snippet.code],
        cwd=project_copy, env=copy_env(project_copy), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, f"{snippet.where}:\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"


def test_docs_show_the_job_the_template_writes():
    generated = job_files("resize_image")["pipelines/custom/resize_image.py"]
    shown = [s.code for s in ALL if s.page.name == "jobs.md" and s.language == "python"]
    assert generated in shown, "docs/jobs.md must show `offload new job resize_image`'s file verbatim"
    body = generated[generated.index("JOB = ") :]
    readme = [s.code for s in ALL if s.page.name == "README.md" and s.page.parent == PROJECT_ROOT]
    assert body in readme, "README.md must show the generated job from `JOB = ` to its end, verbatim"


def _links(page: Path) -> list[str]:
    hrefs = []
    for token in MarkdownIt().parse(page.read_text()):
        for child in token.children or []:
            href = child.attrGet("href") if child.type == "link_open" else None
            if isinstance(href, str) and "://" not in href and not href.startswith("mailto:"):
                hrefs.append(href)
    return hrefs


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    tokens = MarkdownIt().parse(page.read_text())
    titles = [tokens[i + 1].content for i, token in enumerate(tokens) if token.type == "heading_open"]
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(PROJECT_ROOT)) for p in PAGES])
def test_relative_links_point_at_files_and_headings(page: Path):
    broken = []
    for href in _links(page):
        path, _, anchor = href.partition("#")
        target = (page.parent / path) if path else page
        if not target.exists() or (anchor and target.suffix == ".md" and anchor not in _anchors(target)):
            broken.append(href)
    assert not broken, f"{page.relative_to(PROJECT_ROOT)} has broken links: {broken}"


def test_readme_stays_short():
    lines = (PROJECT_ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move detail into docs/ (the README is the front page)"
