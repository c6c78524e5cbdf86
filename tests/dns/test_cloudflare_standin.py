"""The Cloudflare stand-in answers as Cloudflare's API v4 does: raw HTTP for the envelope, codes and
paging, Cloudflare's own SDK for what a client sees, and the product's CloudflareDns for how those
answers become Greenlight's errors (names of zone and record in them, never the token)."""

from __future__ import annotations

import cloudflare
import httpx
import pytest

from greenlight.clients.dns import CloudflareDns
from greenlight.errors import Conflict, Forbidden, InputInvalid, NotFound, TransientError
from greenlight_lab.cloudflare import DEFAULT_PER_PAGE, LAB_DR, LAB_PRIMARY, LAB_RECORD, LAB_ZONE
from greenlight_lab.faults import FaultRule

from .conftest import READ_ONLY, TOKEN, Api


def raw(api: Api, method: str, path: str, token: str | None = TOKEN, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, api.url + path, headers=headers, **kw)  # type: ignore[arg-type]


def zone_id(api: Api) -> str:
    return str(raw(api, "GET", "/zones", params={"name": LAB_ZONE}).json()["result"][0]["id"])


def sdk(api: Api, token: str = TOKEN) -> cloudflare.Cloudflare:
    return cloudflare.Cloudflare(api_token=token, base_url=api.url, max_retries=0)


def test_envelope_and_zone_lookup_by_name(api: Api) -> None:
    """GET /zones?name= answers the envelope (success, errors, messages, result, result_info) with
    exactly the zone named."""
    body = raw(api, "GET", "/zones", params={"name": LAB_ZONE}).json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    assert [z["name"] for z in body["result"]] == [LAB_ZONE]
    assert body["result_info"]["total_count"] == 1
    assert raw(api, "GET", "/zones", params={"name": "nope.example"}).json()["result"] == []


def test_records_come_in_small_pages_and_the_sdk_reads_them_all(api: Api) -> None:
    """The default page holds DEFAULT_PER_PAGE records with result_info; a page past the last is
    empty; the SDK's iterator asks page after page and sees every record."""
    zid = zone_id(api)
    first = raw(api, "GET", f"/zones/{zid}/dns_records").json()
    info = first["result_info"]
    assert len(first["result"]) == DEFAULT_PER_PAGE == info["per_page"] and info["page"] == 1
    assert info["total_count"] > DEFAULT_PER_PAGE and info["total_pages"] > 1
    past = raw(api, "GET", f"/zones/{zid}/dns_records", params={"page": info["total_pages"] + 1}).json()
    assert past["success"] and past["result"] == []
    api.standin.requests.clear()
    names = [r.name for r in sdk(api).dns.records.list(zone_id=zid)]
    assert len(names) == info["total_count"] and LAB_RECORD in names
    pages = [q.query for q in api.standin.requests if q.path.endswith("/dns_records")]
    assert len(pages) == info["total_pages"] + 1, pages  # the last, empty page ends the iteration


def test_name_and_type_filters(api: Api) -> None:
    """``name`` (or ``name.exact``, case-insensitive) and ``type`` filter; ``name.startswith`` too."""
    zid = zone_id(api)
    exact = raw(
        api, "GET", f"/zones/{zid}/dns_records", params={"name": LAB_RECORD.upper(), "type": "A"}
    ).json()
    assert [(r["name"], r["content"]) for r in exact["result"]] == [(LAB_RECORD, LAB_PRIMARY)]
    sdk_exact = list(sdk(api).dns.records.list(zone_id=zid, name={"exact": LAB_RECORD}, type="A"))
    assert [r.content for r in sdk_exact] == [LAB_PRIMARY]
    starts = raw(
        api, "GET", f"/zones/{zid}/dns_records", params={"name.startswith": "svc-0", "per_page": 50}
    ).json()
    assert len(starts["result"]) == 9
    assert (
        raw(api, "GET", f"/zones/{zid}/dns_records", params={"type": "BOGUS"}).json()["errors"][0]["code"]
        == 9020
    )


