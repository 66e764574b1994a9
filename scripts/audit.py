"""CI's dependency audit: fail on known vulnerabilities that have a fixed release, report the others.

``pip-audit`` fails on every known vulnerability, fixed or not; a build cannot act on one with no fix, so
this runs it for JSON and decides: exit 1 if any installed package has a vulnerability with a fix version
(upgrade it, or pin around it with a reason), else 0. The project itself (installed editable) is skipped:
it is not on the index. Usage: ``.venv/bin/python scripts/audit.py`` (from .ci/run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    command = [str(pip_audit), "--local", "--skip-editable", "--progress-spinner", "off", "--format", "json"]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(f"pip-audit failed (exit {result.returncode}): {result.stderr.strip()}", file=sys.stderr)
        return 2
    fixable = 0
    for package in report.get("dependencies", []):
        for vuln in package.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            fixable += bool(fixes)
            verdict = f"fixed in {', '.join(fixes)}" if fixes else "no fix yet (reported, not failing)"
            print(f"{package['name']} {package['version']}: {vuln['id']} {verdict}")
    audited = len(report.get("dependencies", []))
    print(f"pip-audit: {audited} packages, {fixable} vulnerabilities with a fix")
    return 1 if fixable else 0


if __name__ == "__main__":
    sys.exit(main())
