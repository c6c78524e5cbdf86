"""An OCI distribution API stand-in serving the lab's :class:`Catalogue`, with GHCR-style auth.

Clients reach it through ``GREENLIGHT_REGISTRY_MIRRORS`` (``ghcr.io=http://127.0.0.1:PORT``),
so it answers for any registry host: requests name only the repository path.

What it does, as GHCR does:
- ``GET /v2/`` without a valid token -> 401 with
  ``WWW-Authenticate: Bearer realm="http://127.0.0.1:PORT/token",service="lab-registry"``.
- ``GET /token?scope=repository:<repo>:pull&service=lab-registry`` -> ``{"token", "access_token",
  "expires_in"}``; anonymous pull is allowed, Basic auth is accepted (checked only when the
  stand-in was given ``users``).
- ``HEAD``/``GET /v2/<name>/manifests/<tag|digest>`` with a token whose scope covers ``<name>``
  -> 200, ``Docker-Content-Digest``, ``Content-Type``: the manifest's media type (an image
  manifest, or ``application/vnd.oci.image.index.v1+json`` for a multi-platform image's index,
  whose platform manifests are served by digest);
  otherwise 401 + challenge with the needed scope. Unknown repository -> 404 NAME_UNKNOWN,
  unknown tag or digest -> 404 MANIFEST_UNKNOWN.
- ``GET /v2/<name>/tags/list`` (``n`` and ``last`` paginate; cosign's ``.sig`` tags included) and ``GET /v2/<name>/blobs/<digest>``
  (config blobs, and the blobs of cosign signatures).
- cosign signatures (greenlight_lab.signing): ``GET /v2/<name>/manifests/sha256-<hex>.sig`` -> the
  signature manifest of that digest (404 MANIFEST_UNKNOWN when the image is unsigned), its payload
  blobs by digest. ``corrupt_signature_blobs`` (a test sets it) serves every signature payload
  with one byte changed: a registry (or a mirror) whose content no longer matches its digests.

Faults: ``faults.take("registry", <method>, "manifests"|"token"|"tags"|"blobs"|"base")``.
``realm`` (None: its own ``/token``) is the token realm its challenges name: a test sets it to
another host's URL to play a hostile or compromised registry (or mirror).
Every request is appended to ``requests`` (method, path, status, had-authorization, accept) so
tests can count what the client really sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from greenlight_lab import serving
from greenlight_lab.catalogue import OCI_CONFIG, Catalogue
from greenlight_lab.faults import FaultRegistry

SERVICE = "lab-registry"
TOKEN_TTL_S = 300


@dataclass(frozen=True)
class RequestRecord:
    """One request the stand-in answered."""

    method: str
    path: str
    status: int
    authorization: str | None  # "bearer", "basic" or None; never the credential itself
    accept: str


def _errors(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message, "detail": detail or {}}]}


# the daemon's registry user (greenlight lab up makes the password per lab)
REGISTRY_USERNAME_ENV = "GREENLIGHT_LAB_REGISTRY_USERNAME"
REGISTRY_PASSWORD_ENV = "GREENLIGHT_LAB_REGISTRY_PASSWORD"


class RegistryStandIn:
    """The registry HTTP server. Start and stop it on the caller's event loop."""

    def __init__(
        self,
        catalogue: Catalogue,
        faults: FaultRegistry,
        require_auth: bool = True,
        users: dict[str, str] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.faults = faults
        self.require_auth = require_auth
        self.users = users
        self.requests: list[RequestRecord] = []
        # Some registries omit Docker-Content-Digest; clients must then hash the body.
        self.send_digest_header = True
        # Signature payload blobs served with a byte changed (their digests then do not match).
        self.corrupt_signature_blobs = False
        # The token realm the challenges name; None: this stand-in's own /token.
        self.realm: str | None = None
        self._tokens: dict[str, tuple[frozenset[str], float]] = {}
        self._runner: web.AppRunner | None = None
        self._base_url = ""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host:port`` (0: a free port); return the bound port."""
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/v2/", self._base)
        app.router.add_get("/token", self._token)
        app.router.add_get(r"/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_get(r"/v2/{name:.+}/tags/list", self._tags)
        app.router.add_get(r"/v2/{name:.+}/blobs/{digest}", self._blob)
        self._runner, bound = await serving.serve(app, host, port)
        self._base_url = f"http://{host}:{bound}"
        return bound

    async def stop(self) -> None:
        """Stop listening and drop issued tokens."""
        await serving.close(self._runner)
        self._runner = None
        self._tokens.clear()

    # --- middleware: record every answer -------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as e:
            response = e
        scheme = request.headers.get("Authorization", "").split(" ", 1)[0].lower() or None
        self.requests.append(
            RequestRecord(
                method=request.method,
                path=request.path,
                status=response.status,
                authorization=scheme,
                accept=request.headers.get("Accept", ""),
            )
        )
        if isinstance(response, web.HTTPException):
            raise response
        return response

    # --- faults and auth -----------------------------------------------------------------------

    async def _fault(self, request: web.Request, resource: str) -> web.Response | None:
        rule = self.faults.take("registry", request.method.lower(), resource)
        if rule is None:
            return None
        if rule.mode == "stall":
            await asyncio.sleep(rule.stall_s)
            return None
        headers = {"Retry-After": f"{rule.retry_after:g}"} if rule.retry_after is not None else {}
        return web.json_response(
            _errors("UNAVAILABLE", f"injected fault #{rule.id}"), status=rule.status, headers=headers
        )

    def _challenge(self, scope: str | None, error: str | None = None) -> web.Response:
        realm = self.realm if self.realm is not None else f"{self._base_url}/token"
        value = f'Bearer realm="{realm}",service="{SERVICE}"'
        if scope is not None:
            value += f',scope="{scope}"'
        if error is not None:
            value += f',error="{error}"'
        return web.json_response(
            _errors("UNAUTHORIZED", "authentication required"),
            status=401,
            headers={"WWW-Authenticate": value},
        )

    def _authorized(self, request: web.Request, repository: str | None) -> bool:
        """True when the request's bearer token is live and (for a repository) covers it."""
        if not self.require_auth:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        grant = self._tokens.get(token.strip())
        if grant is None or grant[1] < time.monotonic():
            return False
        return repository is None or repository in grant[0]

    def _basic_user_ok(self, request: web.Request) -> bool:
        """Anonymous and any Basic user pass, unless ``users`` is set and the password is wrong."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return True
        if self.users is None:
            return True
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self.users.get(user) == password

    # --- handlers ------------------------------------------------------------------------------

    async def _base(self, request: web.Request) -> web.Response:
        fault = await self._fault(request, "base")
        if fault is not None:
            return fault
        if not self._authorized(request, None):
            return self._challenge(None)
        return web.json_response({})

    async def _token(self, request: web.Request) -> web.Response:
        fault = await self._fault(request, "token")
        if fault is not None:
            return fault
        if not self._basic_user_ok(request):
            return web.json_response(_errors("DENIED", "invalid username or password"), status=401)
        repositories = frozenset(
            scope.split(":")[1]
            for scope in request.query.getall("scope", [])
            if scope.startswith("repository:")
            and len(scope.split(":")) == 3
            and "pull" in scope.split(":")[2]
        )
        token = secrets.token_urlsafe(24)
        self._tokens[token] = (repositories, time.monotonic() + TOKEN_TTL_S)
        return web.json_response({"token": token, "access_token": token, "expires_in": TOKEN_TTL_S})

    async def _manifest(self, request: web.Request) -> web.Response:
        name, reference = request.match_info["name"], request.match_info["reference"]
        fault = await self._fault(request, "manifests")
        if fault is not None:
            return fault
        if not self._authorized(request, name):
            return self._challenge(f"repository:{name}:pull", "insufficient_scope")
        if not self.catalogue.has_repository(name):
            return web.json_response(
                _errors("NAME_UNKNOWN", "repository name not known to registry", {"name": name}), status=404
            )
        found = self.catalogue.manifest(name, reference)
        if found is None:
            return web.json_response(
                _errors("MANIFEST_UNKNOWN", "manifest unknown", {"reference": reference}), status=404
            )
        digest, body, media_type = found
        headers = {"Content-Type": media_type}
        if self.send_digest_header:
            headers["Docker-Content-Digest"] = digest
        return web.Response(body=body, headers=headers)

    async def _tags(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        fault = await self._fault(request, "tags")
        if fault is not None:
            return fault
        if not self._authorized(request, name):
            return self._challenge(f"repository:{name}:pull", "insufficient_scope")
        if not self.catalogue.has_repository(name):
            return web.json_response(
                _errors("NAME_UNKNOWN", "repository name not known to registry", {"name": name}), status=404
            )
        tags = self.catalogue.tags(name)
        last = request.query.get("last")
        if last is not None:
            tags = [tag for tag in tags if tag > last]
        headers: dict[str, str] = {}
        n = request.query.get("n")
        if n is not None and n.isdigit() and 0 < int(n) < len(tags):
            tags = tags[: int(n)]
            headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={tags[-1]}>; rel="next"'
        return web.Response(
            body=json.dumps({"name": name, "tags": tags}).encode(),
            content_type="application/json",
            headers=headers,
        )

    async def _blob(self, request: web.Request) -> web.Response:
        name, digest = request.match_info["name"], request.match_info["digest"]
        fault = await self._fault(request, "blobs")
        if fault is not None:
            return fault
        if not self._authorized(request, name):
            return self._challenge(f"repository:{name}:pull", "insufficient_scope")
        body = self.catalogue.blob(name, digest)
        if body is None:
            return web.json_response(
                _errors("BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest}), status=404
            )
        kind = OCI_CONFIG
        if self.catalogue.signature_blob(name, digest) is not None:
            kind = "application/octet-stream"
            if self.corrupt_signature_blobs and body != b"{}":
                body = body[:-1] + (b"?" if body[-1:] != b"?" else b"!")
        return web.Response(body=body, headers={"Content-Type": kind, "Docker-Content-Digest": digest})
