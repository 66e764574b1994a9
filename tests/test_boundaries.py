"""Architecture tests for the security boundaries that live in one place each (docs/security.md).

They read the source, not run it, so a second implementation cannot appear unnoticed:

- **outbound fetches**: only the modules listed in ``NETWORK_MODULES`` may import an HTTP client library,
  each for the reason given; low-level ones (``socket`` connects, ``urllib.request``, ``requests``) nowhere;
  FFmpeg opens files only in ``pipelines/video/media.py``;
- **ids**: the id pattern is written once, in ``offload/keys.py``; payload validators call ``id_rule``;
- **file://**: the production resource set reads no local files.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SOURCE_DIRS = ("offload", "resources", "pipelines", "sensors", "schedules", "examples")

# Who may import an HTTP client, and why. A module that fetches a URL from a payload must use
# offload.net.download.Downloader or offload.net.http.HttpClient (both through offload.net.address_policy).
NETWORK_MODULES = {
    "httpx": {
        "offload/net/address_policy.py": "the SSRF guard: builds the only client for user-supplied URLs",
        "offload/net/http.py": "fetch(): the one HTTP retry loop, over a guarded client",
        "offload/net/download.py": "Downloader: http(s) through offload.net.http.fetch and the guard",
        "offload/errors.py": "classifies httpx errors as retryable",
        "offload/client/transport.py": (
            "the client's transport to the configured webserver (not a payload URL)"
        ),
        "offload/client/api.py": "the type of the credentials it passes to offload.client.transport",
        "offload/client/asyncio.py": "the type of the credentials it passes to the client",
    },
    "httpcore": {"offload/net/address_policy.py": "the guarded network backend"},
}
# Libraries that open connections of their own, out of the guard's sight: none may be imported.
FORBIDDEN_MODULES = ("requests", "urllib.request", "urllib3", "http.client", "aiohttp", "pycurl", "httplib2")
# The connect calls of the socket module (name lookups such as gethostname are fine).
SOCKET_CONNECTS = {"create_connection", "socket", "socketpair", "fromfd"}
MEDIA_OPENERS = {"pipelines/video/media.py"}  # av.open and the ffmpeg binary read local paths only


def python_files() -> Iterator[tuple[str, ast.Module]]:
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))
    yield "definitions.py", ast.parse((ROOT / "definitions.py").read_text())


def imported_modules(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _is(module: str, name: str) -> bool:
    return module == name or module.startswith(f"{name}.")


def test_the_scan_sees_the_project() -> None:
    files = dict(python_files())
    assert {"offload/net/address_policy.py", "offload/net/download.py", "pipelines/video/media.py"} <= set(
        files
    )
    assert "httpx" in imported_modules(
        files["offload/net/address_policy.py"]
    )  # the check below would catch a move


def test_only_the_listed_modules_import_an_http_client() -> None:
    offenders = []
    for path, tree in python_files():
        modules = imported_modules(tree)
        for library, allowed in NETWORK_MODULES.items():
            if any(_is(module, library) for module in modules) and path not in allowed:
                offenders.append(
                    f"{path} imports {library}: fetch through offload.net.http / offload.net.download"
                )
        for library in FORBIDDEN_MODULES:
            if any(_is(module, library) for module in modules):
                offenders.append(f"{path} imports {library}, which connects around the SSRF guard")
    assert offenders == []


def test_no_module_opens_sockets_itself() -> None:
    offenders = []
    for path, tree in python_files():
        for node in ast.walk(tree):
            attribute = node if isinstance(node, ast.Attribute) else None
            owner = attribute.value if attribute is not None else None
            if (
                attribute
                and attribute.attr in SOCKET_CONNECTS
                and isinstance(owner, ast.Name)
                and owner.id == "socket"
            ):
                offenders.append(f"{path}:{attribute.lineno} socket.{attribute.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "socket":
                offenders += [f"{path}:{node.lineno} from socket import {a.name}" for a in node.names
                              if a.name in SOCKET_CONNECTS]  # fmt: skip
    assert offenders == []


def test_only_the_media_module_opens_media() -> None:
    offenders = []
    for path, tree in python_files():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            opens = node.func.attr == "open" and isinstance(owner, ast.Name) and owner.id == "av"
            if opens and path not in MEDIA_OPENERS:
                offenders.append(f"{path}:{node.lineno} av.open")
    assert offenders == []


# -- ids -----------------------------------------------------------------------------------------------------

# Spellings of "letters, digits, _ and -" that an id check would be written with.
ID_CLASS = re.compile(r"A-Za-z0-9_-|a-zA-Z0-9_-|A-Za-z0-9\-_|\[\\w-\]|\[-\\w\]|\\w\{1,64\}")


def test_the_id_pattern_is_written_once() -> None:
    offenders = [
        path
        for path, _ in python_files()
        if path != "offload/keys.py" and ID_CLASS.search((ROOT / path).read_text())
    ]
    assert offenders == [], "validate ids with offload.keys.id_rule / check_id, not a copy of the pattern"
    assert ID_CLASS.search((ROOT / "offload/keys.py").read_text())  # the pattern the check looks for


def test_id_fields_are_validated_with_id_rule() -> None:
    """Every payload model field named like an id (``*_id``) has a validator that calls ``id_rule``."""
    from offload.keys import ID_RULE
    from pipelines.video.payload import VideoPayload

    with pytest.raises(ValueError, match=re.escape(ID_RULE)):
        VideoPayload(
            video_url="https://example.com/a.mp4", user_id="../etc", video_id="v1", user_email="a@example.com"
        )
    for path, _ in python_files():
        if not path.endswith("payload.py") or not path.startswith("pipelines/"):
            continue
        source = (ROOT / path).read_text()
        id_fields = re.findall(r"^\s+(\w+_id): str\b", source, re.M)
        for field in id_fields:
            assert re.search(rf"field_validator\([^)]*\"{field}\"", source), f"{path}: {field} unchecked"
        if id_fields:
            assert "id_rule" in source, f"{path}: id fields must be checked with offload.keys.id_rule"


# -- file:// ----------------------------------------------------------------------------------------------


def test_production_reads_no_local_files_and_local_reads_only_the_samples(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from offload import paths
    from resources import resources_for

    monkeypatch.setenv("OFFLOAD_FILE_ROOTS", str(tmp_path))  # ignored in production
    monkeypatch.setenv("OFFLOAD_DATA_DIR", str(tmp_path / "data"))
    assert resources_for(paths.PRODUCTION)["downloader"].file_roots == []
    assert resources_for(paths.LOCAL)["downloader"].file_roots == [str(paths.samples_dir()), str(tmp_path)]


# -- who can reach the webserver --------------------------------------------------------------------------


def test_the_embedded_webserver_and_gateway_bind_loopback_by_default() -> None:
    """``offload dev`` passes its arguments to ``dagster dev``, which binds the webserver to
    dagster-webserver's default host; the gateway's ``serve`` has its own default."""
    from dagster_webserver.cli import DEFAULT_WEBSERVER_HOST

    assert DEFAULT_WEBSERVER_HOST == "127.0.0.1"
    assert "--host" not in (ROOT / "offload" / "cli" / "__init__.py").read_text()  # nothing widens it
    assert '"--host", default="127.0.0.1"' in (ROOT / "offload" / "webhooks" / "__main__.py").read_text()
