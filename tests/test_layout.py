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


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every absolute module ``path`` imports, with its line (relative imports stay inside their package)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_benchmarks_do_not_import_the_test_suite() -> None:
    """A benchmark runs without the test files: what both need lives in ``benchmarks/support``."""
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {module}"
        for path in sorted((ROOT / "benchmarks").rglob("*.py"))
        for line, module in imported_modules(path)
        if module == "tests" or module.startswith("tests.")
    ]
    assert offenders == [], "move what benchmarks need into benchmarks/support: " + ", ".join(offenders)


def test_the_import_scan_sees_test_imports() -> None:
    """The scan finds ``tests`` imports where they exist, so an empty result above means something."""
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    assert any(module.startswith("tests.") for path in tests for _, module in imported_modules(path))
