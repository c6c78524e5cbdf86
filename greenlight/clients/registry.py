"""Resolve image tags to digests against an OCI distribution registry (GHCR, Docker Hub, ...),
fetch a manifest by digest (:meth:`RegistryClient.manifest`: image cleanup reads indexes with it)
and the cosign signatures stored beside them (:meth:`RegistryClient.signature`).

Greenlight releases digests, never tags: this client turns ``ghcr.io/sma/backend:<sha>`` into
``sha256:...`` with one ``HEAD /v2/<repo>/manifests/<tag>`` (plus the token dance the
registry's ``WWW-Authenticate`` challenge asks for; tokens are cached per realm and scope).

Errors (greenlight.errors):
- NotFound: the repository or the tag/digest does not exist (the message names the image and
  the registry's error code);
- Forbidden: the credentials were refused (401/403 after authenticating);
- TransientError: 429, 5xx, timeouts and connection failures (``retry_after`` from Retry-After);
- PermanentError: anything else the registry refuses, or content that does not match its digest.

Credentials (a GHCR personal access token, typically) are sent only as Basic auth to the token
realm or, for registries that ask for Basic, to the registry; they never appear in logs or
error messages. The realm is whatever URL the registry's challenge names, so credentials go
only to a realm the registry's own host serves (see :func:`realm_refusal`): the host the client
talks to (the mirror, when mirrored), the registry's own name, a token host known for it
(``auth.docker.io`` for Docker Hub, ``gitlab.com`` for GitLab's registry) or one
``GREENLIGHT_REGISTRY_TOKEN_REALMS`` lists for it; and over https, except on loopback or when
the registry itself was configured as plain http. Any other realm is asked for an anonymous
token (public images still resolve), with a warning naming the realm and the registry; a
refusal then says that the credentials were withheld from it.

Environment:
- ``GREENLIGHT_REGISTRY_MIRRORS``: ``ghcr.io=http://127.0.0.1:5000,docker.io=...``; a mirrored
  registry is reached at its mirror, while image references keep their real names.
- ``GREENLIGHT_REGISTRY_USERNAME`` / ``GREENLIGHT_REGISTRY_PASSWORD``: credentials for every registry
  (greenlight.tasks.registry falls back to the Prefect Secret block
  ``greenlight-registry-credentials`` when they are not both set).
- ``GREENLIGHT_REGISTRY_TOKEN_REALMS``: ``registry.example=auth.example,...``: a host that may
  receive a registry's credentials as its token realm besides the registry's own (repeat the
  registry for several hosts).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from greenlight.core.images import ImageRef, require_tag_or_digest
from greenlight.core.signatures import payload_digests, referrers_tag, signature_tag
from greenlight.errors import (
    Forbidden,
    GreenlightError,
    InputInvalid,
    NotFound,
    PermanentError,
    TransientError,
)

log = logging.getLogger(__name__)

MIRRORS_ENV = "GREENLIGHT_REGISTRY_MIRRORS"
USERNAME_ENV = "GREENLIGHT_REGISTRY_USERNAME"
PASSWORD_ENV = "GREENLIGHT_REGISTRY_PASSWORD"
TOKEN_REALMS_ENV = "GREENLIGHT_REGISTRY_TOKEN_REALMS"

MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
# Docker Hub's API does not live at docker.io itself.
_API_HOSTS = {"docker.io": "registry-1.docker.io"}
# Token services that live on another host than their registry (GHCR, Artifact Registry, GCR,
# Quay, ACR and ECR Public serve their realm from the registry's own host).
_KNOWN_REALM_HOSTS: dict[str, frozenset[str]] = {
    "docker.io": frozenset({"auth.docker.io"}),
    "registry-1.docker.io": frozenset({"auth.docker.io"}),
    "registry.gitlab.com": frozenset({"gitlab.com"}),
}
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$|^\[[0-9a-f:.]+\]$")  # a host, no port
_DEFAULT_TOKEN_TTL_S = 60.0
_TOKEN_TTL_MARGIN_S = 5.0
_MAX_PARALLEL = 8
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_mirrors(text: str) -> dict[str, str]:
    """``host=url,host=url`` -> {host: url}; InputInvalid naming a malformed entry."""
    mirrors: dict[str, str] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        host, sep, url = (piece.strip() for piece in entry.partition("="))
        if not sep or not host or not url.startswith(("http://", "https://")):
            raise InputInvalid(
                f"{MIRRORS_ENV} entry {entry!r} must be <registry host>=<http(s) URL>, "
                "e.g. ghcr.io=http://127.0.0.1:5000"
            )
        mirrors[host.lower()] = url.rstrip("/")
    return mirrors


def parse_token_realms(text: str) -> dict[str, set[str]]:
    """``registry=host,registry=host`` -> {registry: {host, ...}}; InputInvalid naming a malformed entry."""
    realms: dict[str, set[str]] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        registry, sep, host = (piece.strip().lower() for piece in entry.partition("="))
        if not sep or not registry or not _HOST.match(host):
            raise InputInvalid(
                f"{TOKEN_REALMS_ENV} entry {entry!r} must be <registry host>=<token service host>, "
                "e.g. registry.example=auth.example"
            )
        realms.setdefault(registry, set()).add(host.strip("[]"))
    return realms


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def realm_refusal(registry: str, endpoint: str, realm: str, trusted_hosts: Iterable[str] = ()) -> str | None:
    """Why ``registry``'s credentials may not go to the token ``realm`` its challenge named; None
    when they may.

    ``endpoint`` is the URL the client reached the registry at (its mirror, when mirrored).
    The realm's host must be the endpoint's host, the registry's own name, a token host known for
    the registry (auth.docker.io for Docker Hub) or one of ``trusted_hosts``; ports are not
    compared. The realm must be https, except on a loopback host or when the endpoint itself is
    plain http (a registry configured so) and the realm is on its host.
    """
    try:
        url, base = httpx.URL(realm), httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "it is not an http(s) URL"
    if url.scheme not in ("http", "https") or not url.host:
        return "it is not an http(s) URL"
    if url.userinfo:
        return "it carries user information"
    host, own = url.host.lower(), base.host.lower()
    allowed = {own, registry.lower(), _API_HOSTS.get(registry.lower(), registry.lower())}
    allowed |= {h.lower() for h in trusted_hosts}
    for name in list(allowed):
        allowed |= _KNOWN_REALM_HOSTS.get(name, frozenset())
    if host not in allowed:
        return f"its host {host} is not the registry's host ({own}) nor one configured for it in {TOKEN_REALMS_ENV}"
    if url.scheme == "http" and not _is_loopback(host) and not (base.scheme == "http" and host == own):
        return "it is plain http (credentials go over https only, except on loopback)"
    return None


def _shown(realm: str) -> str:
    """The realm for messages: scheme, host, port and path (no query, no user information)."""
    try:
        url = httpx.URL(realm)
    except (httpx.InvalidURL, TypeError, ValueError):
        return repr(realm[:100])
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}" if url.host else repr(realm[:100])


@dataclass(frozen=True)
class _Challenge:
    scheme: str  # "bearer" or "basic"
    realm: str | None
    service: str | None
    scope: str | None


def _parse_challenge(header: str) -> _Challenge:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(_CHALLENGE_PARAM.findall(rest))
    return _Challenge(scheme.lower(), params.get("realm"), params.get("service"), params.get("scope"))


def _basic_header(username: str, password: str) -> str:
    """The value of a Basic Authorization header (the secret stays inside the header)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta seconds or HTTP date); None when absent or bad."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_code(response: httpx.Response) -> str | None:
    """The first ``errors[].code`` of a distribution API error body, when there is one."""
    try:
        errors = response.json().get("errors") or []
        code = errors[0].get("code")
    except (ValueError, AttributeError, IndexError, TypeError):
        return None
    return str(code) if code else None


