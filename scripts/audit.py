"""CI's dependency audit: fail on known vulnerabilities that have a fixed release, report the others.

``pip-audit`` fails on every known vulnerability, fixed or not; a build cannot act on one with no fix, so
this runs it for JSON and decides: exit 1 if any installed package has a vulnerability with a fix version
(upgrade it, or pin around it with a reason), else 0. The project itself (installed editable) is skipped:
it is not on the index.

A package pip-audit could not check (the advisory service unreachable, or the package unknown to it) is
reported as **not audited**, by count and by name, and never counted as clean: "0 vulnerabilities" is said
only of packages that were checked. Not audited does not fail the build: CI must not depend on reaching a
service this machine may not reach; the count in CI's output says how much the verdict covers.
Usage: ``.venv/bin/python scripts/audit.py`` (from .ci/run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def verdict(report: Mapping[str, Any]) -> tuple[list[str], int]:
    """The lines to print for pip-audit's JSON ``report``, and the exit status (1: a vulnerability with a
    fix)."""
    lines: list[str] = []
    fixable = 0
    audited: list[str] = []
    skipped: list[str] = []
    for package in report.get("dependencies", []):
        if package.get("skip_reason") or "vulns" not in package:
            skipped.append(str(package.get("name", "?")))
            continue
        audited.append(package["name"])
        for vuln in package["vulns"]:
            fixes = vuln.get("fix_versions") or []
            fixable += bool(fixes)
            state = f"fixed in {', '.join(fixes)}" if fixes else "no fix yet (reported, not failing)"
            lines.append(f"{package['name']} {package['version']}: {vuln['id']} {state}")
    if skipped:
        lines.append(
            f"pip-audit: NOT AUDITED: {len(skipped)} packages could not be checked: {', '.join(skipped)}"
        )
    lines.append(
        f"pip-audit: {len(audited)} packages audited, {len(skipped)} not audited, "
        f"{fixable} vulnerabilities with a fix"
    )
    return lines, 1 if fixable else 0


def main() -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    command = [str(pip_audit), "--local", "--skip-editable", "--progress-spinner", "off", "--format", "json"]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit failed (exit {result.returncode}): {result.stderr.strip()}", file=sys.stderr)
        return 2
    lines, status = verdict(report)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
