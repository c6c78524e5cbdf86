"""Credentials go only to a token realm on the registry's own host (or one configured for it).

A registry (or mirror) names its token service in its ``WWW-Authenticate`` challenge; a hostile or
compromised one could name any URL and collect the credentials sent there. Every case runs over
real HTTP: the stand-in on 127.0.0.1 plays the registry, ``RealmSpy`` on 127.0.0.2 plays the other
host and records every Authorization header it receives.
"""

from __future__ import annotations

import logging

import pytest

from greenlight.core.images import parse_image_ref
from greenlight.errors import Forbidden
from greenlight_lab.catalogue import Behaviour
from tests.registry.realm_spy import RealmSpy

SECRET = "ghp_TopSecretPersonalAccessToken0123456789"
CREDS = {"ghcr.io": ("bot", SECRET)}


def test_credentials_are_withheld_from_a_token_realm_on_another_host(lab, caplog):
    """The registry names a realm on 127.0.0.2: that host never sees an Authorization header; the
    token is fetched anonymously and a public image still resolves; a warning names realm and registry."""
    digest = lab.catalogue.push("ghcr.io/client/foreign-realm:v1", Behaviour("v1"))
    caplog.set_level(logging.WARNING, logger="greenlight.clients.registry")
    with RealmSpy(upstream=lab.url) as spy, lab.client(credentials=CREDS) as client:
        lab.registry.realm = f"{spy.url}/token"
        assert client.resolve(parse_image_ref("ghcr.io/client/foreign-realm:v1")) == digest
    assert spy.seen, "the client never asked the named realm for a token"
    assert spy.authorizations() == [None] * len(spy.seen)
    assert "127.0.0.2" in caplog.text and "ghcr.io" in caplog.text and SECRET not in caplog.text


def test_a_foreign_realm_that_refuses_anonymous_pulls_is_forbidden_naming_realm_and_registry(lab):
    """When the anonymous token is refused, Forbidden says the credentials were withheld from that
    realm for that registry (and never shows them); the realm still saw no Authorization header."""
    lab.catalogue.push("ghcr.io/client/foreign-deny:v1", Behaviour("v1"))
    with (
        RealmSpy(deny=True) as spy,
        lab.client(credentials=CREDS) as client,
        pytest.raises(Forbidden) as info,
    ):
        lab.registry.realm = f"{spy.url}/token"
        client.resolve(parse_image_ref("ghcr.io/client/foreign-deny:v1"))
    message = str(info.value)
    assert "withheld" in message and f"{spy.url}/token" in message and "ghcr.io" in message, message
    assert SECRET not in message and "bot:" not in message
    assert spy.seen and spy.authorizations() == [None] * len(spy.seen)


def test_same_host_realm_on_another_port_gets_the_credentials_but_not_its_redirect(lab):
    """A realm on the registry's own host (another port) receives the credentials; when it
    redirects to another host, that host sees no Authorization header."""
    with (
        RealmSpy() as elsewhere,
        RealmSpy(host="127.0.0.1", redirect_to=f"{elsewhere.url}/token") as same_host,
        lab.client(credentials=CREDS) as client,
    ):
        lab.registry.realm = f"{same_host.url}/token"
        with pytest.raises(Forbidden):  # the spy's token is not one the stand-in accepts
            client.resolve(parse_image_ref("ghcr.io/client/same-host:v1"))
    assert [a.split(" ")[0] if a else None for a in same_host.authorizations()] == ["Basic"]
    assert elsewhere.seen and elsewhere.authorizations() == [None] * len(elsewhere.seen)


def test_a_realm_host_configured_for_the_registry_gets_the_credentials(lab, monkeypatch):
    """GREENLIGHT_REGISTRY_TOKEN_REALMS lists the token host a registry uses (as auth.docker.io is
    Docker Hub's): that host receives the credentials."""
    digest = lab.catalogue.push("ghcr.io/client/configured-realm:v1", Behaviour("v1"))
    monkeypatch.setenv("GREENLIGHT_REGISTRY_TOKEN_REALMS", "ghcr.io=127.0.0.2")
    with RealmSpy(upstream=lab.url) as spy, lab.client(credentials=CREDS) as client:
        lab.registry.realm = f"{spy.url}/token"
        assert client.resolve(parse_image_ref("ghcr.io/client/configured-realm:v1")) == digest
    assert [a.split(" ")[0] if a else None for a in spy.authorizations()] == ["Basic"]


def test_without_credentials_any_realm_is_asked_anonymously(lab):
    """No credentials configured: the named realm is asked for an anonymous token as before."""
    digest = lab.catalogue.push("ghcr.io/client/anonymous-realm:v1", Behaviour("v1"))
    with RealmSpy(upstream=lab.url) as spy, lab.client() as client:
        lab.registry.realm = f"{spy.url}/token"
        assert client.resolve(parse_image_ref("ghcr.io/client/anonymous-realm:v1")) == digest
    assert spy.authorizations() == [None]