def credentials_from_env() -> tuple[str, str] | None:
    """(GREENLIGHT_REGISTRY_USERNAME, GREENLIGHT_REGISTRY_PASSWORD) when both are set, else None."""
    username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
    return (username, password) if username and password else None


class RegistryClient:
    """Tag -> digest resolution over the OCI distribution API (httpx, synchronous, thread-safe)."""

    def __init__(
        self,
        mirrors: dict[str, str] | None = None,
        credentials: dict[str, tuple[str, str]] | None = None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        token_realms: Mapping[str, Iterable[str]] | None = None,
        default_credentials: tuple[str, str] | None = None,
    ) -> None:
        """``mirrors`` None reads GREENLIGHT_REGISTRY_MIRRORS; ``credentials`` None applies
        ``default_credentials`` to every registry, or when that is None too reads
        GREENLIGHT_REGISTRY_USERNAME/PASSWORD (:func:`credentials_from_env`); ``token_realms``
        None reads GREENLIGHT_REGISTRY_TOKEN_REALMS (registry -> hosts its realm may be on)."""
        self._mirrors = (
            parse_mirrors(os.environ.get(MIRRORS_ENV, ""))
            if mirrors is None
            else {host.lower(): url.rstrip("/") for host, url in mirrors.items()}
        )
        self._token_realms: dict[str, set[str]] = (
            parse_token_realms(os.environ.get(TOKEN_REALMS_ENV, ""))
            if token_realms is None
            else {reg.lower(): {h.lower() for h in hosts} for reg, hosts in token_realms.items()}
        )
        self._credentials: dict[str, tuple[str, str]] = {}
        self._default_credentials: tuple[str, str] | None = None
        if credentials is None:
            self._default_credentials = default_credentials or credentials_from_env()
        else:
            self._credentials = {host.lower(): pair for host, pair in credentials.items()}
        self._http = httpx.Client(timeout=timeout_s, transport=transport, follow_redirects=True)
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._tokens_lock = threading.Lock()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public --------------------------------------------------------------------------------

    def resolve(self, ref: ImageRef) -> str:
        """The digest ``ref`` names now: its tag resolved, or its digest checked to exist."""
        require_tag_or_digest(ref)
        reference = ref.digest or ref.tag
        assert reference is not None
        url = f"{self._endpoint(ref.registry)}/v2/{ref.repository}/manifests/{reference}"
        response = self._request("HEAD", url, ref)
        if response.status_code == 405:  # a registry that does not answer HEAD
            response = self._request("GET", url, ref)
        if response.status_code == 404:
            self._raise_not_found(url, ref, response)
        self._raise_for_status(response, ref)
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            digest = self._digest_of_body(url, ref, response)
        if ref.digest is not None and digest != ref.digest:
            raise PermanentError(f"registry answered image '{ref}' with different content ({digest})")
        log.debug("resolved %s to %s", ref, digest)
        return digest

    def resolve_all(self, refs: list[ImageRef]) -> dict[str, str]:
        """{str(ref): digest} for every ref, resolved in parallel; the first failure (in input order) raises."""
        unique = list(dict.fromkeys(refs))
        if not unique:
            return {}
        with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL, len(unique))) as pool:
            futures = [pool.submit(self.resolve, ref) for ref in unique]
        return {str(ref): future.result() for ref, future in zip(unique, futures, strict=True)}

    def manifest(self, ref: ImageRef) -> tuple[str, bytes]:
        """(media type, body) of the manifest ``ref`` names (a digest, or a tag): an image
        manifest, or an index / manifest list (a multi-platform image). NotFound when there is no
        such manifest; PermanentError when the body does not hash to the digest asked for."""
        require_tag_or_digest(ref)
        reference = ref.digest or ref.tag
        assert reference is not None
        url = f"{self._endpoint(ref.registry)}/v2/{ref.repository}/manifests/{reference}"
        response = self._request("GET", url, ref)
        if response.status_code == 404:
            self._raise_not_found(url, ref, response)
        self._raise_for_status(response, ref)
        body = response.content
        if ref.digest is not None and "sha256:" + hashlib.sha256(body).hexdigest() != ref.digest:
            raise PermanentError(f"registry answered image '{ref}' with a manifest of different content")
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return media_type, body

    def signature(self, ref: ImageRef, digest: str) -> tuple[bytes | None, dict[str, bytes]]:
        """What cosign stored beside ``digest`` in ``ref``'s repository: the manifest of the tag
        ``sha256-<hex>.sig`` (None when there is no such tag: the image is unsigned) and its
        simple-signing payload blobs by the digests its layers name (a blob the registry does not
        have is left out). The bytes are returned as served; greenlight.core.signatures.judge
        checks each blob against its digest and says what is wrong."""
        try:
            tag = signature_tag(digest)
        except ValueError as e:
            raise InputInvalid(f"image '{ref}': {e}") from None
        base = f"{self._endpoint(ref.registry)}/v2/{ref.repository}"
        response = self._request("GET", f"{base}/manifests/{tag}", ref)
        if response.status_code == 404:
            log.debug("no signature for %s@%s (%s)", ref.name, digest, tag)
            return None, {}
        self._raise_for_status(response, ref)
        manifest = response.content
        blobs: dict[str, bytes] = {}
        for blob in payload_digests(manifest):
            answer = self._request("GET", f"{base}/blobs/{blob}", ref)
            if answer.status_code == 404:
                continue
            self._raise_for_status(answer, ref)
            blobs[blob] = answer.content
        return manifest, blobs

    def has_bundle_signature(self, ref: ImageRef, digest: str) -> bool:
        """True when ``ref``'s repository has the referrers tag of ``digest`` (``sha256-<hex>``,
        where cosign 3 keeps its bundle-format signatures on registries without the referrers
        API): an image signed in a format Greenlight does not verify, as opposed to unsigned."""
        url = f"{self._endpoint(ref.registry)}/v2/{ref.repository}/manifests/{referrers_tag(digest)}"
        response = self._request("GET", url, ref)
        if response.status_code == 404:
            return False
        self._raise_for_status(response, ref)
        return True

    # --- HTTP and auth -------------------------------------------------------------------------

    def _endpoint(self, registry: str) -> str:
        mirror = self._mirrors.get(registry.lower())
        if mirror is not None:
            return mirror
        return f"https://{_API_HOSTS.get(registry, registry)}"

    def _credentials_for(self, registry: str) -> tuple[str, str] | None:
        return self._credentials.get(registry.lower(), self._default_credentials)

    def _request(self, method: str, url: str, ref: ImageRef) -> httpx.Response:
        """One request with the cached token for ``ref``; on a challenge, authenticate and retry once."""
        scope = f"repository:{ref.repository}:pull"
        headers = {"Accept": MANIFEST_ACCEPT}
        cached = self._cached_token(url, scope)
        if cached is not None:
            headers["Authorization"] = f"Bearer {cached}"
        response = self._send(method, url, headers, ref)
        if response.status_code != 401:
            return response
        challenge = _parse_challenge(response.headers.get("WWW-Authenticate", ""))
        withheld = ""
        if challenge.scheme == "bearer" and challenge.realm:
            creds = self._credentials_for(ref.registry)
            if creds is not None and (why := self._realm_refusal(ref.registry, url, challenge.realm)):
                creds = None
                withheld = (
                    f"; the credentials for {ref.registry} were withheld from the token realm "
                    f"{_shown(challenge.realm)} the registry named: {why}"
                )
                log.warning(
                    "registry %s named the token realm %s: %s; asking it for an anonymous token",
                    ref.registry,
                    _shown(challenge.realm),
                    why,
                )
            token = self._fetch_token(challenge, scope, url, ref, creds, withheld)
            headers["Authorization"] = f"Bearer {token}"
        elif challenge.scheme == "basic" and (creds := self._credentials_for(ref.registry)) is not None:
            headers["Authorization"] = _basic_header(*creds)
        else:
            raise Forbidden(
                f"registry refused access to image '{ref}' (HTTP 401, no usable challenge)", status=401
            )
        response = self._send(method, url, headers, ref)
        if response.status_code in (401, 403):
            raise Forbidden(
                f"registry refused access to image '{ref}' after authenticating "
                f"(HTTP {response.status_code}){withheld}",
                status=response.status_code,
            )
        return response

    def _realm_refusal(self, registry: str, url: str, realm: str) -> str | None:
        """Why the credentials for ``registry`` (reached at ``url``) may not go to ``realm``; None if they may."""
        trusted = self._token_realms.get(registry.lower(), set())
        return realm_refusal(registry, self._origin(url), realm, trusted)

    def _send(self, method: str, url: str, headers: Mapping[str, str], ref: ImageRef) -> httpx.Response:
        try:
            return self._http.request(method, url, headers=headers)
        except httpx.TimeoutException as e:
            raise TransientError(f"registry timed out on image '{ref}' ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise TransientError(f"registry unreachable for image '{ref}' ({type(e).__name__})") from e

    def _fetch_token(
        self,
        challenge: _Challenge,
        scope: str,
        url: str,
        ref: ImageRef,
        creds: tuple[str, str] | None,
        withheld: str = "",
    ) -> str:
        """A bearer token from the challenge's realm (Basic auth with ``creds`` when given)."""
        assert challenge.realm is not None
        params = {"scope": challenge.scope or scope}
        if challenge.service:
            params["service"] = challenge.service
        try:
            response = self._http.get(
                challenge.realm, params=params, auth=httpx.BasicAuth(*creds) if creds else None
            )
        except httpx.TimeoutException as e:
            raise TransientError(f"registry token service timed out for image '{ref}'") from e
        except httpx.TransportError as e:
            raise TransientError(
                f"registry token service unreachable for image '{ref}' ({type(e).__name__})"
            ) from e
        if response.status_code in (401, 403):
            who = "the configured credentials were" if creds else "anonymous access was"
            raise Forbidden(
                f"registry token service refused a pull token for image '{ref}': {who} rejected{withheld}",
                status=response.status_code,
            )
        self._raise_for_status(response, ref, what="registry token service")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            ttl = float(body.get("expires_in") or _DEFAULT_TOKEN_TTL_S)
        except (ValueError, AttributeError, TypeError) as e:
            raise PermanentError(
                f"registry token service answered an unreadable body for image '{ref}'"
            ) from e
        if not isinstance(token, str) or not token:
            raise PermanentError(f"registry token service answered no token for image '{ref}'")
        with self._tokens_lock:
            self._tokens[(self._origin(url), scope)] = (token, time.monotonic() + ttl - _TOKEN_TTL_MARGIN_S)
        return token

    def _cached_token(self, url: str, scope: str) -> str | None:
        with self._tokens_lock:
            entry = self._tokens.get((self._origin(url), scope))
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    @staticmethod
    def _origin(url: str) -> str:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.netloc.decode()}"

    # --- answers -------------------------------------------------------------------------------

    def _raise_not_found(self, url: str, ref: ImageRef, response: httpx.Response) -> None:
        """NotFound naming the image and the registry's code (a HEAD has no body: GET it for the code)."""
        code = _error_code(response)
        if code is None and response.request.method == "HEAD":
            try:
                code = _error_code(self._request("GET", url, ref))
            except GreenlightError:
                code = None
        raise NotFound(
            f"image '{ref}' not found in the registry ({code or 'HTTP 404'})", status=404, code=code
        )

    @staticmethod
    def _raise_for_status(response: httpx.Response, ref: ImageRef, what: str = "registry") -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 429 or status >= 500:
            raise TransientError(
                f"{what} answered HTTP {status} for image '{ref}'",
                retry_after=_retry_after(response),
                status=status,
            )
        if status in (401, 403):
            raise Forbidden(f"{what} refused access to image '{ref}' (HTTP {status})", status=status)
        if status == 404:
            raise NotFound(f"image '{ref}' not found: {what} answered HTTP 404", status=status)
        code = _error_code(response)
        raise PermanentError(
            f"{what} refused image '{ref}' (HTTP {status}{', ' + code if code else ''})",
            status=status,
            code=code,
        )

    def _digest_of_body(self, url: str, ref: ImageRef, response: httpx.Response) -> str:
        """sha256 of the manifest body, fetching it with GET when ``response`` was a HEAD."""
        if response.request.method == "HEAD":
            response = self._request("GET", url, ref)
            self._raise_for_status(response, ref)
        return "sha256:" + hashlib.sha256(response.content).hexdigest()
