"""The layout rule for Dagster's private modules: only ``offload/runtime`` imports ``dagster._*``.

Dagster's private modules change without notice between releases; keeping them in one package makes an
upgrade a review of one folder. Tests and benchmarks may reach into Dagster's internals to set up
fixtures; the product may not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ["offload", "pipelines", "resources", "schedules", "sensors", "definitions.py"]
ALLOWED = ROOT / "offload" / "runtime"


def private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names if name.startswith("dagster._")
        ]
    return found


def product_files() -> list[Path]:
    files: list[Path] = []
    for entry in PRODUCT:
        path = ROOT / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def test_only_runtime_imports_dagster_internals() -> None:
    offenders = [
        hit for path in product_files() if ALLOWED not in path.parents for hit in private_imports(path)
    ]
    assert offenders == [], (
        "import dagster internals through offload.runtime.dagster_internals: " + ", ".join(offenders)
    )


def test_the_rule_sees_private_imports() -> None:
    """The scan finds the imports it forbids (runtime has many), so an empty result above means something."""
    hits = [hit for path in product_files() if ALLOWED in path.parents for hit in private_imports(path)]
    assert any("dagster._core" in hit for hit in hits)
