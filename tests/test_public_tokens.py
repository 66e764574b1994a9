"""Public access tokens (offload/client/tokens.py) as pure functions, and the gateway's access-log mask."""

import logging

import pytest

from offload.client.tokens import InvalidTokenError, create_public_token, verify_public_token
from offload.exceptions import ConfigurationError
from offload.webhooks.realtime import _MaskTokens

SECRET = "s" * 32


def test_a_token_grants_its_runs_and_tags_until_it_expires():
    token = create_public_token(runs=["a"], tags={"user_id": "u1"}, expires="15m", secret=SECRET)
    grant = verify_public_token(token, secret=SECRET)
    assert grant.allows("a", {})
    assert grant.allows("b", {"user_id": "u1"})
    assert not grant.allows("b", {"user_id": "u2"})
    with pytest.raises(InvalidTokenError, match="expired"):
        verify_public_token(token, secret=SECRET, now=grant.expires_at)


@pytest.mark.parametrize("token", [None, "", "garbage", "x.y"])
def test_missing_or_malformed_tokens_are_refused(token):
    with pytest.raises(InvalidTokenError):
        verify_public_token(token, secret=SECRET)


def test_a_changed_claim_or_another_secret_breaks_the_signature():
    token = create_public_token(runs=["a"], secret=SECRET)
    claims, signature = token.rsplit(".", 1)
    forged = create_public_token(runs=["b"], secret=SECRET).rsplit(".", 1)[0] + "." + signature
    for bad in (forged, claims + "." + signature[::-1]):
        with pytest.raises(InvalidTokenError, match="bad signature"):
            verify_public_token(bad, secret=SECRET)
    with pytest.raises(InvalidTokenError, match="bad signature"):
        verify_public_token(token, secret="t" * 32)


def test_bad_arguments_get_one_line_naming_the_rule(monkeypatch):
    with pytest.raises(ValueError, match="give runs"):
        create_public_token(secret=SECRET)
    with pytest.raises(ValueError, match="expires: '2y'"):
        create_public_token(runs=["a"], expires="2y", secret=SECRET)
    with pytest.raises(ValueError, match="7-day limit"):
        create_public_token(runs=["a"], expires="8d", secret=SECRET)
    monkeypatch.setenv("OFFLOAD_REALTIME_SECRET", "short")
    with pytest.raises(ConfigurationError, match="OFFLOAD_REALTIME_SECRET: must be set"):
        create_public_token(runs=["a"])


def test_the_access_log_never_shows_a_token():
    token = create_public_token(runs=["a"], secret=SECRET)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/realtime/runs/a?token={token}", "1.1", 200), None,
    )  # fmt: skip
    assert _MaskTokens().filter(record)
    assert token not in record.getMessage() and "token=***" in record.getMessage()
