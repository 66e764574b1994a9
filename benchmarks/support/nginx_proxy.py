"""deploy/proxy/ run for real: the nginx configuration rendered as the official image renders it, with the
users script the image runs first, on a free loopback port, in front of a given upstream.

``run_proxy(root, upstream, htpasswd, tokens)`` yields the running proxy's port; the error log (where nginx
says which user it checked) is ``root / "error.log"``. ``template`` swaps in another configuration text
(a benchmark's baseline).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from benchmarks.support import services
from benchmarks.support.waiting import free_port, wait_for

DEPLOY = Path(__file__).parents[2] / "deploy" / "proxy"
TEMPLATE = DEPLOY / "templates" / "offload.conf.template"
USERS_SCRIPT = DEPLOY / "40-offload-users.sh"


def nginx_executable() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def render(template: str, values: dict[str, str]) -> str:
    """What the nginx image's envsubst step does: ``${NAME}`` for the variables it is given, nothing else."""
    rendered = re.sub(r"\$\{(\w+)\}", lambda m: values.get(m[1], m[0]), template)
    assert "${" not in rendered, "every ${NAME} in the template must be one the deployment sets"
    return rendered


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def run_proxy(
    root: Path, upstream: str, htpasswd: str, tokens: str, ui_url: str, template: str | None = None
) -> Iterator[int]:
    nginx = nginx_executable()
    assert nginx is not None, "nginx is not installed"
    secrets, state = root / "secrets", root / "state"
    secrets.mkdir(parents=True)
    (secrets / "htpasswd").write_text(htpasswd)
    (secrets / "bearer-tokens.map").write_text(tokens)
    subprocess.run(
        ["sh", str(USERS_SCRIPT)],
        env={
            "PATH": "/usr/bin:/bin",
            "OFFLOAD_PROXY_SECRETS": str(secrets),
            "OFFLOAD_PROXY_STATE": str(state),
        },
        check=True,
        timeout=30,
    )
    port = free_port()
    values = {
        "OFFLOAD_PROXY_LISTEN": f"127.0.0.1:{port}",
        "OFFLOAD_WEBSERVER_UPSTREAM": upstream,
        "OFFLOAD_PROXY_SECRETS": str(secrets),
        "OFFLOAD_UI_URL": ui_url,
        "OFFLOAD_PROXY_STATE": str(state),
    }
    (root / "offload.conf").write_text(render(template or TEMPLATE.read_text(), values))
    temp = "\n".join(
        f"    {kind}_temp_path {root / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (root / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # workers must read the secrets in this private tmp
        + f"daemon off;\nworker_processes 1;\npid {root / 'nginx.pid'};\n"
        + f"error_log {root / 'error.log'} info;\nevents {{ worker_connections 64; }}\n"
        + f"http {{\n    access_log {root / 'access.log'};\n{temp}\n"
        + f"    include {root / 'offload.conf'};\n}}\n"
    )
    args = [nginx, "-p", str(root), "-c", str(root / "nginx.conf")]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    service = services.Service("nginx", args, {"PATH": "/usr/sbin:/usr/bin:/bin"}, root / "nginx.log")
    service.start()
    try:
        wait_for(lambda: _accepts(port), 20, "nginx to listen")
        yield port
    finally:
        service.stop()
