"""A Cloudflare API v4 stand-in for DNS records, held to what the real API answers.

Routes (under ``/client/v4``, the SDK's base URL):

- ``GET /zones?name=`` (and ``page``/``per_page``): the zones the token may read;
- ``GET|POST /zones/{zone_id}/dns_records``: list (filters ``name``, ``type``, ``content``, also as
  ``name.exact``/``name.startswith``/``name.endswith``/``name.contains``, case-insensitive; ``match``
  any|all; ``page`` from 1, ``per_page``), create;
- ``GET|PATCH|PUT|DELETE /zones/{zone_id}/dns_records/{id}``: read, edit some fields, overwrite, delete.

Every answer is the real envelope ``{"success", "errors": [{"code", "message"}], "messages",
"result"}``, lists with ``result_info`` ``{page, per_page, count, total_count, total_pages}``.
**The default page is small on purpose** (:data:`DEFAULT_PER_PAGE` records; Cloudflare's is 100),
so a client that reads one page only misses records; a page past the last is empty, as the real
API's (the SDK pages until one is).

Errors, with Cloudflare's codes:

- no or malformed ``Authorization: Bearer`` -> 400, 9106 "Missing X-Auth-Key, X-Auth-Email or
  Authorization headers"; an unknown token -> 401, 10000 "Authentication error"; a token without
  DNS write on a write -> 403, 10000 "Authentication error";
- an unknown zone id -> 404, 7003 "Could not route to /zones/..., perhaps your object identifier
  is invalid?"; an unknown record -> 404, 81044 "Record does not exist.";
- validation -> 400: 9020 "Invalid DNS record type"; 9005 "Content for A record must be a valid
  IPv4 address."; 9007 "Content for CNAME record is invalid."; 9000 "DNS name is invalid."; 9021 an
  invalid TTL (1 or 60..86400); 81058 "An identical record already exists."; 81053 "An A, AAAA, or
  CNAME record with that host already exists." (a CNAME where another record is); 81054 "A CNAME
  record with that host already exists."; 1004 "DNS Validation Error" when the body is not JSON or
  lacks ``name``/``type``/``content``.

Names are stored in full: a name without the zone's suffix gets it, ``@`` is the apex.
Faults: ``faults.take("cloudflare", <method>, "zones"|"dns_records")``: ``error`` answers the rule's
status in the envelope (429: code 971 and ``retry-after`` when the rule has one), ``stall`` holds
the call. Every request is appended to ``requests`` (method, path, query, status), never its token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import secrets
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from greenlight_lab import serving
from greenlight_lab.faults import FaultRegistry

BASE_PATH = "/client/v4"
Handler = Callable[[web.Request], Awaitable[web.Response]]
DEFAULT_PER_PAGE = 5
MAX_PER_PAGE = 5000
ZONE_DEFAULT_PER_PAGE = 20
ZONE_MAX_PER_PAGE = 50
TYPES = {"A", "AAAA", "CNAME", "TXT", "MX", "NS", "SRV", "CAA"}

#: the lab's tokens (greenlight lab up makes them per lab): one may edit DNS, one may only read
TOKEN_ENV = "GREENLIGHT_LAB_CLOUDFLARE_TOKEN"
READONLY_TOKEN_ENV = "GREENLIGHT_LAB_CLOUDFLARE_READONLY_TOKEN"

#: the zone and records the lab starts with (its profiles' ``dns`` sections name them)
LAB_ZONE = "sma-platform.example"
LAB_RECORD = "app.sma-platform.example"
LAB_PRIMARY = "203.0.113.10"
LAB_DR = "198.51.100.20"
_LABEL = re.compile(r"^(\*|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)$")


@dataclass(frozen=True)
class CloudflareRequest:
    """One request the stand-in answered (never its token)."""

    method: str
    path: str
    query: str
    status: int


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id() -> str:
    return secrets.token_hex(16)


class CloudflareStandIn:
    """The Cloudflare API HTTP server. Start and stop it on the caller's event loop."""

    def __init__(self, faults: FaultRegistry, tokens: dict[str, bool] | None = None) -> None:
        """``tokens``: token -> whether it may write DNS records."""
        self.faults = faults
        self.tokens = dict(tokens or {})
        self.requests: list[CloudflareRequest] = []
        self.zones: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}  # zone id -> record id -> record
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.seed()

    def seed(self) -> None:
        """The lab's zones: ``sma-platform.example`` with the production record at the primary target
        and filler records (more than a page), and ``other.example`` (a zone to tell apart)."""
        with self._lock:
            self.zones.clear()
            self.records.clear()
        zone = self.add_zone(LAB_ZONE)
        self.add_zone("other.example")
        self.put_record(zone, LAB_RECORD, "A", LAB_PRIMARY, 60)
        for i in range(1, 13):
            self.put_record(zone, f"svc-{i:02d}.{LAB_ZONE}", "A", f"192.0.2.{i}", 300)
        self.put_record(zone, LAB_ZONE, "TXT", '"v=spf1 -all"', 3600)
        self.put_record(zone, f"www.{LAB_ZONE}", "CNAME", LAB_RECORD, 300)

    def add_zone(self, name: str) -> str:
        zid = _id()
        now = _now()
        with self._lock:
            self.zones[zid] = {
                "id": zid, "name": name, "status": "active", "paused": False, "type": "full",
                "development_mode": 0, "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
                "original_name_servers": None, "original_registrar": None, "original_dnshost": None,
                "created_on": now, "modified_on": now, "activated_on": now,
                "meta": {"step": 4, "custom_certificate_quota": 0, "page_rule_quota": 3, "phishing_detected": False},
                "owner": {"id": None, "type": "user", "email": None},
                "account": {"id": "lab-account", "name": "Greenlight lab"},
                "permissions": ["#dns_records:read", "#dns_records:edit", "#zone:read"],
                "plan": {"id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website", "price": 0,
                         "currency": "USD", "frequency": "", "is_subscribed": False, "can_subscribe": False,
                         "legacy_id": "free", "legacy_discount": False, "externally_managed": False},
            }  # fmt: skip
            self.records[zid] = {}
        return zid

    def put_record(self, zone_id: str, name: str, rtype: str, content: str, ttl: int) -> dict[str, Any]:
        """Store a record as it is (no validation: the lab's own seed)."""
        record = self._record(zone_id, _id(), name, rtype, content, ttl, None, _now())
        with self._lock:
            self.records[zone_id][record["id"]] = record
        return record

    def snapshot(self) -> dict[str, Any]:
        """Every zone with its records, for the lab's control API."""
        with self._lock:
            return {
                z["name"]: {"id": zid, "records": sorted(self.records[zid].values(), key=lambda r: r["name"])}
                for zid, z in self.zones.items()
            }

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        app = web.Application(middlewares=[self._record_request])
        b = BASE_PATH
        records, record = (
            f"{b}/zones/{{zone_id}}/dns_records",
            f"{b}/zones/{{zone_id}}/dns_records/{{record_id}}",
        )
        # (method, path, the resource a fault rule names, whether the token must be an edit token)
        for method, path, resource, write, handler in (
            ("GET", f"{b}/zones", "zones", False, self._list_zones),
            ("GET", records, "dns_records", False, self._list),
            ("POST", records, "dns_records", True, self._create),
            ("GET", record, "dns_records", False, self._get),
            ("PATCH", record, "dns_records", True, self._edit),
            ("PUT", record, "dns_records", True, self._overwrite),
            ("DELETE", record, "dns_records", True, self._delete),
        ):
            app.router.add_route(method, path, self._guarded(resource, write, handler))
        self._runner, bound = await serving.serve(app, host, port)
        self.base_url = f"http://{host}:{bound}{BASE_PATH}"
        return bound

    async def stop(self) -> None:
        await serving.close(self._runner)
        self._runner = None

    # --- envelope, auth, faults ------------------------------------------------------------------

    @web.middleware
    async def _record_request(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPNotFound:
            response = _fail(404, 7000, "No route for that URI")
        except web.HTTPMethodNotAllowed:
            response = _fail(405, 10405, "Method not allowed for api_token authentication")
        self.requests.append(
            CloudflareRequest(request.method, request.path, request.query_string, response.status)
        )
        return response

    def _guarded(self, resource: str, write: bool, handler: Handler) -> Handler:
        """``handler`` behind :meth:`_guard`: a fault or a refused token answers before it runs."""

        async def guarded(request: web.Request) -> web.Response:
            refused = await self._guard(request, resource, write)
            return refused if refused is not None else await handler(request)

        return guarded

    async def _guard(self, request: web.Request, resource: str, write: bool = False) -> web.Response | None:
        """An injected fault, else the token's right to the call; None when the call goes on."""
        rule = self.faults.take("cloudflare", request.method.lower(), resource)
        if rule is not None:
            if rule.mode == "stall":
                await asyncio.sleep(rule.stall_s)
            else:
                headers = {"retry-after": f"{rule.retry_after:g}"} if rule.retry_after is not None else {}
                if rule.status == 429:
                    return _fail(429, 971, "Please wait and consider throttling your request speed", headers)
                return _fail(rule.status, 10001, f"injected fault #{rule.id}", headers)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _fail(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        may_write = self.tokens.get(token.strip())
        if may_write is None:
            return _fail(401, 10000, "Authentication error")
        if write and not may_write:
            return _fail(403, 10000, "Authentication error")
        return None

    def _zone(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        zid = request.match_info["zone_id"]
        with self._lock:
            zone = self.zones.get(zid)
        if zone is None:
            return _fail(
                404, 7003, f"Could not route to {request.path}, perhaps your object identifier is invalid?"
            )
        return zid, zone

    # --- zones -----------------------------------------------------------------------------------

    async def _list_zones(self, request: web.Request) -> web.Response:
        paging = _paging(request, ZONE_DEFAULT_PER_PAGE, ZONE_MAX_PER_PAGE)
        if isinstance(paging, web.Response):
            return paging
        name = request.query.get("name") or request.query.get("name.exact")
        with self._lock:
            zones = [z for z in self.zones.values() if name is None or z["name"] == name.lower().rstrip(".")]
        zones.sort(key=lambda z: z["name"])
        return _page(zones, *paging)

    # --- records ---------------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        found = self._zone(request)
        if isinstance(found, web.Response):
            return found
        zid, _ = found
        paging = _paging(request, DEFAULT_PER_PAGE, MAX_PER_PAGE)
        if isinstance(paging, web.Response):
            return paging
        q = request.query
        if "type" in q and q["type"] not in TYPES:
            return _fail(400, 9020, "Invalid DNS record type")
        tests = []
        for field in ("name", "content"):
            for op in ("", ".exact", ".startswith", ".endswith", ".contains"):
                if field + op in q:
                    tests.append((field, op.lstrip(".") or "exact", q[field + op].lower()))
        if "type" in q:
            tests.append(("type", "exact", q["type"].lower()))
        match_all = q.get("match", "all") != "any"
        with self._lock:
            records = list(self.records[zid].values())
        chosen = [r for r in records if not tests or (all if match_all else any)(_test(r, t) for t in tests)]
        chosen.sort(key=lambda r: (r["type"], r["name"], r["content"], r["id"]))
        return _page(chosen, *paging)

    async def _create(self, request: web.Request) -> web.Response:
        found = self._zone(request)
        if isinstance(found, web.Response):
            return found
        zid, zone = found
        body = await _body(request)
        if body is None:
            return _fail(400, 1004, "DNS Validation Error")
        checked = self._validate(zid, zone, body, None)
        if isinstance(checked, web.Response):
            return checked
        name, rtype, content, ttl = checked
        record = self._record(zid, _id(), name, rtype, content, ttl, body.get("comment"), _now())
        with self._lock:
            self.records[zid][record["id"]] = record
        return _ok(record)

    async def _get(self, request: web.Request) -> web.Response:
        found = self._existing(request)
        return found if isinstance(found, web.Response) else _ok(found[1])

    async def _edit(self, request: web.Request) -> web.Response:
        return await self._change(request, partial=True)

    async def _overwrite(self, request: web.Request) -> web.Response:
        return await self._change(request, partial=False)

    async def _change(self, request: web.Request, partial: bool) -> web.Response:
        found = self._existing(request)
        if isinstance(found, web.Response):
            return found
        zid, old = found
        body = await _body(request)
        if body is None:
            return _fail(400, 1004, "DNS Validation Error")
        merged = (
            {**{k: old[k] for k in ("name", "type", "content", "ttl", "comment")}, **body}
            if partial
            else body
        )
        checked = self._validate(zid, self.zones[zid], merged, old["id"])
        if isinstance(checked, web.Response):
            return checked
        name, rtype, content, ttl = checked
        comment = merged.get("comment") if "comment" in merged else None
        record = self._record(zid, old["id"], name, rtype, content, ttl, comment, old["created_on"])
        with self._lock:
            self.records[zid][old["id"]] = record
        return _ok(record)

    async def _delete(self, request: web.Request) -> web.Response:
        found = self._existing(request)
        if isinstance(found, web.Response):
            return found
        zid, record = found
        with self._lock:
            self.records[zid].pop(record["id"], None)
        return _ok({"id": record["id"]})

    # --- helpers ---------------------------------------------------------------------------------

    def _existing(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        found = self._zone(request)
        if isinstance(found, web.Response):
            return found
        zid, _ = found
        with self._lock:
            record = self.records[zid].get(request.match_info["record_id"])
        if record is None:
            return _fail(404, 81044, "Record does not exist.")
        return zid, record

    def _validate(
        self, zid: str, zone: dict[str, Any], body: dict[str, Any], own_id: str | None
    ) -> tuple[str, str, str, int] | web.Response:
        """(full name, type, content, ttl) of a record body, or the 400 Cloudflare answers."""
        name, rtype, content = body.get("name"), body.get("type"), body.get("content")
        if not isinstance(name, str) or not isinstance(rtype, str) or not isinstance(content, str):
            return _fail(400, 1004, "DNS Validation Error")
        if rtype not in TYPES:
            return _fail(400, 9020, "Invalid DNS record type")
        full = _full_name(name, zone["name"])
        if full is None:
            return _fail(400, 9000, "DNS name is invalid.")
        if rtype == "A":
            try:
                ipaddress.IPv4Address(content)
            except ValueError:
                return _fail(400, 9005, "Content for A record must be a valid IPv4 address.")
        if rtype == "AAAA":
            try:
                ipaddress.IPv6Address(content)
            except ValueError:
                return _fail(400, 9006, "Content for AAAA record must be a valid IPv6 address.")
        if rtype == "CNAME" and _full_name(content, "") is None:
            return _fail(400, 9007, "Content for CNAME record is invalid.")
        ttl = body.get("ttl", 1)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not (ttl == 1 or 60 <= ttl <= 86400):
            return _fail(400, 9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.")
        if rtype == "CNAME":
            content = content.rstrip(".").lower()
        with self._lock:
            others = [r for r in self.records[zid].values() if r["name"] == full and r["id"] != own_id]
        if any(r["type"] == rtype and r["content"] == content for r in others):
            return _fail(400, 81058, "An identical record already exists.")
        if rtype == "CNAME" and others:
            return _fail(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
        if rtype in ("A", "AAAA") and any(r["type"] == "CNAME" for r in others):
            return _fail(400, 81054, "A CNAME record with that host already exists.")
        return full, rtype, content, ttl

    def _record(
        self, zid: str, rid: str, name: str, rtype: str, content: str, ttl: int, comment: Any, created: str
    ) -> dict[str, Any]:
        now = _now()
        return {
            "id": rid, "zone_id": zid, "zone_name": self.zones[zid]["name"], "name": name, "type": rtype,
            "content": content, "proxiable": rtype in ("A", "AAAA", "CNAME"), "proxied": False, "ttl": ttl,
            "settings": {}, "meta": {}, "comment": comment if isinstance(comment, str) else None, "tags": [],
            "created_on": created, "modified_on": now,
        }  # fmt: skip


def _full_name(name: str, zone: str) -> str | None:
    """``name`` in full (the zone appended when missing; ``@`` the apex), or None when invalid."""
    n = name.strip().rstrip(".").lower()
    if n == "@":
        n = zone
    elif zone and n != zone and not n.endswith("." + zone):
        n = f"{n}.{zone}"
    if not n or len(n) > 253 or not all(_LABEL.match(label) for label in n.split(".")):
        return None
    return n


def _test(record: dict[str, Any], test: tuple[str, str, str]) -> bool:
    field, op, value = test
    have = str(record[field]).lower()
    if op == "exact":
        return have == value.rstrip(".") if field == "name" else have == value
    if op == "startswith":
        return have.startswith(value)
    if op == "endswith":
        return have.endswith(value)
    return value in have


def _paging(request: web.Request, default: int, most: int) -> tuple[int, int] | web.Response:
    try:
        page = int(request.query.get("page", "1"))
        per_page = int(request.query.get("per_page", str(default)))
    except ValueError:
        return _fail(400, 1001, "Invalid request: page and per_page must be integers")
    if page < 1 or not 1 <= per_page <= most:
        return _fail(400, 1001, f"Invalid request: page must be >= 1 and per_page between 1 and {most}")
    return page, per_page


def _page(items: list[dict[str, Any]], page: int, per_page: int) -> web.Response:
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page, "per_page": per_page, "count": len(chunk), "total_count": len(items),
        "total_pages": max(1, -(-len(items) // per_page)),
    }  # fmt: skip
    return web.json_response(
        {"success": True, "errors": [], "messages": [], "result": chunk, "result_info": info}
    )


def _ok(result: Any) -> web.Response:
    return web.json_response({"success": True, "errors": [], "messages": [], "result": result})


def _fail(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"success": False, "errors": [{"code": code, "message": message}], "messages": [], "result": None}
    return web.json_response(body, status=status, headers=headers or {})


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def tokens_from_environment(environ: dict[str, str]) -> dict[str, bool]:
    """The lab's tokens the daemon was started with: the editing one and the read-only one."""
    tokens = {}
    if environ.get(TOKEN_ENV):
        tokens[environ[TOKEN_ENV]] = True
    if environ.get(READONLY_TOKEN_ENV):
        tokens[environ[READONLY_TOKEN_ENV]] = False
    return tokens


def routes(standin: CloudflareStandIn) -> list[web.RouteDef]:
    """The lab control API's routes for the stand-in: ``GET /cloudflare`` (zones, records and the
    requests answered), ``POST /cloudflare/reset`` (the seed again, requests forgotten)."""

    async def show(_: web.Request) -> web.Response:
        return web.json_response(
            {"zones": standin.snapshot(), "requests": [r.__dict__ for r in standin.requests]}
        )

    async def reset(_: web.Request) -> web.Response:
        standin.seed()
        standin.requests.clear()
        return web.json_response({"zones": standin.snapshot()})

    return [web.get("/cloudflare", show), web.post("/cloudflare/reset", reset)]
