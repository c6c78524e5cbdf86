"""Image cleanup's planner: which package versions go, and why every other one stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from greenlight.clients.packages import PackagesClient, next_link
from greenlight.core.cleanup import PackageVersion, package_of, plan_cleanup
from greenlight.errors import Conflict, Forbidden, InputInvalid, NotFound, TransientError

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def version(n: int, age_days: float, tags: tuple[str, ...] = ()) -> PackageVersion:
    return PackageVersion(id=n, digest=digest(n), tags=tags, created_at=NOW - timedelta(days=age_days))


def signature(n: int, subject: int, age_days: float) -> PackageVersion:
    return version(n, age_days, (f"sha256-{digest(subject)[7:]}.sig",))


def verdicts(versions, protected=None, retention_days=30, keep_newest=2):
    plan = plan_cleanup("ghcr.io/o/app", versions, protected or {}, retention_days, keep_newest, NOW)
    return {v.version.id: (v.action, v.reasons) for v in plan.verdicts}


# Each case: versions (id, age in days, tags), protected digests, and the expected action per id, with a
# fragment of the reason that decides it. keep_newest 2, retention 30 days unless the case says otherwise.
CASES = [
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 40), version(4, 50)],
        {},
        {1: ("keep", "among the 2 newest"), 2: ("keep", "among the 2 newest"),
         3: ("delete", "older than the 30-day retention"), 4: ("delete", "older than the 30-day retention")},
        id="old-versions-beyond-the-newest-go",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 90), version(4, 91)],
        {digest(3): ["live in production (app-blue)"]},
        {3: ("keep", "live in production (app-blue)"), 4: ("delete", "older than")},
        id="live-digest-stays-however-old",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 90), version(4, 91)],
        {digest(4): ["previous colour in staging (app-green)"]},
        {3: ("delete", "older than"), 4: ("keep", "previous colour in staging (app-green)")},
        id="previous-colour-stays",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 60)],
        {digest(3): ["recorded in production release r1 (released, 2026-11-20)"]},
        {3: ("keep", "recorded in production release r1")},
        id="recorded-within-retention-stays",
    ),
    pytest.param(
        [version(1, 100), version(2, 200), version(3, 300)],
        {},
        {1: ("keep", "among the 2 newest"), 2: ("keep", "among the 2 newest"), 3: ("delete", "older than")},
        id="newest-kept-even-when-all-are-old",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 10), version(4, 31)],
        {},
        {3: ("keep", "within the 30-day retention"), 4: ("delete", "older than")},
        id="within-retention-stays",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 30), version(4, 30.0001)],
        {},
        {3: ("keep", "within the 30-day retention"), 4: ("delete", "older than")},
        id="retention-boundary-exactly-30-days-stays",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 60, ("v1.0", "stable")), version(4, 60)],
        {},
        {3: ("delete", "older than"), 4: ("delete", "older than")},
        id="tags-do-not-protect-tagged-and-untagged-alike",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 60, ("v3",)), signature(5, 3, 60),
         version(4, 60), signature(6, 4, 60)],
        {digest(3): ["live in production (app-blue)"]},
        {3: ("keep", "live"), 5: ("keep", "signature of kept"), 4: ("delete", "older than"),
         6: ("delete", "which is deleted")},
        id="signature-follows-its-subject",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), version(3, 60), version(4, 60),
         version(5, 60, (f"sha256-{digest(3)[7:]}",)), version(6, 60, (f"sha256-{digest(4)[7:]}",))],
        {digest(3): ["live in production (app-blue)"]},
        {3: ("keep", "live"), 5: ("keep", "signature of kept"), 4: ("delete", "older than"),
         6: ("delete", "which is deleted")},
        id="cosign3-referrers-tag-follows-its-subject",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), signature(7, 1, 1), signature(8, 2, 50)],
        {},
        {7: ("keep", "signature of kept"), 8: ("keep", "signature of kept"), 1: ("keep", "newest"),
         2: ("keep", "newest")},
        id="signatures-not-counted-among-the-newest",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), signature(9, 99, 50), signature(10, 98, 3)],
        {},
        {9: ("delete", "orphan signature"), 10: ("keep", "orphan signature")},
        id="old-orphan-signature-goes-recent-one-stays",
    ),
    pytest.param(
        [version(1, 1), version(2, 2), signature(11, 97, 50)],
        {digest(97): ["live in staging (app-blue)"]},
        {11: ("keep", "which is protected")},
        id="signature-of-protected-digest-missing-from-listing-stays",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("versions", "protected", "expected"), CASES)
def test_plan_cleanup_verdicts(versions, protected, expected):
    """Each version gets the expected action, with the reason that decides it."""
    got = verdicts(versions, protected)
    assert set(got) == {v.id for v in versions}
    for vid, (action, fragment) in expected.items():
        assert got[vid][0] == action, (vid, got[vid])
        assert any(fragment in r for r in got[vid][1]), (vid, got[vid])


def test_kept_version_lists_every_reason():
    """A version live, recorded and new says so three times: the report shows all that hold it."""
    got = verdicts(
        [version(1, 1)], {digest(1): ["live in staging (a-blue)", "recorded in staging release r"]}
    )
    assert got[1][0] == "keep"
    assert len(got[1][1]) == 4  # live, recorded, among the newest, within the retention


def test_plan_is_newest_first_whatever_the_listing_order():
    """The plan orders versions by push time, newest first (ties by id)."""
    plan = plan_cleanup("ghcr.io/o/a", [version(3, 30), version(1, 1), version(2, 5)], {}, 30, 1, NOW)
    assert [v.version.id for v in plan.verdicts] == [1, 2, 3]


@pytest.mark.parametrize(("retention", "keep"), [(0, 1), (30, 0), (-1, 3)])
def test_plan_refuses_limits_below_one(retention, keep):
    """A retention or a newest count below one is refused: it could plan the last version away."""
    with pytest.raises(InputInvalid):
        plan_cleanup("ghcr.io/o/a", [version(1, 1)], {}, retention, keep, NOW)


def test_plan_refuses_naive_now():
    with pytest.raises(InputInvalid, match="timezone"):
        plan_cleanup("ghcr.io/o/a", [], {}, 30, 1, NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("repository", "owner", "name", "encoded"),
    [
        ("ghcr.io/sma-platform/backend", "sma-platform", "backend", "backend"),
        ("ghcr.io/org/a/b", "org", "a/b", "a%2Fb"),
        ("GHCR.IO/org/x", "org", "x", "x"),
    ],
)
def test_package_of_ghcr_repository(repository, owner, name, encoded):
    """ghcr.io/<owner>/<name>: the owner is the first path component, the rest the package."""
    package = package_of(repository)
    assert (package.owner, package.name, package.encoded) == (owner, name, encoded)


@pytest.mark.parametrize(
    ("repository", "fragment"),
    [
        ("docker.io/library/nginx", "GHCR"),
        ("ghcr.io/onlyowner", "ghcr.io/<owner>/<package>"),
        ("ghcr.io/o/a:v1", "tag or digest"),
        ("ghcr.io/O/Bad", "malformed"),
    ],
)
def test_package_of_refuses_other_repositories(repository, fragment):
    with pytest.raises(InputInvalid, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        package_of(repository)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ('<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last"',
         "https://api.github.com/x?page=2"),
        ('<https://a/x?page=1>; rel="prev", <https://a/x?page=1>; rel="first"', None),
        ('<https://a/x?page=3>; rel="last", <https://a/x?page=2>;rel=next', "https://a/x?page=2"),
    ],
)  # fmt: skip
def test_next_link(header, expected):
    """The next page's URL from a Link header, wherever rel="next" stands."""
    assert next_link(header) == expected


