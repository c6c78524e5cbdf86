"""The registry stand-in speaks the OCI distribution API with GHCR-style token auth (raw httpx)."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from greenlight_lab.catalogue import Behaviour
from greenlight_lab.faults import FaultRule

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _token(lab, repository: str) -> str:
    response = httpx.get(
        f"{lab.url}/token", params={"scope": f"repository:{repository}:pull", "service": "lab-registry"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token"] == body["access_token"]
    return body["token"]


def test_base_endpoint_challenges_with_bearer_realm(lab):
    """GET /v2/ without a token answers 401 with a Bearer challenge naming the token realm and service."""
    response = httpx.get(f"{lab.url}/v2/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{lab.url}/token",service="lab-registry"'


def test_manifest_needs_a_token_covering_the_repository(lab):
    """A manifest request without a token, with a bogus one, or one scoped to another repo gets 401 + scope."""
    lab.catalogue.push("ghcr.io/standin/auth:v1", Behaviour("v1"))
    url = f"{lab.url}/v2/standin/auth/manifests/v1"
    other = _token(lab, "standin/other")
    for headers in ({}, {"Authorization": "Bearer bogus"}, {"Authorization": f"Bearer {other}"}):
        response = httpx.head(url, headers=headers)
        assert response.status_code == 401
        assert 'scope="repository:standin/auth:pull"' in response.headers["WWW-Authenticate"]
    good = httpx.head(url, headers={"Authorization": f"Bearer {_token(lab, 'standin/auth')}"})
    assert good.status_code == 200


def test_head_and_get_agree_on_digest_type_and_length(lab):
    """HEAD and GET answer the same digest, OCI content type and length; the digest hashes the GET body."""
    digest = lab.catalogue.push("ghcr.io/standin/manifest:v1", Behaviour("v1", latency_ms=5))
    headers = {"Authorization": f"Bearer {_token(lab, 'standin/manifest')}", "Accept": OCI_MANIFEST}
    url = f"{lab.url}/v2/standin/manifest/manifests/v1"
    head, get = httpx.head(url, headers=headers), httpx.get(url, headers=headers)
    assert head.status_code == get.status_code == 200
    assert head.headers["Docker-Content-Digest"] == get.headers["Docker-Content-Digest"] == digest
    assert head.headers["Content-Type"] == get.headers["Content-Type"] == OCI_MANIFEST
    assert int(head.headers["Content-Length"]) == len(get.content)
    assert head.content == b""
    assert "sha256:" + hashlib.sha256(get.content).hexdigest() == digest
    by_digest = httpx.get(f"{lab.url}/v2/standin/manifest/manifests/{digest}", headers=headers)
    assert by_digest.content == get.content


def test_config_blob_is_served_under_its_digest(lab):
    """The manifest's config digest can be fetched as a blob whose sha256 matches."""
    lab.catalogue.push("ghcr.io/standin/blob:v1", Behaviour("v1"))
    headers = {"Authorization": f"Bearer {_token(lab, 'standin/blob')}"}
    manifest = httpx.get(f"{lab.url}/v2/standin/blob/manifests/v1", headers=headers).json()
    config_digest = manifest["config"]["digest"]
    blob = httpx.get(f"{lab.url}/v2/standin/blob/blobs/{config_digest}", headers=headers)
    assert blob.status_code == 200
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == config_digest


@pytest.mark.parametrize(
    ("path", "code"),
    [("standin/nowhere/manifests/v1", "NAME_UNKNOWN"), ("standin/known/manifests/v404", "MANIFEST_UNKNOWN")],
)
def test_unknown_repository_and_tag_have_distinct_error_codes(lab, path, code):
    """An unknown repository answers 404 NAME_UNKNOWN, an unknown tag 404 MANIFEST_UNKNOWN."""
    lab.catalogue.push("ghcr.io/standin/known:v1", Behaviour("v1"))
    repository = path.split("/manifests/")[0]
    response = httpx.get(
        f"{lab.url}/v2/{path}", headers={"Authorization": f"Bearer {_token(lab, repository)}"}
    )
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == code


def test_tags_list_paginates_with_n_and_last(lab):
    """tags/list answers every tag sorted, and n/last page through them with a Link header."""
    for tag in ("a", "b", "c"):
        lab.catalogue.push(f"ghcr.io/standin/tags:{tag}", Behaviour(tag), signed_by=None)
    headers = {"Authorization": f"Bearer {_token(lab, 'standin/tags')}"}
    url = f"{lab.url}/v2/standin/tags/tags/list"
    assert httpx.get(url, headers=headers).json() == {"name": "standin/tags", "tags": ["a", "b", "c"]}
    page = httpx.get(url, params={"n": 2}, headers=headers)
    assert json.loads(page.content)["tags"] == ["a", "b"]
    assert 'last=b>; rel="next"' in page.headers["Link"]
    assert httpx.get(url, params={"n": 2, "last": "b"}, headers=headers).json()["tags"] == ["c"]


def test_faults_answer_the_configured_status_with_retry_after(lab):
    """A registry fault on head/manifests answers its status and Retry-After once, then clears."""
    lab.catalogue.push("ghcr.io/standin/fault:v1", Behaviour("v1"))
    lab.faults.add(FaultRule("registry", "head", "manifests", status=503, retry_after=3))
    headers = {"Authorization": f"Bearer {_token(lab, 'standin/fault')}"}
    url = f"{lab.url}/v2/standin/fault/manifests/v1"
    first = httpx.head(url, headers=headers)
    assert (first.status_code, first.headers["Retry-After"]) == (503, "3")
    assert httpx.head(url, headers=headers).status_code == 200


def test_basic_auth_is_checked_only_against_configured_users(start_lab):
    """With users configured, the token endpoint refuses a wrong password and accepts the right one."""
    strict = start_lab(users={"bot": "s3cret"})
    url = f"{strict.url}/token"
    assert httpx.get(url, auth=("bot", "wrong")).status_code == 401
    assert httpx.get(url, auth=("bot", "s3cret")).status_code == 200
    assert httpx.get(url).status_code == 200  # anonymous pull stays allowed


def test_auth_can_be_disabled(start_lab):
    """With require_auth=False, manifests are served without a token."""
    open_lab = start_lab(require_auth=False)
    digest = open_lab.catalogue.push("ghcr.io/standin/open:v1", Behaviour("v1"))
    response = httpx.head(f"{open_lab.url}/v2/standin/open/manifests/v1")
    assert response.headers["Docker-Content-Digest"] == digest
