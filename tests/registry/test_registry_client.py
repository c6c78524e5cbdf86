"""RegistryClient against the registry stand-in over real HTTP: digests, auth, errors, mirrors."""

from __future__ import annotations

import logging

import pytest

from greenlight.clients.registry import RegistryClient, parse_mirrors
from greenlight.core.images import parse_image_ref
from greenlight.errors import Forbidden, InputInvalid, NotFound, TransientError
from greenlight_lab.catalogue import Behaviour
from greenlight_lab.faults import FaultRule

SECRET = "ghp_TopSecretPersonalAccessToken0123456789"


def test_tag_resolves_to_the_digest_the_catalogue_pushed(lab):
    """Resolving a tag returns exactly the digest catalogue.push returned."""
    digest = lab.catalogue.push("ghcr.io/client/backend:abc123", Behaviour("v1"))
    with lab.client() as client:
        assert client.resolve(parse_image_ref("ghcr.io/client/backend:abc123")) == digest


def test_moved_tag_resolves_to_the_new_digest(lab):
    """After a re-push the tag resolves to the new digest, and the old digest still verifies."""
    old = lab.catalogue.push("ghcr.io/client/moving:stable", Behaviour("v1"))
    new = lab.catalogue.push("ghcr.io/client/moving:stable", Behaviour("v2"))
    with lab.client() as client:
        assert client.resolve(parse_image_ref("ghcr.io/client/moving:stable")) == new
        assert client.resolve(parse_image_ref(f"ghcr.io/client/moving@{old}")) == old


def test_digest_reference_is_checked_to_exist(lab):
    """A reference that already has a digest is verified in the registry and returned unchanged."""
    digest = lab.catalogue.push("ghcr.io/client/pinned:v1", Behaviour("v1"))
    missing = "sha256:" + "0" * 64
    with lab.client() as client:
        assert client.resolve(parse_image_ref(f"ghcr.io/client/pinned@{digest}")) == digest
        with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
            client.resolve(parse_image_ref(f"ghcr.io/client/pinned@{missing}"))


def test_unknown_tag_is_not_found_naming_the_image(lab):
    """An unknown tag raises NotFound naming the image and MANIFEST_UNKNOWN."""
    lab.catalogue.push("ghcr.io/client/known:v1", Behaviour("v1"))
    with lab.client() as client, pytest.raises(NotFound) as info:
        client.resolve(parse_image_ref("ghcr.io/client/known:abc"))
    assert str(info.value) == "image 'ghcr.io/client/known:abc' not found in the registry (MANIFEST_UNKNOWN)"


def test_unknown_repository_is_not_found_naming_the_image(lab):
    """An unknown repository raises NotFound naming the image and NAME_UNKNOWN."""
    with lab.client() as client, pytest.raises(NotFound) as info:
        client.resolve(parse_image_ref("ghcr.io/client/never-pushed:v1"))
    assert (
        str(info.value) == "image 'ghcr.io/client/never-pushed:v1' not found in the registry (NAME_UNKNOWN)"
    )


def test_untagged_reference_is_refused_before_any_request(lab):
    """A reference without tag or digest raises InputInvalid and sends nothing."""
    mark = len(lab.registry.requests)
    with lab.client() as client, pytest.raises(InputInvalid, match="neither a tag nor a digest"):
        client.resolve(parse_image_ref("ghcr.io/client/backend"))
    assert lab.requests_since(mark) == []


def test_token_challenge_is_answered_and_the_token_cached(lab):
    """The first resolve is refused without a token, fetches one, retries with it; the next reuses it."""
    digest = lab.catalogue.push("ghcr.io/client/tokens:v1", Behaviour("v1"))
    ref = parse_image_ref("ghcr.io/client/tokens:v1")
    with lab.client() as client:
        mark = len(lab.registry.requests)
        assert client.resolve(ref) == digest
        first = lab.requests_since(mark)
        manifest = "/v2/client/tokens/manifests/v1"
        assert [(r.method, r.path, r.status, r.authorization) for r in first] == [
            ("HEAD", manifest, 401, None),
            ("GET", "/token", 200, None),
            ("HEAD", manifest, 200, "bearer"),
        ]
        assert "application/vnd.oci.image.index.v1+json" in first[0].accept
        assert "application/vnd.docker.distribution.manifest.v2+json" in first[0].accept
        mark = len(lab.registry.requests)
        assert client.resolve(ref) == digest
        assert [(r.method, r.status) for r in lab.requests_since(mark)] == [("HEAD", 200)]


