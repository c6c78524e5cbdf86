"""DNS records through Cloudflare's API v4, with Cloudflare's maintained Python SDK (``cloudflare``).

The only module that imports the SDK. The base URL is ``$GREENLIGHT_CLOUDFLARE_API_URL`` (else
the SDK's, ``https://api.cloudflare.com/client/v4``); the API token is given by the caller
(``$CLOUDFLARE_API_TOKEN`` or a Prefect Secret block: greenlight.tasks.dns) and never appears in
logs or error messages. Lists are read page by page until the API's last (the SDK pages until an
empty page), so a zone with more records than one page is read whole.

Errors (greenlight.errors), each naming the zone and the record:
- TransientError: connection failures and timeouts, 429 and 5xx, after the SDK's own retries
  (``max_retries``, honouring ``retry-after``); ``exhausted`` is set, so a task does not start over;
- Forbidden: 401 and 403 (the token is wrong or may not do this), and 400 code 9106 (no token sent);
- NotFound: 404 (an unknown zone or record), and a zone name the token cannot see;
- InputInvalid: any other 4xx (a validation error: Cloudflare's code and message are kept);
- Conflict: 400 codes 81053/81054/81057/81058 (the record, or one on the same name, exists).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import cloudflare
import httpx

from greenlight.core.dns import Record
from greenlight.errors import Conflict, Forbidden, GreenlightError, InputInvalid, NotFound, TransientError

API_URL_ENV = "GREENLIGHT_CLOUDFLARE_API_URL"
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"
#: Cloudflare's codes for "a record is in the way" (create or overwrite)
EXISTS_CODES = frozenset({81053, 81054, 81057, 81058})
NO_TOKEN_CODE = 9106
T = TypeVar("T")


def _codes(e: cloudflare.APIStatusError) -> list[tuple[int, str]]:
    body = e.body if isinstance(e.body, dict) else {}
    errors = body.get("errors")
    out = []
    for err in errors if isinstance(errors, list) else []:
        if isinstance(err, dict) and isinstance(err.get("code"), int):
            out.append((int(err["code"]), str(err.get("message") or "")[:200]))
    return out


def _retry_after(e: cloudflare.APIStatusError) -> float | None:
    try:
        return float(e.response.headers.get("retry-after", ""))
    except ValueError:
        return None


def translate(e: Exception, what: str) -> GreenlightError:
    """The Greenlight error for an SDK error while doing ``what`` (which names the zone and record);
    the HTTP status of an answer stays on it (``status``)."""
    if isinstance(e, cloudflare.APIConnectionError):  # includes timeouts
        kind = "timed out" if isinstance(e, cloudflare.APITimeoutError) else "unreachable"
        return TransientError(f"Cloudflare API {kind} while {what}", exhausted=True)
    if not isinstance(e, cloudflare.APIStatusError):
        return TransientError(f"Cloudflare API answered unexpectedly while {what}: {type(e).__name__}")
    codes = _codes(e)
    said = "; ".join(f"{c} {m}" for c, m in codes) or f"HTTP {e.status_code}"
    status = e.status_code
    if status == 429 or status >= 500:
        return TransientError(
            f"Cloudflare API {status} while {what} ({said})",
            retry_after=_retry_after(e),
            exhausted=True,
            status=status,
        )
    if status in (401, 403) or any(c == NO_TOKEN_CODE for c, _ in codes):
        return Forbidden(
            f"Cloudflare refused the API token while {what} ({said}): it needs Zone:Read and DNS:Edit "
            f"on the zone (${TOKEN_ENV} or the profile's dns.token_secret_block)",
            status=status,
        )
    if status == 404:
        return NotFound(f"Cloudflare: not found while {what} ({said})", status=status)
    if any(c in EXISTS_CODES for c, _ in codes):
        return Conflict(f"Cloudflare: a record is in the way while {what} ({said})", status=status)
    return InputInvalid(f"Cloudflare refused the request while {what} ({said})", status=status)


def _record(raw: Any) -> Record:
    get = raw.get if isinstance(raw, dict) else lambda k, d=None: getattr(raw, k, d)
    return Record(
        id=str(get("id")),
        name=str(get("name")),
        type=str(get("type")),
        content=str(get("content")),
        ttl=int(get("ttl") or 1),
        comment=str(get("comment") or ""),
    )


class CloudflareDns:
    """One zone's DNS records. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self, token: str, base_url: str | None = None, timeout_s: float = 10.0, max_retries: int = 2
    ) -> None:
        if not token:
            raise Forbidden(
                f"no Cloudflare API token: set ${TOKEN_ENV} or the profile's dns.token_secret_block"
            )
        self._client = cloudflare.Cloudflare(
            api_token=token,
            base_url=base_url or os.environ.get(API_URL_ENV) or None,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            max_retries=max_retries,
        )

    def __enter__(self) -> CloudflareDns:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except cloudflare.CloudflareError as e:  # its message is the API's answer, never the token
            raise translate(e, what) from e

    def zone_id(self, zone: str) -> str:
        """The id of zone ``zone`` (NotFound when the token sees no such zone)."""
        zones = self._call(f"looking up zone {zone}", lambda: list(self._client.zones.list(name=zone)))
        for z in zones:
            if str(getattr(z, "name", "")).lower() == zone.lower():
                return str(z.id)
        raise NotFound(f"Cloudflare: no zone {zone} visible to the API token")

    def records(
        self, zone_id: str, zone: str, name: str | None = None, type: str | None = None
    ) -> list[Record]:
        """The zone's records (every page), only ``name`` / ``type`` when given."""
        params: dict[str, Any] = {}
        if name is not None:
            params["name"] = {"exact": name}
        if type is not None:
            params["type"] = type
        what = f"listing records {name or '(all)'} of zone {zone}"
        return self._call(
            what, lambda: [_record(r) for r in self._client.dns.records.list(zone_id=zone_id, **params)]
        )

    def get(self, zone_id: str, zone: str, record_id: str, name: str) -> Record | None:
        """Record ``record_id`` (None when it is gone)."""
        try:
            raw = self._call(
                f"reading record {name} ({record_id}) of zone {zone}",
                lambda: self._client.dns.records.get(record_id, zone_id=zone_id),
            )
        except NotFound:
            return None
        return None if raw is None else _record(raw)

    def create(
        self, zone_id: str, zone: str, name: str, type: str, content: str, ttl: int, comment: str = ""
    ) -> Record:
        """Create a record; Conflict when it (or another on its name) exists."""
        kwargs: dict[str, Any] = {
            "zone_id": zone_id,
            "name": name,
            "type": type,
            "content": content,
            "ttl": ttl,
        }
        if comment:
            kwargs["comment"] = comment
        raw = self._call(
            f"creating {type} record {name} -> {content} in zone {zone}",
            lambda: self._client.dns.records.create(**kwargs),
        )
        return _record(raw)

    def point(self, zone_id: str, zone: str, record: Record, content: str, ttl: int) -> Record:
        """Edit ``record`` (PATCH) to hold ``content`` with ``ttl``; what the API says it is now."""
        kwargs: dict[str, Any] = {
            "zone_id": zone_id, "name": record.name, "type": record.type, "content": content, "ttl": ttl,
        }  # fmt: skip
        raw = self._call(
            f"pointing {record.type} record {record.name} at {content} in zone {zone}",
            lambda: self._client.dns.records.edit(record.id, **kwargs),
        )
        return _record(raw)

    def delete(self, zone_id: str, zone: str, record: Record) -> bool:
        """Delete ``record``; False when it was already gone."""
        try:
            self._call(
                f"deleting record {record.name} ({record.id}) of zone {zone}",
                lambda: self._client.dns.records.delete(record.id, zone_id=zone_id),
            )
        except NotFound:
            return False
        return True