# --- the client's answers to GitHub's statuses, over a mock transport (no SDK: httpx is the client) ---


def _client(handler, **kwargs):
    waits: list[float] = []
    client = PackagesClient(
        "ghp_secret-token-value", api_url="https://api.example", transport=httpx.MockTransport(handler),
        sleep=waits.append, **kwargs,
    )  # fmt: skip
    return client, waits


@pytest.mark.parametrize(
    ("status", "headers", "error", "fragment"),
    [
        (401, {}, Forbidden, "refused the token"),
        (403, {"X-Accepted-OAuth-Scopes": "delete:packages, read:packages"}, Forbidden, "delete:packages"),
        (404, {}, NotFound, "not found"),
        (400, {}, Conflict, "last version"),
        (503, {"retry-after": "2"}, TransientError, "after 3 attempts"),
        (429, {}, TransientError, "HTTP 429"),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "0"}, TransientError, "HTTP 403"),
    ],
)
def test_client_translates_statuses_without_the_token(status, headers, error, fragment):
    """Each status becomes its error kind; the message never carries the token."""

    def handler(request):
        assert request.headers["Authorization"] == "Bearer ghp_secret-token-value"
        assert request.headers["Accept"] == "application/vnd.github+json"
        assert request.headers["X-GitHub-Api-Version"]
        return httpx.Response(status, headers=headers, json={"message": "You cannot delete the last version"})

    client, waits = _client(handler, max_attempts=3)
    from greenlight.core.cleanup import Package

    with pytest.raises(error) as caught:
        client.delete_version(Package("ghcr.io/o/a", "o", "a"), 7)
    assert fragment in str(caught.value)
    assert "ghp_secret" not in str(caught.value)
    if status == 503:
        assert waits == [2.0, 2.0]  # retry-after honoured between the three attempts
        assert caught.value.exhausted


def test_client_retries_a_5xx_then_succeeds():
    """A 502 then a 204: the delete succeeds after one wait."""
    answers = [httpx.Response(502), httpx.Response(204)]
    client, waits = _client(lambda request: answers.pop(0))
    from greenlight.core.cleanup import Package

    client.delete_version(Package("ghcr.io/o/a", "o", "a"), 7)
    assert answers == [] and len(waits) == 1


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"retention_days": 0}, "retention_days"),
        ({"keep_newest": 0}, "keep_newest"),
        ({"environments": ["Staging"]}, "malformed environment name"),
        ({"owner_kind": "team"}, "owner_kind"),
        ({"api_url": "api.github.com"}, "api_url"),
        ({"retention_days": 30, "unknown": 1}, "unknown"),
    ],
)
def test_cleanup_section_refuses_bad_values(section, fragment):
    """A bad registry.cleanup field is refused naming it."""
    from pydantic import ValidationError

    from greenlight.settings import RegistryCleanup

    with pytest.raises(ValidationError, match=fragment):
        RegistryCleanup.model_validate(section)


def test_cleanup_section_defaults():
    from greenlight.settings import RegistryCleanup

    section = RegistryCleanup()
    assert (section.retention_days, section.keep_newest, section.api_url, section.owner_kind) == (
        30, 10, "https://api.github.com", "org",
    )  # fmt: skip
    assert section.environments == []
