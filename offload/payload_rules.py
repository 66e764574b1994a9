"""What may be sent as a run's payload and tags: the rules the client checks before it sends anything, and
offload's run coordinator checks again where a run is created. Dagster-free, so the thin client carries it;
``offload.payload`` re-exports them with the Dagster-side payload helpers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from offload.redaction import holds_secret

MAX_PAYLOAD_BYTES = 3 * 1024 * 1024  # Trigger.dev's limit; the run config lives in the run storage and the UI
# Payload field names that say "secret". Narrower than offload.log's names for environment variables:
# payloads legitimately carry storage keys and idempotency keys.
SECRET_FIELD = re.compile(
    r"(secret|token|password|passwd|api[_-]?key|private[_-]?key|access[_-]?key|credentials?)$", re.I
)


def payload_problems(payload: Any) -> list[str]:
    """What the client refuses to send as run config, one line each (empty: fine to send): not a JSON
    object, too large, or ``secret_problems``."""
    if not isinstance(payload, Mapping):
        return ["payload: must be a JSON object (field names to values)"]
    try:
        size = len(json.dumps(payload).encode())
    except (TypeError, ValueError) as error:
        return [f"payload: must be JSON-serializable ({error})"]
    if size > MAX_PAYLOAD_BYTES:
        return [f"payload: {size:,} bytes is over the {MAX_PAYLOAD_BYTES:,}-byte limit; put large inputs in "
                "storage and pass their key"]  # fmt: skip
    return secret_problems(payload)


def secret_problems(value: Any, path: str = "", allow_env: bool = False) -> list[str]:
    """Secrets in a run's config, one line per field: a field named like a secret, a string holding a
    secret of this process's environment (in any encoding ``offload.log`` knows) or a password in a URL,
    and (unless ``allow_env``) ``{env: NAME}``, which would read the server's environment. The client
    checks a payload with these rules before sending it; offload's run coordinator checks every run with
    them where it is created (GraphQL, the Launchpad, sensors), where the server's secrets are known."""
    problems: list[str] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, Mapping):
            if set(value) == {"env"} and isinstance(value["env"], str):
                if not allow_env:
                    problems.append(
                        f"{path}: {{env: ...}} is not allowed: a payload never reads the server's environment"
                    )
                return
            for name, item in value.items():
                child = f"{path}.{name}" if path else str(name)
                if SECRET_FIELD.search(str(name)):
                    problems.append(f"{child}: looks like a secret; give secrets to the code location as "
                                    "environment variables (dg.EnvVar), never in a payload")  # fmt: skip
                else:
                    walk(child, item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(f"{path}[{index}]", item)
        elif isinstance(value, str) and holds_secret(value):
            problems.append(
                f"{path or 'payload'}: holds a secret of this app's environment or a password in a URL; "
                "secrets never go in a payload (the run config is shown in the UI)"
            )

    walk(path, value)
    return problems


def tag_problem(key: str, value: str) -> str | None:
    """Why the run tag ``key: value`` may not be set (one line), or None."""
    if holds_secret(value):
        return f"tags: {key!r} holds a secret; tags are shown in the UI"
    return None


def run_secret_problems(run_config: Mapping[str, Any], tags: Mapping[str, str]) -> list[str]:
    """``secret_problems`` and ``tag_problem`` for a run about to start. Only the top-level ``resources``
    section may read the server's environment (``{env: NAME}``): that is how Dagster binds a resource's
    secret without showing it."""
    config = dict(run_config or {})
    resources = config.pop("resources", None)
    problems = secret_problems(config)
    if resources is not None:
        problems += secret_problems(resources, "resources", allow_env=True)
    problems += [line for key, value in tags.items() if (line := tag_problem(key, value)) is not None]
    return problems


def config_error_line(message: str) -> str:
    """One of Dagster's config type errors (missing field, wrong type) as one line."""
    return message.replace("\n", " ").strip()
