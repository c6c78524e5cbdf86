"""Per-Service proxies of the lab, and the small HTTP/1.1 toolkit the data plane shares.

A lab Service is reached through its own proxy on a free loopback port. The proxy routes
every *request* (not every connection) round robin to the Service's current ready
endpoints, over pooled keep-alive upstream connections, so that a selector switch takes
effect at the next request even on a client's long-lived keep-alive connection:

- ``set_endpoints`` replaces the endpoint set atomically; requests already sent finish on
  the old backend, new ones go to the new set.
- An upstream failure before any response byte (backend just stopped, stale pooled
  connection, connection refused) is retried once on a backend of the *current* set:
  always for idempotent methods, for the others only when the connect itself failed.
- No endpoints: 503 with a JSON body naming the Service. Every answer carries
  ``X-Backend: host:port`` when a backend produced it.

The toolkit (``read_request_head``, ``read_response_head``, ``body_framing``, the body
readers and ``simple_response``) is also used by the pods and the GCS fault front; it
handles keep-alive, ``Content-Length`` and chunked bodies, and rejects what it does not
understand with a clean 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
STREAM_LIMIT = 256 * 1024  # StreamReader buffer limit for every connection we open or accept
IO_CHUNK = 256 * 1024  # largest piece read at once when streaming a body
MAX_PROXY_BODY = 16 * 1024 * 1024  # the Service proxy buffers request bodies (to retry them)
CONNECT_TIMEOUT_S = 2.0
RESPONSE_TIMEOUT_S = 60.0
MAX_IDLE_PER_BACKEND = 128

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

Headers = list[tuple[str, str]]
Backend = tuple[str, int]

# --------------------------------------------------------------------------------------------
# HTTP/1.1 toolkit
# --------------------------------------------------------------------------------------------


class HttpError(Exception):
    """A malformed or unsupported HTTP message; ``status`` is what the server should answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Head:
    """Header block shared by requests and responses; lookups are case-insensitive."""

    __slots__ = ("headers", "version")

    def __init__(self, version: str, headers: Headers) -> None:
        self.version = version
        self.headers = headers

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower-case), in order."""
        return [value for key, value in self.headers if key.lower() == name]

    def connection_tokens(self) -> set[str]:
        """The lower-cased tokens of every Connection header."""
        return {t.strip().lower() for v in self.get_all("connection") for t in v.split(",") if t.strip()}

    @property
    def keep_alive(self) -> bool:
        """Whether the sender allows the connection to stay open after this message."""
        tokens = self.connection_tokens()
        if "close" in tokens:
            return False
        return self.version == "HTTP/1.1" or "keep-alive" in tokens


class RequestHead(_Head):
    """Request line and headers of one HTTP request."""

    __slots__ = ("method", "target")

    def __init__(self, method: str, target: str, version: str, headers: Headers) -> None:
        super().__init__(version, headers)
        self.method = method
        self.target = target

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]


class ResponseHead(_Head):
    """Status line and headers of one HTTP response."""

    __slots__ = ("reason", "status")

    def __init__(self, version: str, status: int, reason: str, headers: Headers) -> None:
        super().__init__(version, headers)
        self.status = status
        self.reason = reason


def _parse_headers(lines: list[str]) -> Headers:
    headers: Headers = []
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            raise HttpError(400, "obsolete header line folding is not supported")
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, f"malformed header line {line[:60]!r}")
        headers.append((name, value.strip()))
    return headers


async def _read_head_lines(reader: asyncio.StreamReader) -> list[str] | None:
    """The lines of the next header block; None on a clean EOF before any byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise HttpError(400, "connection closed in the middle of a header block") from e
    except asyncio.LimitOverrunError as e:
        raise HttpError(431, f"header block larger than {STREAM_LIMIT} bytes") from e
    text = raw.decode("latin-1").lstrip("\r\n")  # tolerate stray CRLFs between messages
    return text.split("\r\n")


async def read_request_head(reader: asyncio.StreamReader) -> RequestHead | None:
    """Read one request head; None when the client closed an idle connection."""
    lines = await _read_head_lines(reader)
    if lines is None:
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    return RequestHead(parts[0], parts[1], parts[2], _parse_headers(lines[1:]))


async def read_response_head(reader: asyncio.StreamReader) -> ResponseHead:
    """Read one response head; EOFError (IncompleteReadError) when nothing arrived at all."""
    lines = await _read_head_lines(reader)
    if lines is None:
        raise asyncio.IncompleteReadError(b"", None)
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError(502, f"malformed status line {lines[0][:80]!r}")
    return ResponseHead(version, int(code), reason, _parse_headers(lines[1:]))


