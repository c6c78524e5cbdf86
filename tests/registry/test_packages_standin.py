"""The GitHub Packages API stand-in answers as GitHub documents it (raw httpx), and the product's
PackagesClient works against it: pagination by Link, 401/403/404, the last version, faults, and a
deleted version gone from the OCI API too."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from greenlight.clients.packages import PackagesClient
from greenlight.core.cleanup import Package
from greenlight.core.images import parse_image_ref
from greenlight.errors import Conflict, Forbidden, NotFound, TransientError
from greenlight_lab.catalogue import Behaviour
from greenlight_lab.faults import FaultRule
from greenlight_lab.packages import DELETE_SCOPE, READ_SCOPE, Grant, PackagesStandIn

TOKEN = "ghp_ConformanceTokenReadAndDelete000001"
READ_ONLY = "ghp_ConformanceTokenReadOnly0000000002"
NO_SCOPES = "ghp_ConformanceTokenNoScopes0000000003"
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
LINK = re.compile(r'<([^>]+)>; rel="(\w+)"')


@dataclass
class Api:
    url: str
    standin: PackagesStandIn

    def get(self, path: str, token: str | None = TOKEN, **params: object) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, params=params, headers={**HEADERS, **auth})

    def delete(self, path: str, token: str = TOKEN) -> httpx.Response:
        return httpx.delete(self.url + path, headers={**HEADERS, "Authorization": f"Bearer {token}"})

    def client(self, token: str = TOKEN, **kwargs: object) -> PackagesClient:
        return PackagesClient(token, api_url=self.url, sleep=lambda s: None, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def api(lab, loop_thread) -> Iterator[Api]:
    """A Packages API stand-in over the registry stand-in's catalogue and faults."""
    standin = PackagesStandIn(
        lab.catalogue,
        lab.faults,
        tokens={
            TOKEN: Grant("conformance-bot", frozenset({READ_SCOPE, DELETE_SCOPE})),
            READ_ONLY: Grant("conformance-bot", frozenset({READ_SCOPE})),
            NO_SCOPES: Grant("conformance-bot", frozenset()),
        },
    )
    port = loop_thread.run(standin.start())
    yield Api(f"http://127.0.0.1:{port}", standin)
    loop_thread.run(standin.stop())


def _push(lab, image: str, count: int) -> list[str]:
    """``count`` unsigned images (a signed push adds its signature's version too)."""
    base = time.time() - 86400 * count
    return [
        lab.catalogue.push(
            f"{image}:v{i}", Behaviour(f"{image}-{i}"), pushed_at=base + 3600 * i, signed_by=None
        )
        for i in range(count)
    ]