def test_create_read_edit_overwrite_delete_through_the_sdk(api: Api) -> None:
    """A record made with the SDK reads back, PATCH changes content and TTL, PUT overwrites,
    DELETE answers its id, and then the record is 81044 "Record does not exist." (404)."""
    zid, client = zone_id(api), sdk(api)
    made = client.dns.records.create(
        zone_id=zid, name="drill-x", type="A", content=LAB_DR, ttl=60, comment="c"
    )
    assert made is not None and made.name == f"drill-x.{LAB_ZONE}" and made.comment == "c"
    edited = client.dns.records.edit(
        made.id, zone_id=zid, name=made.name, type="A", content="198.51.100.21", ttl=120
    )
    assert edited is not None and (edited.content, edited.ttl, edited.comment) == ("198.51.100.21", 120, "c")
    put = client.dns.records.update(made.id, zone_id=zid, name=made.name, type="A", content=LAB_DR, ttl=60)
    assert put is not None and put.content == LAB_DR and put.comment is None
    got = client.dns.records.get(made.id, zone_id=zid)
    assert got is not None and got.content == LAB_DR
    assert client.dns.records.delete(made.id, zone_id=zid) is not None
    with pytest.raises(cloudflare.NotFoundError) as e:
        client.dns.records.get(made.id, zone_id=zid)
    assert e.value.body["errors"] == [{"code": 81044, "message": "Record does not exist."}]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "type": "A", "content": "not-an-ip", "ttl": 60}, 9005),
        ({"name": "x", "type": "AAAA", "content": "1.2.3.4", "ttl": 60}, 9006),
        ({"name": "x", "type": "CNAME", "content": "not a host", "ttl": 60}, 9007),
        ({"name": "x", "type": "BOGUS", "content": "1.2.3.4", "ttl": 60}, 9020),
        ({"name": "bad name", "type": "A", "content": "1.2.3.4", "ttl": 60}, 9000),
        ({"name": "x", "type": "A", "content": "1.2.3.4", "ttl": 5}, 9021),
        ({"name": LAB_RECORD, "type": "A", "content": LAB_PRIMARY, "ttl": 60}, 81058),
        ({"name": LAB_RECORD, "type": "CNAME", "content": "lb.example.net", "ttl": 60}, 81053),
        ({"name": f"www.{LAB_ZONE}", "type": "A", "content": "1.2.3.4", "ttl": 60}, 81054),
        ({"type": "A", "content": "1.2.3.4"}, 1004),
    ],
)
def test_validation_errors_carry_cloudflares_codes(api: Api, body: dict[str, object], code: int) -> None:
    """Bad records are 400 with Cloudflare's code, and nothing is stored."""
    zid = zone_id(api)
    before = raw(api, "GET", f"/zones/{zid}/dns_records", params={"per_page": 100}).json()["result_info"][
        "total_count"
    ]
    r = raw(api, "POST", f"/zones/{zid}/dns_records", json=body)
    assert r.status_code == 400 and r.json()["success"] is False
    assert r.json()["errors"][0]["code"] == code, r.json()
    after = raw(api, "GET", f"/zones/{zid}/dns_records", params={"per_page": 100}).json()["result_info"][
        "total_count"
    ]
    assert after == before


@pytest.mark.parametrize(
    ("token", "method", "status", "code"),
    [
        (None, "GET", 400, 9106),
        ("not-a-lab-token", "GET", 401, 10000),
        (READ_ONLY, "POST", 403, 10000),
    ],
)
def test_auth_errors(api: Api, token: str | None, method: str, status: int, code: int) -> None:
    """No token, an unknown token, a read-only token writing: Cloudflare's statuses and codes."""
    zid = zone_id(api)
    body = {"name": "y", "type": "A", "content": "1.2.3.4", "ttl": 60}
    r = raw(api, method, f"/zones/{zid}/dns_records", token=token, json=body if method == "POST" else None)
    assert (r.status_code, r.json()["errors"][0]["code"]) == (status, code)


def test_read_only_token_reads(api: Api) -> None:
    """A read-only token lists records."""
    zid = zone_id(api)
    assert raw(api, "GET", f"/zones/{zid}/dns_records", token=READ_ONLY).json()["success"]