def body_framing(head: _Head, *, request_method: str | None = None) -> tuple[str, int]:
    """How the body of ``head`` is delimited (RFC 9112 section 6.3).

    Returns ``("none", 0)``, ``("length", n)``, ``("chunked", 0)`` or ``("close", 0)``
    (read until the peer closes; responses only). ``request_method`` is given for a
    response and names the method of the request it answers.
    """
    is_response = isinstance(head, ResponseHead)
    if is_response:
        assert isinstance(head, ResponseHead)
        if request_method == "HEAD" or head.status < 200 or head.status in (204, 304):
            return ("none", 0)
    codings = [c.strip().lower() for v in head.get_all("transfer-encoding") for c in v.split(",")]
    codings = [c for c in codings if c]
    lengths = head.get_all("content-length")
    if codings:
        if not is_response and lengths:
            raise HttpError(400, "request has both Transfer-Encoding and Content-Length")
        if codings[-1] == "chunked":
            return ("chunked", 0)
        if is_response:
            return ("close", 0)
        raise HttpError(501, f"unsupported Transfer-Encoding {', '.join(codings)!r}")
    if lengths:
        values = {v.strip() for v in ",".join(lengths).split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise HttpError(400, f"invalid Content-Length {', '.join(lengths)!r}")
        return ("length", int(values.pop()))
    return ("close", 0) if is_response else ("none", 0)


async def iter_body(reader: asyncio.StreamReader, framing: tuple[str, int]) -> AsyncIterator[bytes]:
    """Yield the decoded body delimited by ``framing`` in pieces of at most IO_CHUNK bytes."""
    kind, length = framing
    if kind == "length":
        remaining = length
        while remaining:
            piece = await reader.read(min(remaining, IO_CHUNK))
            if not piece:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(piece)
            yield piece
    elif kind == "chunked":
        async for piece in _iter_chunked(reader):
            yield piece
    elif kind == "close":
        while piece := await reader.read(IO_CHUNK):
            yield piece


async def _iter_chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as e:
            raise HttpError(400, f"malformed chunk size {size_text[:20]!r}") from e
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # skip trailers
                pass
            return
        remaining = size
        while remaining:
            piece = await reader.read(min(remaining, IO_CHUNK))
            if not piece:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(piece)
            yield piece
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError(400, "chunk data not followed by CRLF")


async def read_body(reader: asyncio.StreamReader, framing: tuple[str, int], limit: int) -> bytes:
    """The whole decoded body; HttpError 413 when it exceeds ``limit`` bytes."""
    kind, length = framing
    if kind == "none":
        return b""
    if kind == "length":
        if length > limit:
            raise HttpError(413, f"body of {length} bytes exceeds the limit of {limit}")
        return await reader.readexactly(length)
    parts: list[bytes] = []
    size = 0
    async for piece in iter_body(reader, framing):
        size += len(piece)
        if size > limit:
            raise HttpError(413, f"body exceeds the limit of {limit} bytes")
        parts.append(piece)
    return b"".join(parts)


async def discard_body(reader: asyncio.StreamReader, framing: tuple[str, int]) -> None:
    """Read and drop the body delimited by ``framing``."""
    async for _ in iter_body(reader, framing):
        pass


async def relay_body(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, framing: tuple[str, int]
) -> None:
    """Stream a body from ``reader`` to ``writer`` keeping its framing (chunks re-encoded)."""
    chunked = framing[0] == "chunked"
    async for piece in iter_body(reader, framing):
        if chunked:
            writer.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))
        else:
            writer.write(piece)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def reason_phrase(status: int) -> str:
    """The standard reason phrase of ``status`` ("Unknown" for codes HTTP does not name)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def encode_head(start_line: str, headers: Headers) -> bytes:
    """Serialise a start line and headers into a header block."""
    lines = [start_line, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def simple_response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    keep_alive: bool = True,
    extra: Headers | None = None,
    head_only: bool = False,
) -> bytes:
    """A complete response with a Content-Length body, ready to write."""
    headers: Headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Connection", "keep-alive" if keep_alive else "close"),
        *(extra or []),
    ]
    head = encode_head(f"HTTP/1.1 {status} {reason_phrase(status)}", headers)
    return head if head_only else head + body


def json_bytes(payload: object) -> bytes:
    """Compact JSON for response bodies."""
    return json.dumps(payload, separators=(",", ":")).encode()


def forward_headers(headers: Headers, drop: frozenset[str] = frozenset()) -> Headers:
    """Headers without hop-by-hop ones, those named by Connection, and ``drop`` (lower-case)."""
    named = {t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")}
    skip = HOP_BY_HOP | named | drop
    return [(k, v) for k, v in headers if k.lower() not in skip]


async def send_error(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    """Answer ``status`` with a JSON error body and ``Connection: close`` (best effort)."""
    try:
        writer.write(simple_response(status, json_bytes({"error": message}), keep_alive=False))
        await writer.drain()
    except (ConnectionError, RuntimeError):
        pass


def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a connection, ignoring a transport that is already gone."""
    try:
        writer.close()
    except (ConnectionError, RuntimeError):
        pass


