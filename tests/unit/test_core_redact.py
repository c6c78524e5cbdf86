"""greenlight.core.redact: secrets of known shapes and the caller's exact values are masked; the
rest of the text is left as it was (tables of cases)."""

from __future__ import annotations

import pytest

from greenlight.core.redact import MASK, redact

# fake secrets of real shapes (none of them is or was a live credential)
SLACK = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib3QiLCJpYXQiOjE3MDAwMDAwMDB9.c2lnbmF0dXJlLXZhbHVl"
KEY_BODY = (
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Slack
        (f"SLACK_BOT_TOKEN={SLACK}", "SLACK_BOT_TOKEN=***"),
        (f"posting with {SLACK} now", "posting with xoxb-*** now"),
        ("user token xoxp-11-22-33-abcdef", "user token xoxp-***"),
        ("app xapp-1-A0B1C2-123-abcdef0123", "app xapp-***"),
        (
            "webhook https://hooks.slack.com/services/T0000/B0000/XXXXXXXXXXXXXXXXXXXXXXXX ok",
            "webhook https://hooks.slack.com/services/*** ok",
        ),
        # GitHub
        (f"cloning with {GITHUB}", "cloning with ghp_***"),
        ("gho_" + "x" * 36 + " ghs_" + "Y" * 36, "gho_*** ghs_***"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789", "github_pat_***"),
        # AWS and Google
        ("aws key AKIAIOSFODNN7EXAMPLE in env", "aws key AKIA*** in env"),
        ("session ASIAY34FZKBOKMUTVV7A", "session ASIA***"),
        ("maps key AIzaSyA-1234567890abcdefghijklmnopqrstu.", "maps key AIza***."),
        # Authorization headers and bearer tokens
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer ***"),
        ("authorization: Basic Ym90OnNlY3JldA==", "authorization: Basic ***"),
        ('headers={"Authorization": "token 0123456789abcdef"}', 'headers={"Authorization": "token ***"}'),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic ***"),
        ("curl -H 'authorization: Bearer s3cr3t-value'", "curl -H 'authorization: Bearer ***'"),
        ("retrying with bearer 0123456789abcdefXYZ", "retrying with bearer ***"),
        # URLs with user information
        ("postgresql://app:hunter2@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("fetch https://bot:p%40ss@git.example/repo.git", "fetch https://bot:***@git.example/repo.git"),
        ("redis://:onlypass@cache:6379/0", "redis://:***@cache:6379/0"),
        # key=value pairs
        ("password=hunter2 user=app", "password=*** user=app"),
        ("DB_PASSWORD='correct horse' next", "DB_PASSWORD='***' next"),
        ('{"password": "hunter2", "user": "app"}', '{"password": "***", "user": "app"}'),
        ("client_secret: abc123def", "client_secret: ***"),
        (
            "https://x.example/cb?code=1&access_token=abc123&state=2",
            "https://x.example/cb?code=1&access_token=***&state=2",
        ),
        ("API_KEY=k-123, API-KEY=k-456; apikey=k-789", "API_KEY=***, API-KEY=***; apikey=***"),
        ("secret=topsecret", "secret=***"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = ***"),
        ("--token=abc --verbose", "--token=*** --verbose"),
        # JWTs
        (f"id token {JWT} accepted", "id token eyJ*** accepted"),
        # private keys: whole block, a block the tail cut off at the end, one cut off at the start
        (
            f"before\n-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\nafter",
            "before\n-----BEGIN RSA PRIVATE KEY----- ***\nafter",
        ),
        (
            f"key:\n-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_BODY}\n",
            "key:\n-----BEGIN OPENSSH PRIVATE KEY----- ***",
        ),
        (f"{KEY_BODY}\n{KEY_BODY}\n-----END PRIVATE KEY-----\ndone", "*** -----END PRIVATE KEY-----\ndone"),
    ],
)
def test_secrets_of_known_shapes_are_masked(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pre-deploy job rel-staging/greenlight-pre-staging-abc failed: Job has reached the specified backoff limit",
        "lab pod rel-staging/greenlight-pre-x image=ghcr.io/sma-platform/migrate:4f2a9c1e0b",
        "image ghcr.io/sma/backend@sha256:" + "a" * 64,
        "phase=Failed restarts=3 ready=False",
        "Basic checks passed; bearer of bad news",  # not credentials
        "visit https://example.com:8443/path and http://127.0.0.1:5000/v2/",
        "migrated 12 tables in 3.2 s (tokenizer v2)",
        'GET /v2/client/backend/manifests/v1 401 Bearer realm="https://ghcr.io/token"',
        MASK,
    ],
)
def test_text_without_secrets_is_unchanged(text):
    assert redact(text) == text


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("connected with s3cr3t-value!", ["s3cr3t-value"], "connected with ***!"),
        ("two: abcd and abcd", ["abcd"], "two: *** and ***"),
        ("encoded p%40ss%2Fword in a URL", ["p@ss/word"], "encoded *** in a URL"),
        ("longest first: hunter2hunter2", ["hunter2", "hunter2hunter2"], "longest first: ***"),
        ("trailing newline in the value: abcdef", ["abcdef\n"], "trailing newline in the value: ***"),
        # None, empty and too-short values are ignored (they would mask ordinary text)
        ("nothing to do: abc", [None, "", "abc"], "nothing to do: abc"),
    ],
)
def test_exact_values_given_by_the_caller_are_masked(text, values, expected):
    assert redact(text, values) == expected


def test_redacting_twice_changes_nothing_more():
    text = f"password=hunter2 {SLACK} Authorization: Bearer abcdefghijklmnop postgresql://a:b@h/d"
    once = redact(text, ["hunter2"])
    assert redact(once, ["hunter2"]) == once
    assert "hunter2" not in once and SLACK not in once and "abcdefghijklmnop" not in once


def test_a_multiline_log_keeps_its_lines():
    log = "--- pod-a ---\nstarting\nDATABASE_URL=postgresql://app:pw123456@db/app\nfailed\n--- pod-b ---\nok"
    assert redact(log).splitlines() == [
        "--- pod-a ---",
        "starting",
        "DATABASE_URL=postgresql://app:***@db/app",
        "failed",
        "--- pod-b ---",
        "ok",
    ]
