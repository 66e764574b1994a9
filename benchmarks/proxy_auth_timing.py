"""How long the proxy takes to refuse an unknown user against a known user's wrong password.

nginx's basic auth answers an unknown user name at once and hashes the password only for a known one, so
the refusal's timing tells which names exist. deploy/proxy/ checks an unknown user against a decoy with a
real user's hash instead. Both run here side by side with a bcrypt user (cost 10, what ``htpasswd -B -C 10``
writes), through the real nginx on loopback in front of a stand-in upstream:

* offload's configuration (deploy/proxy/templates/offload.conf.template);
* baseline: the same configuration with nginx's plain ``auth_basic`` in place of the decoy check.

Prints the median refusal time of each kind and the ratio unknown / known (1.0: nothing to learn).
``python -m benchmarks.proxy_auth_timing [--requests 30]``; well under a minute.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import httpx

from benchmarks.support.http_server import LocalHTTPServer, body
from benchmarks.support.nginx_proxy import TEMPLATE, run_proxy

with warnings.catch_warnings():  # deprecated, still the standard library's way to the system's bcrypt
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

USER, PASSWORD = "ops", "correct horse battery"
DIRECT = "auth_basic $offload_auth_realm;\n        auth_basic_user_file ${OFFLOAD_PROXY_SECRETS}/htpasswd;"


def refusal_times(port: int, requests: int) -> dict[str, float]:
    """Median seconds to a 401 for each kind, the kinds interleaved so load hits both alike."""
    kinds = {"known user": (USER, "wrong password"), "unknown user": ("intruder", "wrong password")}
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        for _ in range(requests):
            for kind, auth in kinds.items():
                started = time.perf_counter()
                status = http.get("/graphql", auth=auth).status_code
                times[kind].append(time.perf_counter() - started)
                assert status == 401, (kind, status)
    return {kind: statistics.median(values) for kind, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy_auth_timing", description=__doc__)
    parser.add_argument("--requests", type=int, default=30, help="refusals of each kind per configuration")
    args = parser.parse_args()
    hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**10))
    offload_conf = TEMPLATE.read_text()
    baseline_conf = offload_conf.replace("auth_request /_offload_auth;", DIRECT)
    assert baseline_conf != offload_conf
    upstream = LocalHTTPServer({"/graphql": body(b"{}")})
    with upstream, tempfile.TemporaryDirectory() as scratch:
        for name, conf in (("offload", offload_conf), ("baseline (plain auth_basic)", baseline_conf)):
            root = Path(scratch) / name.split()[0]
            with run_proxy(root, upstream.origin, f"{USER}:{hashed}\n", "", "http://127.0.0.1", conf) as port:
                medians = refusal_times(port, args.requests)
            known, unknown = medians["known user"], medians["unknown user"]
            print(
                f"{name}: known user {known * 1000:.1f} ms, unknown user {unknown * 1000:.1f} ms, "
                f"ratio unknown/known {unknown / known:.2f} (median of {args.requests})"
            )
        assert upstream.request_count == 0


if __name__ == "__main__":
    main()