# --------------------------------------------------------------------------------------------
# Service proxies
# --------------------------------------------------------------------------------------------


class _UpstreamFailed(Exception):
    """An upstream exchange failed; ``retryable`` when no response byte had arrived."""

    def __init__(self, backend: Backend, cause: BaseException, *, connect: bool, no_response: bool) -> None:
        super().__init__(f"{backend[0]}:{backend[1]}: {type(cause).__name__}: {cause}".rstrip(": "))
        self.connect = connect
        self.no_response = no_response


class _Service:
    """One Service's listener, endpoint set, round-robin cursor and upstream pools."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.server: asyncio.Server | None = None
        self.port = 0
        self.endpoints: tuple[Backend, ...] = ()
        self.cursor = 0
        self.pools: dict[Backend, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self.clients: set[asyncio.StreamWriter] = set()

    def pick(self, exclude: set[Backend]) -> Backend | None:
        """Next backend of the current set in round-robin order, avoiding ``exclude`` if possible."""
        endpoints = self.endpoints
        count = len(endpoints)
        if not count:
            return None
        for _ in range(count):
            backend = endpoints[self.cursor % count]
            self.cursor += 1
            if backend not in exclude:
                return backend
        return endpoints[self.cursor % count]

    def drop_idle(self, keep: set[Backend]) -> None:
        """Close pooled connections to backends outside ``keep``."""
        for backend in [b for b in self.pools if b not in keep]:
            for _, writer in self.pools.pop(backend):
                close_quietly(writer)


class ServiceProxies:
    """A proxy per lab Service, routing each request to the Service's ready endpoints."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._services: dict[str, _Service] = {}
        self._endpoints: dict[str, tuple[Backend, ...]] = {}
        self._lock = asyncio.Lock()

    async def ensure(self, key: str) -> int:
        """Start the proxy of Service ``key`` on a free port unless it runs; return its port."""
        async with self._lock:
            service = self._services.get(key)
            if service is not None:
                return service.port
            service = _Service(key)
            service.endpoints = self._endpoints.get(key, ())
            service.server = await asyncio.start_server(
                lambda r, w: self._serve_client(service, r, w), self._host, 0, limit=STREAM_LIMIT
            )
            service.port = service.server.sockets[0].getsockname()[1]
            self._services[key] = service
            return service.port

    def set_endpoints(self, key: str, endpoints: list[tuple[str, int]]) -> None:
        """Replace the ready backends of Service ``key`` at once (kept even before ``ensure``).

        Call it on the event loop's thread: it closes idle connections to removed backends.
        """
        current = tuple((str(h), int(p)) for h, p in endpoints)
        self._endpoints[key] = current
        service = self._services.get(key)
        if service is not None:
            service.endpoints = current
            service.drop_idle(set(current))

    async def remove(self, key: str) -> None:
        """Stop the proxy of Service ``key`` and close its connections; no-op when absent."""
        self._endpoints.pop(key, None)
        async with self._lock:
            service = self._services.pop(key, None)
        if service is None:
            return
        service.endpoints = ()
        if service.server is not None:
            service.server.close()
        for writer in list(service.clients):
            close_quietly(writer)
        service.drop_idle(set())

    def url(self, key: str) -> str | None:
        """Base URL of Service ``key``'s proxy, or None when it has none."""
        service = self._services.get(key)
        return None if service is None else f"http://{self._host}:{service.port}"

    def urls(self) -> dict[str, str]:
        """Base URL of every running proxy, by Service key."""
        return {key: f"http://{self._host}:{s.port}" for key, s in self._services.items()}

    async def close(self) -> None:
        """Stop every proxy."""
        for key in list(self._services):
            await self.remove(key)

    # -- serving ------------------------------------------------------------------------------

    async def _serve_client(
        self, service: _Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        service.clients.add(writer)
        try:
            while True:
                head = await read_request_head(reader)
                if head is None:
                    return
                framing = body_framing(head)
                if "100-continue" in (head.get("expect") or "").lower():
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await read_body(reader, framing, MAX_PROXY_BODY)
                if not await self._forward(service, head, body, writer):
                    return
        except HttpError as e:
            await send_error(writer, e.status, str(e))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("service proxy %s: unexpected error", service.key)
        finally:
            service.clients.discard(writer)
            close_quietly(writer)

    async def _forward(
        self, service: _Service, head: RequestHead, body: bytes, client: asyncio.StreamWriter
    ) -> bool:
        """Answer one request through a backend; True when the client connection stays open."""
        keep_alive = head.keep_alive
        request = _encode_upstream_request(head, body)
        tried: set[Backend] = set()
        failure: _UpstreamFailed | None = None
        for _attempt in range(2):
            backend = service.pick(tried)
            if backend is None:
                break
            fresh_only = bool(tried)
            tried.add(backend)
            try:
                return await self._exchange(service, backend, head, request, client, keep_alive, fresh_only)
            except _UpstreamFailed as e:
                failure = e
                if not (e.connect or (e.no_response and head.method in IDEMPOTENT_METHODS)):
                    break
        if failure is None:
            message = f"service {service.key} has no ready endpoints"
            client.write(simple_response(503, json_bytes({"error": message}), keep_alive=keep_alive))
        else:
            message = f"service {service.key}: upstream {failure}"
            client.write(simple_response(502, json_bytes({"error": message}), keep_alive=keep_alive))
        await client.drain()
        return keep_alive

    async def _acquire(
        self, service: _Service, backend: Backend, fresh_only: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """A live pooled connection to ``backend`` or a new one; the flag says it is new."""
        pool = service.pools.get(backend)
        while pool and not fresh_only:
            reader, writer = pool.pop()
            if not (reader.at_eof() or writer.is_closing()):
                return reader, writer, False
            close_quietly(writer)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(*backend, limit=STREAM_LIMIT)
        except (OSError, TimeoutError) as e:
            raise _UpstreamFailed(backend, e, connect=True, no_response=True) from e
        return reader, writer, True

    def _release(
        self, service: _Service, backend: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if backend not in service.endpoints or self._services.get(service.key) is not service:
            close_quietly(writer)
            return
        pool = service.pools.setdefault(backend, [])
        if len(pool) >= MAX_IDLE_PER_BACKEND:
            close_quietly(writer)
        else:
            pool.append((reader, writer))

    async def _exchange(
        self,
        service: _Service,
        backend: Backend,
        head: RequestHead,
        request: bytes,
        client: asyncio.StreamWriter,
        keep_alive: bool,
        fresh_only: bool,
    ) -> bool:
        """Send ``request`` to ``backend`` and relay the answer to ``client``."""
        reader, writer, _new = await self._acquire(service, backend, fresh_only)
        try:
            writer.write(request)
            async with asyncio.timeout(RESPONSE_TIMEOUT_S):
                await writer.drain()
                response = await read_response_head(reader)
                while 100 <= response.status < 200:  # interim answers: drop them
                    response = await read_response_head(reader)
            framing = body_framing(response, request_method=head.method)
        except (OSError, asyncio.IncompleteReadError, HttpError, TimeoutError) as e:
            close_quietly(writer)
            no_response = not isinstance(e, HttpError | TimeoutError)
            raise _UpstreamFailed(backend, e, connect=False, no_response=no_response) from e
        client_keeps = keep_alive and framing[0] != "close"
        headers = forward_headers(response.headers)
        if framing[0] == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        headers.append(("X-Backend", f"{backend[0]}:{backend[1]}"))
        headers.append(("Connection", "keep-alive" if client_keeps else "close"))
        start = f"HTTP/1.1 {response.status} {response.reason or reason_phrase(response.status)}"
        out = encode_head(start, headers)
        try:
            if framing[0] == "length" and framing[1] <= IO_CHUNK:
                client.write(out + await reader.readexactly(framing[1]))
                await client.drain()
            else:
                client.write(out)
                await relay_body(reader, client, framing)
        except BaseException:
            close_quietly(writer)
            raise
        if response.keep_alive and framing[0] != "close":
            self._release(service, backend, reader, writer)
        else:
            close_quietly(writer)
        return client_keeps


def _encode_upstream_request(head: RequestHead, body: bytes) -> bytes:
    """The request as sent to a backend: hop-by-hop headers dropped, body re-framed by length."""
    headers = forward_headers(head.headers, drop=frozenset({"content-length", "expect"}))
    if body or head.method in ("POST", "PUT", "PATCH"):
        headers.append(("Content-Length", str(len(body))))
    return encode_head(f"{head.method} {head.target} HTTP/1.1", headers) + body
