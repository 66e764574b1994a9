#!/usr/bin/env bash
# Set up (virtualenv + install with the dev tools) and run the test suite. Extra arguments go to pytest.
. "$(dirname "$0")/setup.sh" dev
exec .venv/bin/python -m pytest "$@"
