"""``offload queues``: see and change queue limits at run time, without a deploy.

    offload queues set NAME LIMIT [--per-key]   # LIMIT runs of queue NAME at once (per key with --per-key)
    offload queues clear NAME [--per-key]       # back to the limit NAME declares in code
    offload queues list                         # the limits set at run time

Works on the instance in ``DAGSTER_HOME`` (the embedded one by default; production: the same
``dagster.yaml`` the services use), the same store the client's ``set_queue_limit`` writes through the
webserver (offload/runtime/queues.py). The daemon applies a change on its next look at the queue.
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg

from offload.runtime import queues


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="offload queues", description="Queue limits set at run time.")
    commands = parser.add_subparsers(dest="command", required=True)
    set_ = commands.add_parser("set", help="set a queue's limit")
    set_.add_argument("name")
    set_.add_argument("limit", type=int)
    set_.add_argument("--per-key", action="store_true", help="the limit per concurrency key")
    clear = commands.add_parser("clear", help="back to the limit the queue declares")
    clear.add_argument("name")
    clear.add_argument("--per-key", action="store_true")
    commands.add_parser("list", help="the limits set at run time")
    args = parser.parse_args(argv)
    try:
        with dg.DagsterInstance.get() as instance:
            if args.command == "set":
                queues.set_limit(instance, args.name, args.limit, per_key=args.per_key)
                print(f"queue {args.name}: {args.limit}{' per key' if args.per_key else ''}")
            elif args.command == "clear":
                queues.clear_limit(instance, args.name, per_key=args.per_key)
                print(f"queue {args.name}: the declared limit{' per key' if args.per_key else ''}")
            else:
                for pool, limit in sorted(queues.read_limits(instance).items()):
                    kind, _, name = pool.removeprefix("offload.").partition(".")
                    print(f"{name}\t{limit}{' per key' if kind == 'key' else ''}")
    except ValueError as error:
        print(f"offload queues: {error}", file=sys.stderr)
        return 2
    return 0
