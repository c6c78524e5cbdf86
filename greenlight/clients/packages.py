"""List and delete the versions of a GHCR container package through the GitHub Packages REST API.

GHCR deletes images through GitHub's REST API, not the OCI API:
``GET {api}/orgs/{org}/packages/container/{package}/versions`` (``/users/{user}/...`` for a
user's packages; a name with a slash is URL-encoded, ``a%2Fb``), ``per_page=100`` pages followed
through the ``Link`` header's ``rel="next"``, and ``DELETE .../versions/{id}`` (204). Requests
carry ``Authorization: Bearer <token>``, ``Accept: application/vnd.github+json`` and
``X-GitHub-Api-Version``. The token (a classic personal access token with ``read:packages`` and
``delete:packages``) never appears in logs or error messages.

Errors (greenlight.errors):
- Forbidden: 401 (bad credentials) and 403 (a missing scope; the message names GitHub's
  ``X-Accepted-OAuth-Scopes``), except a 403 with ``x-ratelimit-remaining: 0``;
- NotFound: 404 (the message names the package, and the version when deleting);
- Conflict: 400/409/422 on a delete (GitHub refuses to delete a package's last version);
- TransientError: 429, 5xx, a spent rate limit, timeouts and connection failures, after
  ``max_attempts`` tries (waiting ``retry-after``, else ``x-ratelimit-reset``, else a backoff;
  at most ``max_wait_s`` per wait); ``exhausted`` is set, so a task does not start over.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime

import httpx

from greenlight.core.cleanup import Package, PackageVersion
from greenlight.errors import Conflict, Forbidden, NotFound, PermanentError, TransientError

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 1000  # 100,000 versions: a Link loop stops here
_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?([^",;]+)"?')
OwnerKind = str  # "org" or "user"


def next_link(header: str | None) -> str | None:
    """The URL of ``rel="next"`` in a ``Link`` header; None when there is none."""
    for url, rel in _LINK.findall(header or ""):
        if "next" in rel.split():
            return url
    return None


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait: ``retry-after`` (seconds or HTTP date), else a spent rate limit's reset."""
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    if response.headers.get("x-ratelimit-remaining") == "0":
        reset = response.headers.get("x-ratelimit-reset", "")
        if reset.isdigit():
            return max(0.0, int(reset) - time.time())
    return None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return str(message)[:200] if message else f"HTTP {response.status_code}"


def _created_at(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"created_at {text!r} has no time zone")
    return parsed


class PackagesClient:
    """GitHub Packages API calls for container packages (httpx, synchronous)."""

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        owner_kind: OwnerKind = "org",
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        max_wait_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        per_page: int = PER_PAGE,
    ) -> None:
        if owner_kind not in ("org", "user"):
            raise ValueError(f"owner_kind must be 'org' or 'user', not {owner_kind!r}")
        if not 1 <= per_page <= PER_PAGE:
            raise ValueError(f"per_page must be within 1..{PER_PAGE}, not {per_page}")
        self._per_page = per_page
        self._api = api_url.rstrip("/")
        self._owner_kind = owner_kind
        self._max_attempts = max(1, max_attempts)
        self._max_wait_s = max_wait_s
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=timeout_s,
            transport=transport,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": "greenlight-image-cleanup",
            },
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PackagesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def versions_url(self, package: Package) -> str:
        owners = "orgs" if self._owner_kind == "org" else "users"
        return f"{self._api}/{owners}/{package.owner}/packages/container/{package.encoded}/versions"

    # --- public --------------------------------------------------------------------------------

    def list_versions(self, package: Package) -> list[PackageVersion]:
        """Every version of ``package``, following the ``Link`` header page by page."""
        url: str | None = f"{self.versions_url(package)}?per_page={self._per_page}&page=1"
        out: list[PackageVersion] = []
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            if url is None:
                return out
            if url in seen:
                raise PermanentError(f"GitHub Packages API: the Link header of {package.image} loops")
            seen.add(url)
            response = self._request("GET", url, f"listing the versions of {package.image}")
            out += self._parse_page(response, package)
            url = next_link(response.headers.get("Link"))
        raise PermanentError(
            f"GitHub Packages API: more than {MAX_PAGES} pages of versions of {package.image}"
        )

    def delete_version(self, package: Package, version_id: int) -> None:
        """Delete version ``version_id`` of ``package`` (204)."""
        what = f"deleting version {version_id} of {package.image}"
        self._request("DELETE", f"{self.versions_url(package)}/{version_id}", what)

    # --- HTTP ----------------------------------------------------------------------------------

    def _request(self, method: str, url: str, what: str) -> httpx.Response:
        """One call, retried on 429, 5xx, a spent rate limit and transport failures."""
        last: TransientError | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = self._http.request(method, url)
                self._raise_for_status(response, what)
                return response
            except httpx.TimeoutException as e:
                last = TransientError(f"GitHub Packages API timed out {what} ({type(e).__name__})")
            except httpx.TransportError as e:
                last = TransientError(f"GitHub Packages API unreachable {what} ({type(e).__name__})")
            except TransientError as e:
                last = e
            if attempt < self._max_attempts:
                wait = last.retry_after if last.retry_after is not None else 0.5 * 2 ** (attempt - 1)
                wait = min(wait, self._max_wait_s)
                log.warning(
                    "%s; retrying in %.1f s (attempt %d of %d)", last, wait, attempt, self._max_attempts
                )
                self._sleep(wait)
        assert last is not None
        raise TransientError(
            f"{last} (after {self._max_attempts} attempts)",
            retry_after=last.retry_after,
            exhausted=True,
            status=last.status,
        )

    @staticmethod
    def _raise_for_status(response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 400:
            return
        message = _message(response)
        spent = response.headers.get("x-ratelimit-remaining") == "0"
        if status == 429 or status >= 500 or (status == 403 and spent):
            raise TransientError(
                f"GitHub Packages API answered HTTP {status} {what}: {message}",
                retry_after=_retry_after(response),
                status=status,
            )
        if status == 401:
            raise Forbidden(
                f"GitHub Packages API refused the token {what} (HTTP 401: {message})", status=status
            )
        if status == 403:
            accepted = response.headers.get("X-Accepted-OAuth-Scopes")
            need = f"; the call needs the scopes {accepted}" if accepted else ""
            raise Forbidden(f"GitHub Packages API refused {what} (HTTP 403: {message}{need})", status=status)
        if status == 404:
            raise NotFound(f"GitHub Packages API: not found {what} (HTTP 404: {message})", status=status)
        if status in (400, 409, 422) and response.request.method == "DELETE":
            raise Conflict(f"GitHub Packages API refused {what} (HTTP {status}: {message})", status=status)
        raise PermanentError(f"GitHub Packages API refused {what} (HTTP {status}: {message})", status=status)

    @staticmethod
    def _parse_page(response: httpx.Response, package: Package) -> list[PackageVersion]:
        try:
            body = response.json()
            if not isinstance(body, list):
                raise TypeError("not a list")
            return [
                PackageVersion(
                    id=int(item["id"]),
                    digest=str(item["name"]),
                    tags=tuple(
                        str(t)
                        for t in ((item.get("metadata") or {}).get("container") or {}).get("tags") or ()
                    ),
                    created_at=_created_at(str(item["created_at"])),
                )
                for item in body
            ]
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise PermanentError(
                f"GitHub Packages API answered an unreadable page of versions of {package.image} ({e})"
            ) from e
