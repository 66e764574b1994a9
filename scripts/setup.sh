# Sourced by demo.sh and test.sh: create .venv with Python 3.11+ and install the project into it.
# Usage: . scripts/setup.sh [extra]   (extra: "dev" installs the test and lint tools too)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "offload needs Python 3.11 or newer")'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
target="."
[ "${1:-}" = "dev" ] && target=".[dev]"
stamp=".venv/.installed-${1:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e "$target"
  touch "$stamp"
fi
