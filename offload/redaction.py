"""Secrets out of text: what every log line, error and UI string goes through (``offload.log`` writes with
it, the client checks payloads with it). Dagster-free, so the thin client carries it.

Values of configured secrets (environment variables named like keys, secrets, tokens or passwords, and
passwords inside URLs) are replaced with ``***``: as they are, in any letter case, and encoded as a hostile
server might echo them (base64 at any offset, hex, URL-encoded, JSON-escaped). Values of
``password=``/``token=``-style query parameters are masked whatever they hold.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
from collections.abc import Mapping
from urllib.parse import quote, quote_plus

SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIALS?)$", re.I)
# The scheme is at most 32 characters: unbounded, a long run of letters without "://" made every search
# quadratic (a 3 MiB string in a payload took minutes to check); with the bound, a scheme preceded by more
# letters is still found, from one of its last 32 characters.
URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]{0,31}://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
# A query or form parameter whose name says it holds a credential: its value is masked, known or not. The
# name starts where a run of name characters starts (a start inside a run, after a ".", made a long dotted
# line quadratic to mask: 40 KB of "a." took 30 s).
SECRET_PARAM = re.compile(
    r"(?P<name>(?<![\w.\-])[\w.-]*(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|signature)=)"
    r"(?P<value>[^&#\s\"'<>]+)",
    re.I,
)
MASK = "***"
_MIN_SECRET_LEN = 6  # shorter values would mask ordinary words


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values worth hiding: whole values of secret-named variables, and passwords inside any URL value."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LEN:
            found.add(value)
        for match in URL_PASSWORD.finditer(value):
            if len(match["pw"]) >= 3:
                found.add(match["pw"])
    return sorted(found, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every configured secret (in any of its encodings, see the module docstring), every URL
    password and every credential-named query value replaced by ``***``."""
    if "://" in text:  # the cheap test first: most text holds no URL
        text = URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = SECRET_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
    values = tuple(secret_values(environ))
    if values:
        exact, any_case = _secret_patterns(values)
        text = any_case.sub(MASK, exact.sub(MASK, text))
    return text


def holds_secret(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``text`` carries a password inside a URL or a configured secret (in any encoding ``redact``
    knows). Credential-named query parameters alone do not count: a presigned URL is a legitimate input."""
    if "://" in text and URL_PASSWORD.search(text):
        return True
    values = tuple(secret_values(environ))
    if not values:
        return False
    exact, any_case = _secret_patterns(values)
    return bool(exact.search(text) or any_case.search(text))


def _base64_fragments(value: bytes) -> set[str]:
    """The base64 text that ``value`` becomes wherever it sits in a longer encoded string.

    Base64 packs 3 bytes into 4 characters, so the secret's characters depend on its offset modulo 3; for
    each offset, the characters made of the secret's bits alone (not of its neighbours') are kept.
    """
    fragments = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + value).decode()
        start = -(-offset * 8 // 6)  # the first character made only of the secret's bits
        end = (offset + len(value)) * 8 // 6  # past the last one
        fragment = encoded[start:end]
        if len(fragment) >= _MIN_SECRET_LEN:
            fragments |= {fragment, fragment.translate(str.maketrans("+/", "-_"))}  # and URL-safe base64
    return fragments


@functools.lru_cache(maxsize=8)
def _secret_patterns(values: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Two alternations over ``values`` and their encodings: base64 (letter case matters), and the rest
    (the value itself, JSON-escaped as StepLog writes fields, URL-encoded, hex: in any letter case)."""
    exact: set[str] = set()
    any_case: set[str] = set()
    for value in values:
        raw = value.encode()
        exact |= _base64_fragments(raw)
        any_case |= {value, json.dumps(value)[1:-1], quote(value, safe=""), quote_plus(value), raw.hex()}

    def alternation(items: set[str], flags: int) -> re.Pattern[str]:
        if not items:
            return re.compile(r"(?!)")  # matches nothing (an empty alternation would match everywhere)
        # The longest first: a secret inside another is masked whole.
        ordered = sorted(items, key=len, reverse=True)
        return re.compile("|".join(re.escape(item) for item in ordered), flags)

    return alternation(exact, 0), alternation(any_case, re.I)