def test_missing_digest_header_falls_back_to_hashing_the_manifest(lab):
    """When the registry omits Docker-Content-Digest the client GETs the manifest and hashes it."""
    digest = lab.catalogue.push("ghcr.io/client/noheader:v1", Behaviour("v1"))
    lab.registry.send_digest_header = False
    with lab.client() as client:
        mark = len(lab.registry.requests)
        assert client.resolve(parse_image_ref("ghcr.io/client/noheader:v1")) == digest
    assert [r.method for r in lab.requests_since(mark) if r.status == 200][-1] == "GET"


@pytest.mark.parametrize(("status", "retry_after"), [(503, 2.0), (429, 7.0), (500, None)])
def test_server_errors_and_throttling_are_transient_with_retry_after(lab, status, retry_after):
    """429 and 5xx on the manifest raise TransientError carrying the server's Retry-After."""
    lab.catalogue.push("ghcr.io/client/flaky:v1", Behaviour("v1"))
    lab.faults.add(
        FaultRule("registry", "head", "manifests", status=status, retry_after=retry_after, count=-1)
    )
    with lab.client() as client, pytest.raises(TransientError) as info:
        client.resolve(parse_image_ref("ghcr.io/client/flaky:v1"))
    assert info.value.retry_after == retry_after
    assert f"HTTP {status}" in str(info.value) and "ghcr.io/client/flaky:v1" in str(info.value)


def test_token_service_failure_is_transient(lab):
    """A 503 from the token endpoint raises TransientError."""
    lab.catalogue.push("ghcr.io/client/tokenfail:v1", Behaviour("v1"))
    lab.faults.add(FaultRule("registry", "get", "token", status=503))
    with lab.client() as client, pytest.raises(TransientError, match="token service answered HTTP 503"):
        client.resolve(parse_image_ref("ghcr.io/client/tokenfail:v1"))


def test_a_stalled_registry_times_out_as_transient(lab):
    """A registry that does not answer within timeout_s raises TransientError."""
    lab.catalogue.push("ghcr.io/client/slow:v1", Behaviour("v1"))
    lab.faults.add(FaultRule("registry", "head", "manifests", mode="stall", stall_s=1.5))
    with lab.client(timeout_s=0.3) as client, pytest.raises(TransientError, match="timed out"):
        client.resolve(parse_image_ref("ghcr.io/client/slow:v1"))


def test_an_unreachable_registry_is_transient(lab):
    """A mirror nobody listens on raises TransientError naming the image."""
    client = RegistryClient(mirrors={"ghcr.io": "http://127.0.0.1:9"}, credentials={})
    with client, pytest.raises(TransientError, match=r"unreachable for image 'ghcr\.io/client/x:v1'"):
        client.resolve(parse_image_ref("ghcr.io/client/x:v1"))


def test_mirror_serves_the_registry_while_the_reference_keeps_its_host(lab, monkeypatch):
    """GREENLIGHT_REGISTRY_MIRRORS routes docker.io to the stand-in; errors still name docker.io."""
    digest = lab.catalogue.push("docker.io/library/nginx:1.27", Behaviour("nginx"))
    monkeypatch.setenv("GREENLIGHT_REGISTRY_MIRRORS", f"ghcr.io=https://127.0.0.1:1, docker.io={lab.url}/")
    with RegistryClient(credentials={}) as client:
        mark = len(lab.registry.requests)
        assert client.resolve(parse_image_ref("nginx:1.27")) == digest
        assert lab.requests_since(mark)[-1].path == "/v2/library/nginx/manifests/1.27"
        with pytest.raises(NotFound, match=r"'docker\.io/library/nginx:9'"):
            client.resolve(parse_image_ref("nginx:9"))


def test_resolve_all_maps_every_canonical_ref_to_its_digest(lab):
    """resolve_all answers {canonical ref: digest} for several images, duplicates once."""
    backend = lab.catalogue.push("ghcr.io/client/all-backend:c0ffee", Behaviour("b"))
    frontend = lab.catalogue.push("ghcr.io/client/all-frontend:c0ffee", Behaviour("f"))
    refs = [
        parse_image_ref(t)
        for t in ("ghcr.io/client/all-backend:c0ffee", "GHCR.io/client/all-frontend:c0ffee")
    ]
    with lab.client() as client:
        assert client.resolve_all([*refs, refs[0]]) == {
            "ghcr.io/client/all-backend:c0ffee": backend,
            "ghcr.io/client/all-frontend:c0ffee": frontend,
        }
        assert client.resolve_all([]) == {}