def test_unknown_zone_and_route(api: Api) -> None:
    """An unknown zone id is 404 code 7003; a path that is no route is 404 code 7000."""
    r = raw(api, "GET", "/zones/0123456789abcdef0123456789abcdef/dns_records")
    assert (r.status_code, r.json()["errors"][0]["code"]) == (404, 7003)
    assert raw(api, "GET", "/nothing/here").json()["errors"][0]["code"] == 7000


# --- the product's client over the stand-in ---------------------------------------------------


def client(api: Api, token: str = TOKEN) -> CloudflareDns:
    return CloudflareDns(token, base_url=api.url, max_retries=1)


def test_client_reads_every_page_and_moves_a_record(api: Api) -> None:
    """CloudflareDns finds the zone, lists every record (more than a page), points one and reads it back."""
    with client(api) as c:
        zid = c.zone_id(LAB_ZONE)
        every = c.records(zid, LAB_ZONE)
        assert len(every) > DEFAULT_PER_PAGE
        (prod,) = c.records(zid, LAB_ZONE, name=LAB_RECORD)
        moved = c.point(zid, LAB_ZONE, prod, LAB_DR, 60)
        assert c.get(zid, LAB_ZONE, prod.id, prod.name) == moved and moved.content == LAB_DR


@pytest.mark.parametrize(
    ("make", "kind", "says"),
    [
        (lambda c, z: c.create(z, LAB_ZONE, LAB_RECORD, "A", LAB_PRIMARY, 60), Conflict, "81058"),
        (lambda c, z: c.create(z, LAB_ZONE, "x." + LAB_ZONE, "A", "nope", 60), InputInvalid, "9005"),
        (lambda c, z: c.zone_id("missing.example"), NotFound, "no zone missing.example"),
        (lambda c, z: c.records("0" * 32, LAB_ZONE), NotFound, "7003"),
    ],
)
def test_client_errors_name_zone_and_record(api: Api, make, kind: type[Exception], says: str) -> None:  # type: ignore[no-untyped-def]
    """Refusals become Greenlight's kinds, naming what was done in which zone."""
    with client(api) as c:
        zid = c.zone_id(LAB_ZONE)
        with pytest.raises(kind) as e:
            make(c, zid)
    assert says in str(e.value) and TOKEN not in str(e.value)


@pytest.mark.parametrize("token", [READ_ONLY, "unknown-token-value-000000000000000"])
def test_client_forbidden_never_shows_the_token(api: Api, token: str) -> None:
    """A token refused is Forbidden, naming the zone and the permissions, not the token."""
    with client(api, token) as c, pytest.raises(Forbidden) as e:
        zid = c.zone_id(LAB_ZONE)
        c.create(zid, LAB_ZONE, "y." + LAB_ZONE, "A", "1.2.3.4", 60)
    assert LAB_ZONE in str(e.value) and token not in str(e.value) and token not in repr(e.value.__cause__)


def test_outage_is_transient_after_the_sdks_retries(api: Api) -> None:
    """503 on every call: TransientError (exhausted) naming the zone, after the SDK's retries."""
    rule = api.faults.add(FaultRule("cloudflare", resource="dns_records", count=-1, status=503))
    with client(api) as c:
        zid = c.zone_id(LAB_ZONE)
        with pytest.raises(TransientError) as e:
            c.records(zid, LAB_ZONE, name=LAB_RECORD)
    assert e.value.exhausted and LAB_ZONE in str(e.value) and "503" in str(e.value)
    assert api.faults.get(rule.id)["fired"] == 2  # type: ignore[index]  # the call and the SDK's one retry


def test_rate_limit_is_waited_out_by_the_sdk(api: Api) -> None:
    """One 429 (code 971, retry-after) then the answer: the SDK waits and the call succeeds."""
    rule = api.faults.add(FaultRule("cloudflare", verb="get", resource="zones", status=429, retry_after=0.2))
    with client(api) as c:
        assert c.zone_id(LAB_ZONE)
    assert api.faults.get(rule.id)["fired"] == 1  # type: ignore[index]
