"""scripts/audit.py's verdict on pip-audit's JSON: a package that could not be checked is never clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from offload.paths import PROJECT_ROOT


def audit_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_script", Path(PROJECT_ROOT) / "scripts" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def skipped(name: str, version: str) -> dict[str, str]:
    # What pip-audit writes when the advisory service could not be asked about a package.
    return {
        "name": name,
        "skip_reason": f"Dependency not found on PyPI and could not be audited: {name} ({version})",
    }


def test_packages_that_could_not_be_audited_are_reported_by_name_and_count_never_as_clean() -> None:
    report = {"dependencies": [skipped("alembic", "1.20.1"), skipped("httpx", "0.28.1")]}

    lines, status = audit_script().verdict(report)

    assert lines[-1] == "pip-audit: 0 packages audited, 2 not audited, 0 vulnerabilities with a fix"
    assert "NOT AUDITED: 2 packages could not be checked: alembic, httpx" in "\n".join(lines)
    assert status == 0  # CI does not depend on reaching the advisory service; the count says what was covered


def test_audited_packages_and_fixable_vulnerabilities() -> None:
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.4", "vulns": [{"id": "GHSA-1", "fix_versions": ["3.1.5"]}]},
            {"name": "pyyaml", "version": "6.0.2", "vulns": [{"id": "PYSEC-2", "fix_versions": []}]},
            {"name": "idna", "version": "3.10", "vulns": []},
            skipped("amqp", "5.4.2"),
        ]
    }

    lines, status = audit_script().verdict(report)

    assert "jinja2 3.1.4: GHSA-1 fixed in 3.1.5" in lines
    assert "pyyaml 6.0.2: PYSEC-2 no fix yet (reported, not failing)" in lines
    assert lines[-1] == "pip-audit: 3 packages audited, 1 not audited, 1 vulnerabilities with a fix"
    assert status == 1