def test_resolve_all_raises_the_first_failure(lab):
    """resolve_all raises when any image is missing, naming that image."""
    lab.catalogue.push("ghcr.io/client/some:v1", Behaviour("v1"))
    refs = [parse_image_ref("ghcr.io/client/some:v1"), parse_image_ref("ghcr.io/client/some:v2")]
    with lab.client() as client, pytest.raises(NotFound, match=r"'ghcr\.io/client/some:v2'"):
        client.resolve_all(refs)


def test_credentials_are_sent_to_the_token_service(start_lab):
    """Configured credentials reach the token endpoint as Basic auth and the resolve succeeds."""
    strict = start_lab(users={"bot": SECRET})
    digest = strict.catalogue.push("ghcr.io/client/private:v1", Behaviour("v1"))
    with strict.client(credentials={"GHCR.io": ("bot", SECRET)}) as client:
        mark = len(strict.registry.requests)
        assert client.resolve(parse_image_ref("ghcr.io/client/private:v1")) == digest
    token_requests = [r for r in strict.requests_since(mark) if r.path == "/token"]
    assert [r.authorization for r in token_requests] == ["basic"]


def test_credentials_from_environment_apply_to_every_registry(start_lab, monkeypatch):
    """GREENLIGHT_REGISTRY_USERNAME/PASSWORD are used when no credentials are passed."""
    strict = start_lab(users={"bot": SECRET})
    digest = strict.catalogue.push("ghcr.io/client/envcreds:v1", Behaviour("v1"))
    monkeypatch.setenv("GREENLIGHT_REGISTRY_USERNAME", "bot")
    monkeypatch.setenv("GREENLIGHT_REGISTRY_PASSWORD", SECRET)
    with RegistryClient(mirrors={"ghcr.io": strict.url}) as client:
        assert client.resolve(parse_image_ref("ghcr.io/client/envcreds:v1")) == digest


def test_refused_credentials_are_forbidden_and_never_shown(start_lab, caplog):
    """Wrong credentials raise Forbidden whose message, args and the logs never contain the secret."""
    strict = start_lab(users={"bot": "the-right-one"})
    strict.catalogue.push("ghcr.io/client/refused:v1", Behaviour("v1"))
    caplog.set_level(logging.DEBUG)
    with strict.client(credentials={"ghcr.io": ("bot", SECRET)}) as client, pytest.raises(Forbidden) as info:
        client.resolve(parse_image_ref("ghcr.io/client/refused:v1"))
    assert "ghcr.io/client/refused:v1" in str(info.value)
    shown = [
        str(info.value),
        repr(info.value),
        repr(info.value.args),
        repr(info.value.__cause__),
        caplog.text,
    ]
    assert not any(SECRET in text or "bot:" in text for text in shown)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("ghcr.io=http://127.0.0.1:5000", {"ghcr.io": "http://127.0.0.1:5000"}),
        (" GHCR.io = http://a:1/ ,docker.io=https://b ", {"ghcr.io": "http://a:1", "docker.io": "https://b"}),
    ],
)
def test_mirror_setting_parses(text, expected):
    """The mirrors setting is host=url pairs, comma separated, hosts lower-cased, trailing / dropped."""
    assert parse_mirrors(text) == expected


@pytest.mark.parametrize("text", ["ghcr.io", "ghcr.io=127.0.0.1:5000", "=http://x"])
def test_malformed_mirror_setting_is_refused(text):
    """A mirror entry without host=http(s)://url raises InputInvalid naming the entry."""
    with pytest.raises(InputInvalid, match="GREENLIGHT_REGISTRY_MIRRORS entry"):
        parse_mirrors(text)


def test_refusal_after_authenticating_is_forbidden(lab):
    """A 403 on the manifest after the token dance raises Forbidden naming the image."""
    lab.catalogue.push("ghcr.io/client/denied:v1", Behaviour("v1"))
    lab.faults.add(FaultRule("registry", "head", "manifests", status=403, count=-1))
    with lab.client() as client, pytest.raises(Forbidden, match=r"'ghcr\.io/client/denied:v1'.*HTTP 403"):
        client.resolve(parse_image_ref("ghcr.io/client/denied:v1"))
