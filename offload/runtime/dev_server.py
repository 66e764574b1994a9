"""``offload dev``: ``dagster dev`` whose webserver serves the UI behind ``offload.runtime.ui_guard.UIGuard``.

``dagster dev`` starts three things: code servers, the daemon, and ``python -m dagster_webserver <args>``.
``main`` runs Dagster's own dev command in this process with one change: that webserver command becomes
``python -m offload.runtime.dev_server <same args>``, which is dagster-webserver's own command line with the
app it builds wrapped in the guard, and the batch creator (offload/runtime/batch_creator.py) started beside
it. Everything else (daemon, code servers, shutdown, options) is Dagster's code, unchanged.

Both hooks are checked: if a Dagster upgrade renames what they replace, or ``dagster dev`` starts its
daemon without having started the webserver through the hook, ``offload dev`` stops with an error instead of
serving an unguarded UI.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from typing import Any

WEBSERVER_MODULE = "dagster_webserver"
DAEMON_MODULE = "dagster._daemon"


class UnguardedWebserverError(RuntimeError):
    """Dagster no longer starts or builds its webserver the way offload's hooks expect."""


def _hook(module: Any, name: str) -> Any:
    original = getattr(module, name, None)
    if original is None:
        raise UnguardedWebserverError(
            f"{module.__name__}.{name} is gone (Dagster upgraded?): offload dev will not serve an"
            " unguarded UI"
        )
    return original


def _hosts_or_exit() -> frozenset[str]:
    """The UI's allowed Host names; a bad ``OFFLOAD_UI_URL`` is one line on stderr and exit status 2."""
    from offload.runtime.ui_guard import allowed_hosts

    try:
        return allowed_hosts()
    except ValueError as error:
        print(f"offload dev: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str]) -> None:
    """Run ``dagster dev <argv>`` with the webserver process swapped for the guarded one."""
    import dagster._cli.dev as dagster_dev
    from dagster._cli import ENV_PREFIX, cli

    _hosts_or_exit()  # before anything starts

    start_process = _hook(dagster_dev, "open_ipc_subprocess")
    guarded = []

    def open_process(parts: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        parts = list(parts)
        if parts[1:3] == ["-m", WEBSERVER_MODULE]:
            parts = [parts[0], "-m", __name__, *parts[3:]]
            guarded.append(parts)
        elif parts[1:3] == ["-m", DAEMON_MODULE] and not guarded:
            raise UnguardedWebserverError(
                "dagster dev started its daemon before a webserver offload could guard: not starting"
            )
        return start_process(parts, **kwargs)

    dagster_dev.open_ipc_subprocess = open_process
    cli.main(args=["dev", *argv], prog_name="offload", auto_envvar_prefix=ENV_PREFIX)


def serve_webserver() -> None:
    """dagster-webserver's command line (``sys.argv``), its app wrapped in ``UIGuard`` and ``UITagPins``
    (offload/runtime/ui_tag_pins.py: the runs list shows a run's own tags, not offload's)."""
    import dagster_webserver.cli as webserver_cli

    from offload.runtime import batch_creator
    from offload.runtime.ui_guard import UIGuard
    from offload.runtime.ui_tag_pins import TagKeys, UITagPins

    hosts = _hosts_or_exit()
    create_app = _hook(webserver_cli, "create_app_from_workspace_process_context")

    def create_guarded_app(*args: Any, **kwargs: Any) -> UIGuard:
        context = args[0] if args else kwargs["workspace_process_context"]
        instance = context.instance
        app = UIGuard(UITagPins(create_app(*args, **kwargs), TagKeys(instance.get_run_tag_keys)), hosts)
        # The runs of ``Client.batch_trigger``'s batches are made here, beside the workspace the webserver
        # holds (offload/runtime/batch_creator.py).
        batch_creator.start(instance, context.create_request_context)
        return app

    # The guard is an ASGI app like the Starlette app it wraps, which is all uvicorn.run asks of it.
    webserver_cli.create_app_from_workspace_process_context = create_guarded_app  # type: ignore[assignment]
    webserver_cli.main()


if __name__ == "__main__":
    serve_webserver()
