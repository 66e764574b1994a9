"""``python -m offload.webhooks serve --host 127.0.0.1 --port 3001``: the webhook gateway on uvicorn.

uvicorn runs with the gateway's abuse limits (offload/webhooks/abuse.py). One worker process (the launcher
and the group-commit writer live in it); run several behind a load balancer if one is not enough, they share
the inbox. Settings come from the environment
(docs/webhooks.md); DAGSTER_HOME defaults to the project's ``.dagster_home`` as for the ``offload`` command.
"""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from offload.cli import ensure_instance
from offload.errors import ConfigurationError
from offload.webhooks.app import create_app
from offload.webhooks.settings import GatewaySettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m offload.webhooks", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=3001, help="port (default 3001)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: it costs throughput)",
    )
    args = parser.parse_args(argv)
    # Our own log at the chosen level; the libraries' (Dagster's storage, Alembic) at warnings only.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("offload").setLevel(args.log_level.upper())
    try:
        settings = GatewaySettings.from_env()
    except ConfigurationError as error:
        sys.exit(f"configuration error: {error}")
    ensure_instance()
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
        **settings.uvicorn_options(),
    )


if __name__ == "__main__":
    main()
