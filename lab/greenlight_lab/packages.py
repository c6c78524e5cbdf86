"""A GitHub Packages REST API stand-in for the container packages of the lab's :class:`Catalogue`.

GHCR deletes images through the GitHub REST API, not the OCI API: a container package is an
image name (``ghcr.io/<owner>/<package>``; a package name with a slash is sent URL-encoded,
``a%2Fb``), and each stored manifest is one of its versions. What it answers, as GitHub does:

- ``GET /orgs/{org}/packages/container/{package}/versions``, ``/users/{user}/...`` and
  ``/user/...`` (the token's own login): versions newest first, ``per_page`` (default 30, at most
  100) and ``page`` (from 1); a ``Link`` header with ``rel="next"``, ``"last"``, ``"first"`` and
  ``"prev"`` as they apply (none when everything fits on one page). Each version:
  ``{id, name: "sha256:...", url, package_html_url, created_at, updated_at, html_url,
  metadata: {package_type: "container", container: {tags: [...]}}}``.
- ``GET .../versions/{id}`` one version; ``DELETE .../versions/{id}`` -> 204; deleting the last
  version of a package -> 400 "You cannot delete the last version of a package. You must delete
  the package instead."
- Auth: ``Authorization: Bearer <token>`` (or ``token <token>``); no or an unknown token -> 401
  "Bad credentials"; a token without ``read:packages`` (listing) or ``delete:packages``
  (deleting) -> 403 naming the scope, with ``X-Accepted-OAuth-Scopes`` and ``X-OAuth-Scopes``.
- Unknown package or version -> 404 "Package not found." / "Not Found"; a package type other
  than ``container`` -> 404.
- Every answer carries ``x-ratelimit-limit``, ``-remaining``, ``-used``, ``-reset`` and
  ``-resource``; when ``rate_limit`` requests were spent, 403 "API rate limit exceeded" with
  ``x-ratelimit-remaining: 0`` (until :meth:`reset_rate_limit`).

Owners map to the catalogue as ``ghcr.io/<owner>/<package>`` (compared case-insensitively).
Faults: ``faults.take("packages", <method>, "versions")``: ``error`` answers the rule's status
(with ``retry-after`` when the rule has one), ``stall`` holds the call. Every request is appended
to ``requests`` (method, path, query, status), never with its token.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import web

from greenlight_lab import serving
from greenlight_lab.catalogue import Catalogue
from greenlight_lab.faults import FaultRegistry

HOST = "ghcr.io"
DOCS = "https://docs.github.com/rest/packages/packages"
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
RATE_LIMIT = 5000
READ_SCOPE = "read:packages"
DELETE_SCOPE = "delete:packages"
LAST_VERSION = "You cannot delete the last version of a package. You must delete the package instead."

#: the lab's packages token (greenlight lab up makes one per lab) and the login it belongs to
PACKAGES_TOKEN_ENV = "GREENLIGHT_LAB_PACKAGES_TOKEN"
LAB_LOGIN = "greenlight-lab-bot"


@dataclass(frozen=True)
class Grant:
    """What a token may do: the user it authenticates and its OAuth scopes."""

    login: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class PackagesRequest:
    """One request the stand-in answered (never its token)."""

    method: str
    path: str
    query: str
    status: int


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PackagesStandIn:
    """The GitHub Packages HTTP server. Start and stop it on the caller's event loop."""

    def __init__(
        self,
        catalogue: Catalogue,
        faults: FaultRegistry,
        tokens: dict[str, Grant] | None = None,
        rate_limit: int = RATE_LIMIT,
    ) -> None:
        self.catalogue = catalogue
        self.faults = faults
        self.tokens: dict[str, Grant] = dict(tokens or {})
        self.rate_limit = rate_limit
        self.requests: list[PackagesRequest] = []
        self._used = 0
        self._reset_at = int(time.time()) + 3600
        self._runner: web.AppRunner | None = None
        self._base_url = ""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` once started (the API's root, like https://api.github.com)."""
        return self._base_url

    def reset_rate_limit(self) -> None:
        self._used = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: a free port); return the bound port."""
        app = web.Application(middlewares=[self._record])
        for prefix in ("/orgs/{owner}", "/users/{owner}", "/user"):
            base = prefix + "/packages/{package_type}/{package}/versions"
            app.router.add_get(base, self._list)
            app.router.add_get(base + "/{version_id}", self._get)
            app.router.add_delete(base + "/{version_id}", self._delete)
        self._runner, bound = await serving.serve(app, host, port)
        self._base_url = f"http://{host}:{bound}"
        return bound

    async def stop(self) -> None:
        await serving.close(self._runner)
        self._runner = None

    # --- middleware: rate limit headers, record every answer -------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self._used += 1
        if self._used > self.rate_limit:
            response: web.StreamResponse = self._message(
                403,
                "API rate limit exceeded for user. (But here's the good news: Authenticated requests "
                "get a higher rate limit.)",
            )
        else:
            try:
                response = await handler(request)
            except web.HTTPException as e:
                response = e
        remaining = max(0, self.rate_limit - self._used)
        response.headers.update(
            {
                "x-ratelimit-limit": str(self.rate_limit),
                "x-ratelimit-remaining": str(remaining),
                "x-ratelimit-used": str(min(self._used, self.rate_limit)),
                "x-ratelimit-reset": str(self._reset_at),
                "x-ratelimit-resource": "core",
                "X-GitHub-Api-Version-Selected": request.headers.get("X-GitHub-Api-Version", "2022-11-28"),
            }
        )
        self.requests.append(
            PackagesRequest(request.method, request.path, request.query_string, response.status)
        )
        return response

    # --- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _message(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        body = {"message": message, "documentation_url": DOCS, "status": str(status)}
        return web.json_response(body, status=status, headers=headers or {})

    async def _fault(self, request: web.Request) -> web.Response | None:
        rule = self.faults.take("packages", request.method.lower(), "versions")
        if rule is None:
            return None
        if rule.mode == "stall":
            await asyncio.sleep(rule.stall_s)
            return None
        headers = {"retry-after": f"{rule.retry_after:g}"} if rule.retry_after is not None else {}
        return self._message(rule.status, f"injected fault #{rule.id}", headers)

    def _grant(self, request: web.Request) -> Grant | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.tokens.get(token.strip())

    def _check(self, request: web.Request, scope: str) -> tuple[Grant | None, web.Response | None]:
        """(the grant, None) when the token may use ``scope``; (None, the 401/403 answer) otherwise."""
        grant = self._grant(request)
        if grant is None:
            return None, self._message(401, "Bad credentials")
        needed = {READ_SCOPE} | ({scope} if scope == DELETE_SCOPE else set())
        headers = {
            "X-OAuth-Scopes": ", ".join(sorted(grant.scopes)),
            "X-Accepted-OAuth-Scopes": ", ".join(sorted(needed)),
        }
        missing = sorted(needed - grant.scopes)
        if missing:
            return None, self._message(
                403,
                f"You need at least {missing[0]} scope to {'delete' if scope == DELETE_SCOPE else 'list'} packages.",
                headers,
            )
        return grant, None

    def _image(self, request: web.Request, grant: Grant) -> tuple[str, str, str] | None:
        """(owner, package name, catalogue image name) of the request; None when no such package."""
        if request.match_info["package_type"] != "container":
            return None
        owner = request.match_info.get("owner") or grant.login
        package = unquote(request.match_info["package"])
        name = f"{HOST}/{owner.lower()}/{package}"
        return (owner, package, name) if self.catalogue.has_image(name) else None

    def _kind(self, request: web.Request) -> str:
        path = request.path
        return "orgs" if path.startswith("/orgs/") else "users" if path.startswith("/users/") else "user"

    def _version(self, request: web.Request, owner: str, package: str, row: dict[str, Any]) -> dict[str, Any]:
        kind = self._kind(request)
        encoded = quote(package, safe="")
        api_prefix = f"/orgs/{owner}" if kind == "orgs" else f"/users/{owner}" if kind == "users" else "/user"
        html_owner = f"orgs/{owner}" if kind == "orgs" else owner
        return {
            "id": row["id"],
            "name": row["digest"],
            "url": f"{self._base_url}{api_prefix}/packages/container/{encoded}/versions/{row['id']}",
            "package_html_url": f"https://github.com/{html_owner}/packages/container/package/{encoded}",
            "created_at": _iso(row["pushed_at"]),
            "updated_at": _iso(row["pushed_at"]),
            "html_url": f"https://github.com/{html_owner}/packages/container/{encoded}/{row['id']}",
            "metadata": {"package_type": "container", "container": {"tags": row["tags"]}},
        }

    @staticmethod
    def _positive(request: web.Request, name: str, default: int) -> int | web.Response:
        raw = request.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            return PackagesStandIn._message(422, f"Invalid request.\n\n{raw!r} is not a valid {name}.")
        return value

    async def _package(self, request: web.Request, scope: str) -> tuple[str, str, str] | web.Response:
        """What every route does first: an injected fault, the token's right to ``scope``, then
        (owner, package name, catalogue image name) of the package; else the answer to give."""
        fault = await self._fault(request)
        if fault is not None:
            return fault
        grant, refused = self._check(request, scope)
        if refused is not None:
            return refused
        assert grant is not None
        found = self._image(request, grant)
        return self._message(404, "Package not found.") if found is None else found

    # --- handlers --------------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        found = await self._package(request, READ_SCOPE)
        if isinstance(found, web.Response):
            return found
        owner, package, name = found
        per_page = self._positive(request, "per_page", DEFAULT_PER_PAGE)
        page = self._positive(request, "page", 1)
        if isinstance(per_page, web.Response):
            return per_page
        if isinstance(page, web.Response):
            return page
        per_page = min(per_page, MAX_PER_PAGE)
        rows = self.catalogue.versions(name)
        last = max(1, -(-len(rows) // per_page))
        chunk = rows[(page - 1) * per_page : page * per_page]
        headers = {}
        links = []

        def link(p: int, rel: str) -> str:
            query = {k: v for k, v in request.query.items() if k not in ("page", "per_page")}
            query.update({"per_page": str(per_page), "page": str(p)})
            qs = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
            return f'<{self._base_url}{request.raw_path.split("?", 1)[0]}?{qs}>; rel="{rel}"'

        if page > 1:
            links += [link(min(page - 1, last), "prev"), link(1, "first")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if links:
            headers["Link"] = ", ".join(links)
        return web.json_response([self._version(request, owner, package, r) for r in chunk], headers=headers)

    async def _get(self, request: web.Request) -> web.Response:
        found = await self._package(request, READ_SCOPE)
        if isinstance(found, web.Response):
            return found
        owner, package, name = found
        for row in self.catalogue.versions(name):
            if str(row["id"]) == request.match_info["version_id"]:
                return web.json_response(self._version(request, owner, package, row))
        return self._message(404, "Not Found")

    async def _delete(self, request: web.Request) -> web.Response:
        found = await self._package(request, DELETE_SCOPE)
        if isinstance(found, web.Response):
            return found
        _, _, name = found
        raw_id = request.match_info["version_id"]
        rows = self.catalogue.versions(name)
        if not raw_id.isdigit() or all(row["id"] != int(raw_id) for row in rows):
            return self._message(404, "Not Found")
        if len(rows) == 1:
            return self._message(400, LAST_VERSION)
        self.catalogue.delete_version(name, int(raw_id))
        return web.Response(status=204)
