#!/usr/bin/env bash
# Set up (virtualenv + install with the dev tools) and run the test suite. Extra arguments go to pytest.
. "$(dirname "$0")/setup.sh" dev

# Two tests need a Debian package besides Python: tests/test_ui.py drives chromium through playwright
# (never `playwright install`), tests/test_client_auth.py runs the deploy/proxy/ nginx configuration.
# Installed once where apt-get can (as root); elsewhere those tests are skipped.
install_debian() {  # install_debian <executable> <package>
  [ -x "$1" ] && return 0
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$2" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "$2" >/dev/null 2>&1; } ||
    echo "test.sh: could not install $2; the tests that need it will be skipped" >&2
}
install_debian /usr/bin/chromium chromium
install_debian /usr/sbin/nginx nginx-light

exec .venv/bin/python -m pytest "$@"
