#!/usr/bin/env bash
# Set up (virtualenv + install with the dev tools) and run the test suite. Extra arguments go to pytest.
. "$(dirname "$0")/setup.sh" dev
# tests/test_ui.py drives Debian's chromium through playwright (never `playwright install`): install it once
# where apt-get can (as root); elsewhere that test is skipped.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium >/dev/null 2>&1; } ||
    echo "test.sh: could not install chromium; tests/test_ui.py will be skipped" >&2
fi
exec .venv/bin/python -m pytest "$@"