def test_versions_page_through_link_headers_newest_first(lab, api):
    """75 versions at per_page=30: three pages, Link next/last (then prev/first), newest first, GitHub's shape."""
    digests = _push(lab, "ghcr.io/conform/pages", 75)
    path = "/orgs/conform/packages/container/pages/versions"
    first = api.get(path, per_page=30)
    assert first.status_code == 200
    links = dict((rel, url) for url, rel in LINK.findall(first.headers["Link"]))
    assert set(links) == {"next", "last"}
    assert "page=3" in links["last"] and "per_page=30" in links["last"]
    seen, url, pages = [], f"{api.url}{path}?per_page=30", 0
    while url:
        response = httpx.get(url, headers={**HEADERS, "Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        seen += response.json()
        pages += 1
        url = dict((rel, u) for u, rel in LINK.findall(response.headers.get("Link", ""))).get("next")
    assert pages == 3
    assert [v["name"] for v in seen] == list(reversed(digests))
    one = seen[0]
    assert set(one) == {
        "id",
        "name",
        "url",
        "package_html_url",
        "created_at",
        "updated_at",
        "html_url",
        "metadata",
    }
    assert one["metadata"] == {"package_type": "container", "container": {"tags": ["v74"]}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", one["created_at"])
    assert one["url"].endswith(f"/orgs/conform/packages/container/pages/versions/{one['id']}")
    last = httpx.get(links["last"], headers={**HEADERS, "Authorization": f"Bearer {TOKEN}"})
    assert {rel for _, rel in LINK.findall(last.headers["Link"])} == {"prev", "first"}
    assert int(first.headers["x-ratelimit-remaining"]) < int(first.headers["x-ratelimit-limit"])


def test_default_and_maximum_page_sizes(lab, api):
    """No per_page gives 30 versions; per_page above 100 gives 100; one page needs no Link."""
    _push(lab, "ghcr.io/conform/sizes", 120)
    path = "/orgs/conform/packages/container/sizes/versions"
    assert len(api.get(path).json()) == 30
    assert len(api.get(path, per_page=500).json()) == 100
    _push(lab, "ghcr.io/conform/small", 3)
    small = api.get("/orgs/conform/packages/container/small/versions")
    assert len(small.json()) == 3 and "Link" not in small.headers


def test_user_and_authenticated_user_routes(lab, api):
    """/users/{user}/... and /user/... (the token's login) list the same kind of versions."""
    _push(lab, "ghcr.io/conformance-bot/mine", 2)
    assert len(api.get("/users/conformance-bot/packages/container/mine/versions").json()) == 2
    assert len(api.get("/user/packages/container/mine/versions").json()) == 2


def test_package_name_with_a_slash_is_url_encoded(lab, api):
    """ghcr.io/conform/team/app is package team/app, addressed as team%2Fapp."""
    _push(lab, "ghcr.io/conform/team/app", 2)
    response = httpx.get(
        f"{api.url}/orgs/conform/packages/container/team%2Fapp/versions",
        headers={**HEADERS, "Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200 and len(response.json()) == 2
    with api.client() as client:
        assert len(client.list_versions(Package("ghcr.io/conform/team/app", "conform", "team/app"))) == 2


@pytest.mark.parametrize(
    ("token", "method", "status", "message"),
    [
        (None, "get", 401, "Bad credentials"),
        ("ghp_unknown", "get", 401, "Bad credentials"),
        (NO_SCOPES, "get", 403, "read:packages"),
        (READ_ONLY, "delete", 403, "delete:packages"),
    ],
)
def test_credentials_and_scopes_are_checked(lab, api, token, method, status, message):
    """No or an unknown token: 401 Bad credentials; a token without the scope: 403 naming it."""
    _push(lab, "ghcr.io/conform/auth", 2)
    path = "/orgs/conform/packages/container/auth/versions"
    if method == "get":
        response = api.get(path, token=token)
    else:
        vid = api.get(path).json()[-1]["id"]
        response = api.delete(f"{path}/{vid}", token=token)
    assert response.status_code == status
    assert message in response.json()["message"]
    assert response.json()["documentation_url"].startswith("https://docs.github.com/")


def test_unknown_package_and_version_are_404(lab, api):
    _push(lab, "ghcr.io/conform/known", 2)
    assert api.get("/orgs/conform/packages/container/unknown/versions").status_code == 404
    assert api.get("/orgs/conform/packages/npm/known/versions").status_code == 404
    assert api.delete("/orgs/conform/packages/container/known/versions/1").status_code == 404


def test_delete_removes_the_manifest_from_the_oci_api(lab, api):
    """DELETE answers 204; the registry then answers 404 MANIFEST_UNKNOWN for the digest and its tag."""
    digests = _push(lab, "ghcr.io/conform/gone", 3)
    path = "/orgs/conform/packages/container/gone/versions"
    oldest = api.get(path).json()[-1]
    assert oldest["name"] == digests[0]
    assert api.delete(f"{path}/{oldest['id']}").status_code == 204
    assert oldest["id"] not in [v["id"] for v in api.get(path).json()]
    assert api.get(f"{path}/{oldest['id']}").status_code == 404
    token = httpx.get(f"{lab.url}/token", params={"scope": "repository:conform/gone:pull"}).json()["token"]
    for reference in (digests[0], "v0"):
        manifest = httpx.get(
            f"{lab.url}/v2/conform/gone/manifests/{reference}", headers={"Authorization": f"Bearer {token}"}
        )
        assert manifest.status_code == 404
        assert manifest.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    with lab.client() as registry:
        assert registry.resolve(parse_image_ref("ghcr.io/conform/gone:v1")) == digests[1]


def test_last_version_cannot_be_deleted(lab, api):
    """GitHub refuses to delete a package's last version: 400, and the client says Conflict."""
    _push(lab, "ghcr.io/conform/single", 1)
    path = "/orgs/conform/packages/container/single/versions"
    vid = api.get(path).json()[0]["id"]
    response = api.delete(f"{path}/{vid}")
    assert response.status_code == 400
    assert "last version of a package" in response.json()["message"]
    with api.client() as client, pytest.raises(Conflict, match="last version"):
        client.delete_version(Package("ghcr.io/conform/single", "conform", "single"), vid)


def test_client_lists_every_page_and_translates_errors(lab, api):
    """The client follows Link over 3+ pages; 401/403/404 become Forbidden/Forbidden/NotFound, no token shown."""
    digests = _push(lab, "ghcr.io/conform/client", 230)
    package = Package("ghcr.io/conform/client", "conform", "client")
    mark = len(api.standin.requests)
    with api.client() as client:
        versions = client.list_versions(package)
    assert [v.digest for v in versions] == list(reversed(digests))
    lists = [r for r in api.standin.requests[mark:] if r.method == "GET"]
    assert len(lists) == 3 and all("per_page=100" in r.query for r in lists)
    for token, error in (("ghp_wrong", Forbidden), (NO_SCOPES, Forbidden)):
        with api.client(token) as client, pytest.raises(error) as caught:
            client.list_versions(package)
        assert token not in str(caught.value)
    with api.client() as client, pytest.raises(NotFound, match="conform/nothing"):
        client.list_versions(Package("ghcr.io/conform/nothing", "conform", "nothing"))


def test_client_retries_5xx_and_429_with_retry_after(lab, api):
    """A 503 then a 429 (retry-after 1) on the listing: the client waits as told and succeeds."""
    _push(lab, "ghcr.io/conform/flaky", 2)
    lab.faults.add(FaultRule(target="packages", verb="get", status=503, count=1))
    lab.faults.add(FaultRule(target="packages", verb="get", status=429, retry_after=1, count=1))
    waits: list[float] = []
    client = PackagesClient(TOKEN, api_url=api.url, sleep=waits.append)
    with client:
        assert len(client.list_versions(Package("ghcr.io/conform/flaky", "conform", "flaky"))) == 2
    assert waits[1] == 1.0 and len(waits) == 2
    lab.faults.add(FaultRule(target="packages", verb="delete", status=500, count=-1))
    with PackagesClient(TOKEN, api_url=api.url, sleep=lambda s: None, max_attempts=2) as client:
        vid = client.list_versions(Package("ghcr.io/conform/flaky", "conform", "flaky"))[-1].id
        with pytest.raises(TransientError, match="after 2 attempts"):
            client.delete_version(Package("ghcr.io/conform/flaky", "conform", "flaky"), vid)


def test_rate_limit_spent_answers_403_with_remaining_zero(lab, api):
    """When the rate limit is spent: 403 with x-ratelimit-remaining 0, which the client treats as transient."""
    _push(lab, "ghcr.io/conform/limited", 1)
    path = "/orgs/conform/packages/container/limited/versions"
    api.standin.rate_limit, saved = 0, api.standin.rate_limit
    try:
        response = api.get(path)
        assert response.status_code == 403
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert "rate limit" in response.json()["message"]
        with (
            PackagesClient(TOKEN, api_url=api.url, sleep=lambda s: None, max_attempts=1) as client,
            pytest.raises(TransientError),
        ):
            client.list_versions(Package("ghcr.io/conform/limited", "conform", "limited"))
    finally:
        api.standin.rate_limit = saved
