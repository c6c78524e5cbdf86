"""Which token realms may receive a registry's credentials: the pure rule, as tables.

The realms real registries name (checked against their public challenges): GHCR
``https://ghcr.io/token``, Docker Hub ``https://auth.docker.io/token`` for ``registry-1.docker.io``,
Artifact Registry ``https://<location>-docker.pkg.dev/v2/token``, GCR ``https://gcr.io/v2/token``.
"""

from __future__ import annotations

import pytest

from greenlight.clients.registry import parse_token_realms, realm_refusal
from greenlight.errors import InputInvalid


@pytest.mark.parametrize(
    ("registry", "endpoint", "realm", "trusted"),
    [
        ("ghcr.io", "https://ghcr.io", "https://ghcr.io/token", ()),
        ("docker.io", "https://registry-1.docker.io", "https://auth.docker.io/token", ()),
        ("registry-1.docker.io", "https://registry-1.docker.io", "https://auth.docker.io/token", ()),
        ("registry.gitlab.com", "https://registry.gitlab.com", "https://gitlab.com/jwt/auth", ()),
        ("us-docker.pkg.dev", "https://us-docker.pkg.dev", "https://us-docker.pkg.dev/v2/token", ()),
        ("gcr.io", "https://gcr.io", "https://gcr.io/v2/token", ()),
        ("GHCR.io", "https://GHCR.io", "https://ghcr.IO/token", ()),  # hosts compare case-insensitively
        ("ghcr.io", "https://ghcr.io", "https://ghcr.io:8443/token", ()),  # the host, not the port
        # a mirror: its own host, and the real registry's name, may issue tokens
        ("ghcr.io", "https://mirror.corp", "https://mirror.corp/token", ()),
        ("ghcr.io", "https://mirror.corp", "https://ghcr.io/token", ()),
        # the lab: a plain-http registry on loopback
        ("ghcr.io", "http://127.0.0.1:5000", "http://127.0.0.1:5000/token", ()),
        ("ghcr.io", "http://localhost:5000", "http://localhost:5001/token", ()),
        # a registry configured as plain http may name an http realm on its own host
        ("ghcr.io", "http://registry.internal:5000", "http://registry.internal:5000/token", ()),
        # configured for the registry
        ("reg.example", "https://reg.example", "https://auth.example/token", ("auth.example",)),
    ],
)
def test_credentials_may_go_to(registry, endpoint, realm, trusted):
    assert realm_refusal(registry, endpoint, realm, trusted) is None


@pytest.mark.parametrize(
    ("registry", "endpoint", "realm", "trusted", "why"),
    [
        ("ghcr.io", "https://ghcr.io", "https://evil.example/token", (), "not the registry's host"),
        ("ghcr.io", "https://ghcr.io", "https://ghcr.io.evil.example/token", (), "not the registry's host"),
        ("ghcr.io", "https://ghcr.io", "https://evilghcr.io/token", (), "not the registry's host"),
        ("ghcr.io", "http://127.0.0.1:5000", "http://127.0.0.2:5000/token", (), "not the registry's host"),
        ("ghcr.io", "http://127.0.0.1:5000", "http://evil.example/token", (), "not the registry's host"),
        # Docker Hub's token host is Docker Hub's only
        ("ghcr.io", "https://ghcr.io", "https://auth.docker.io/token", (), "not the registry's host"),
        # a trusted host for one registry is not trusted for another
        ("ghcr.io", "https://ghcr.io", "https://auth.example/token", (), "not the registry's host"),
        # plain http off loopback, from a registry reached over https: a downgrade
        ("ghcr.io", "https://ghcr.io", "http://ghcr.io/token", (), "plain http"),
        ("docker.io", "https://registry-1.docker.io", "http://auth.docker.io/token", (), "plain http"),
        ("ghcr.io", "https://mirror.corp", "http://mirror.corp/token", (), "plain http"),
        ("ghcr.io", "http://registry.internal:5000", "http://ghcr.io/token", (), "plain http"),
        # not an http(s) URL at all
        ("ghcr.io", "https://ghcr.io", "ftp://ghcr.io/token", (), "not an http(s) URL"),
        ("ghcr.io", "https://ghcr.io", "/token", (), "not an http(s) URL"),
        ("ghcr.io", "https://ghcr.io", "https://bot:pw@ghcr.io/token", (), "user information"),
    ],
)
def test_credentials_are_withheld_from(registry, endpoint, realm, trusted, why):
    reason = realm_refusal(registry, endpoint, realm, trusted)
    assert reason is not None and why in reason, reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("reg.example=auth.example", {"reg.example": {"auth.example"}}),
        (
            " Reg.Example = Auth.Example , reg.example=sso.example,ghcr.io=127.0.0.2",
            {"reg.example": {"auth.example", "sso.example"}, "ghcr.io": {"127.0.0.2"}},
        ),
        ("reg.example=[::1]", {"reg.example": {"::1"}}),
    ],
)
def test_token_realms_setting_parses(text, expected):
    """registry=host pairs, comma separated, lower-cased; a registry may be listed more than once."""
    assert parse_token_realms(text) == expected


@pytest.mark.parametrize(
    "text",
    ["reg.example", "=auth.example", "reg.example=https://auth.example/token", "reg.example=auth:8443"],
)
def test_malformed_token_realms_setting_is_refused(text):
    with pytest.raises(InputInvalid, match="GREENLIGHT_REGISTRY_TOKEN_REALMS entry"):
        parse_token_realms(text)
