"""moto's S3 server on 127.0.0.1 for tests that need a real S3 API over HTTP (never AWS itself)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer


@contextmanager
def moto_s3_endpoint() -> Iterator[str]:
    """Run moto's server on a port the OS picks and yield its ``http://127.0.0.1:port`` endpoint.

    ``start`` returns once the socket is bound and listening, so requests made after it queue until the
    server thread accepts them: no readiness polling is needed. Port 0 avoids a choose-then-bind race.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        yield f"http://{host}:{port}"
    finally:
        server.stop()
