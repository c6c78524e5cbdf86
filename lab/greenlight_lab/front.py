"""A fault-injecting HTTP reverse proxy in front of fake-gcs-server.

Clients (the google-cloud-storage SDK, via ``STORAGE_EMULATOR_HOST``) talk to the front;
the front forwards every request to the upstream server, streaming bodies both ways
(Content-Length or chunked, hundreds of MB without holding them in memory), unless the
``FaultRegistry`` says otherwise for ``(target, method, resource)``:

- ``error``: answer ``rule.status`` with a GCS-style JSON error body (and ``Retry-After``
  when the rule has one), after reading and dropping the request body;
- ``stall``: wait ``rule.stall_s`` seconds, then forward normally.

``resource`` is ``upload`` for ``/upload/...``, ``download`` for ``/download/...`` or
``alt=media``, else ``metadata``.

Host: fake-gcs-server (v1.54, measured) builds the ``Location`` of a resumable upload from
the request's ``Host`` header, ``mediaLink``/``selfLink`` from ``-external-url``, and
resolves ``/<bucket>/<object>`` paths only for ``Host == -public-host``. So the front
forwards the ``Host`` the client used (the front's own authority; filled in when a client
sent none) and fake-gcs-server runs with ``-external-url http://<front>`` and
``-public-host <front>``: every URL it hands out leads back through the front. As a safety
net, a ``Location`` that still points at the upstream's own address is rewritten to the front.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qsl, urlsplit

from greenlight_lab.faults import FaultRegistry, FaultRule
from greenlight_lab.proxy import (
    STREAM_LIMIT,
    HttpError,
    RequestHead,
    ResponseHead,
    body_framing,
    close_quietly,
    discard_body,
    encode_head,
    forward_headers,
    json_bytes,
    read_request_head,
    read_response_head,
    reason_phrase,
    relay_body,
    send_error,
    simple_response,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0


def classify_resource(target: str) -> str:
    """The fault resource of a GCS request target: "upload", "download" or "metadata"."""
    parts = urlsplit(target)
    if parts.path.startswith("/upload/"):
        return "upload"
    if parts.path.startswith("/download/") or ("alt", "media") in parse_qsl(parts.query):
        return "download"
    return "metadata"


def fault_response(rule: FaultRule, method: str, resource: str, keep_alive: bool) -> bytes:
    """The answer to a call an ``error`` rule refuses, shaped like a GCS JSON API error."""
    message = f"lab fault #{rule.id} injected on {rule.target} {method.lower()} {resource}"
    reason = "rateLimitExceeded" if rule.status == 429 else "backendError"
    body = json_bytes(
        {
            "error": {
                "code": rule.status,
                "message": message,
                "errors": [{"domain": "global", "reason": reason, "message": message}],
            }
        }
    )
    extra = [] if rule.retry_after is None else [("Retry-After", f"{rule.retry_after:g}")]
    return simple_response(rule.status, body, keep_alive=keep_alive, extra=extra)


class HttpFaultFront:
    """Reverse proxy to ``upstream`` ("http://host:port") that injects ``faults`` for ``target``."""

    def __init__(
        self, upstream: str, faults: FaultRegistry, target: str = "gcs", host: str = "127.0.0.1"
    ) -> None:
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must look like http://host:port, not {upstream!r}")
        self._upstream = (parts.hostname, parts.port)
        self._upstream_authority = parts.netloc
        self._faults = faults
        self._target = target
        self._host = host
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, port: int = 0) -> int:
        """Listen on ``port`` (0: a free one) and return the port."""
        self._server = await asyncio.start_server(self._serve, self._host, port, limit=STREAM_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        """Base URL of the front (valid once started)."""
        return f"http://{self._host}:{self.port}"

    @property
    def _front_authority(self) -> str:
        return f"{self._host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening and close every client connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._clients):
            close_quietly(writer)

    # -- serving ------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._clients.add(writer)
        try:
            while True:
                head = await read_request_head(reader)
                if head is None:
                    return
                keep, upstream = await self._handle(head, reader, writer, upstream)
                if not keep:
                    return
        except HttpError as e:
            await send_error(writer, e.status, str(e))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("fault front %s: unexpected error", self._target)
        finally:
            self._clients.discard(writer)
            close_quietly(writer)
            if upstream is not None:
                close_quietly(upstream[1])

    async def _handle(
        self,
        head: RequestHead,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        """Answer one request; returns whether the client connection stays open, and the
        upstream connection to reuse for the next request (None: open a new one)."""
        framing = body_framing(head)
        resource = classify_resource(head.target)
        rule = self._faults.take(self._target, head.method.lower(), resource)
        if rule is not None and rule.mode == "error":
            await discard_body(reader, framing)
            writer.write(fault_response(rule, head.method, resource, head.keep_alive))
            await writer.drain()
            return head.keep_alive, upstream
        if rule is not None:
            await asyncio.sleep(rule.stall_s)
        if "100-continue" in (head.get("expect") or "").lower():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if upstream is None or upstream[0].at_eof() or upstream[1].is_closing():
            if upstream is not None:
                close_quietly(upstream[1])
            upstream = await self._connect(head, reader, writer, framing)
            if upstream is None:
                return False, None
        up_reader, up_writer = upstream
        up_writer.write(self._upstream_head(head, framing))
        await relay_body(reader, up_writer, framing)
        response = await read_response_head(up_reader)
        while 100 <= response.status < 200:
            response = await read_response_head(up_reader)
        return await self._relay_response(head, response, up_reader, writer, upstream)

    async def _connect(
        self,
        head: RequestHead,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framing: tuple[str, int],
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A new upstream connection; on failure answer 502 and return None."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await asyncio.open_connection(*self._upstream, limit=STREAM_LIMIT)
        except (OSError, TimeoutError) as e:
            await discard_body(reader, framing)
            await send_error(
                writer, 502, f"{self._target} upstream {self._upstream_authority} unreachable: {e}"
            )
            return None

    def _upstream_head(self, head: RequestHead, framing: tuple[str, int]) -> bytes:
        """The request head as sent upstream: the client's Host kept, hop-by-hop headers dropped."""
        headers = forward_headers(head.headers, drop=frozenset({"host", "expect", "content-length"}))
        headers.insert(0, ("Host", head.get("host") or self._front_authority))
        headers.append(("X-Forwarded-Proto", "http"))
        if framing[0] == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        elif framing[0] == "length":
            headers.append(("Content-Length", str(framing[1])))
        return encode_head(f"{head.method} {head.target} HTTP/1.1", headers)

    async def _relay_response(
        self,
        head: RequestHead,
        response: ResponseHead,
        up_reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> tuple[bool, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
        framing = body_framing(response, request_method=head.method)
        keep = head.keep_alive and framing[0] != "close"
        headers = forward_headers(response.headers)
        front_authority = head.get("host") or self._front_authority
        headers = [
            (k, self._rewrite_location(v, front_authority) if k.lower() == "location" else v)
            for k, v in headers
        ]
        if framing[0] == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        headers.append(("Connection", "keep-alive" if keep else "close"))
        start = f"HTTP/1.1 {response.status} {response.reason or reason_phrase(response.status)}"
        writer.write(encode_head(start, headers))
        await relay_body(up_reader, writer, framing)
        if response.keep_alive and framing[0] != "close":
            return keep, upstream
        close_quietly(upstream[1])
        return keep, None

    def _rewrite_location(self, value: str, front_authority: str) -> str:
        prefix = f"http://{self._upstream_authority}"
        if value == prefix or value.startswith(prefix + "/"):
            return f"http://{front_authority}{value[len(prefix) :]}"
        return value
