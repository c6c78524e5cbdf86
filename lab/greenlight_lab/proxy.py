"""Per-Service data planes of the lab, and the small HTTP/1.1 toolkit the data plane shares.

A lab Service is reached through its own listener on a free loopback port. What happens
behind it is the Service's *data plane*, chosen per Service (``ServiceProxies.configure``;
the lab's default is ``kube-proxy``). The controller pushes the truth (ready, non-terminating
endpoints) with ``set_endpoints`` the moment it changes; how and when traffic follows it is
the data plane's business, because that is where real clusters lose requests:

``kube-proxy`` (the default; iptables/IPVS or GKE Dataplane V2): L4. Each accepted client
connection gets one backend, picked at random among the endpoints the proxy currently
*knows*, and bytes are piped both ways until both sides closed (an end of stream is passed
on as a half-close; a reset as a reset). No HTTP parsing, no retry, no ``X-Backend``.
Endpoint changes reach the known set only after ``endpoint_delay_s`` (default 1.5 s, plus
or minus ``endpoint_jitter_s``, by default a third of the delay), in order (kubernetes#98570).
Established connections stay on their backend whatever the endpoints do (kubernetes#46753),
so a keep-alive client keeps talking to the old colour. A known backend that no longer
listens, or an empty known set, aborts the client connection with a TCP reset right after
it was accepted. Real iptables REJECTs the SYN instead (the client sees "connection
refused" at connect time); the lab cannot refuse a connection it has accepted, so a client
sees a reset before any byte: both are a failed request that no standard client retries on
a new connection.

``neg`` (GKE container-native load balancing, kubernetes/ingress-gce#638): L7 per request
as the load balancer does, with **no retry**, over the load balancer's own backend set. That
set follows the endpoints with a detach-before-attach lag: a removed endpoint leaves it
after ``neg_detach_s`` (0.3 s); an added one joins only once ``neg_attach_s`` (2.5 s) has
passed *and* it has passed the load balancer's health check (``GET <health path>``, 200
only, every ``neg_health_interval_s`` 0.5 s, healthy after ``neg_healthy_threshold`` 2
successes in a row, unhealthy after ``neg_unhealthy_threshold`` 2 failures; the checks run
from the moment the endpoint is added). A direct selector switch therefore leaves about two
seconds with no backend, answered 502 ``{"error": "failed_to_pick_backend ..."}`` as the
GFE does; requests already sent finish on the old backend.

``mesh`` (a service mesh sidecar, or the lab before it had data planes): L7 per request,
round robin over the current endpoints, over pooled keep-alive upstream connections;
endpoint changes apply at once (requests already sent finish on the old backend), and an
upstream failure before any response byte (backend just stopped, stale pooled connection,
connection refused) is retried once on a backend of the current set: always for idempotent
methods, for the others only when the connect itself failed. No endpoints: 503 with a JSON
body naming the Service.

The L7 modes put ``X-Backend: host:port`` on every answer a backend produced.

When a proxy starts (``ensure``) or its mode changes, its data plane is programmed at once
from the endpoints already pushed; every later change goes through the mode's delays.

The toolkit (``read_request_head``, ``read_response_head``, ``body_framing``, the body
readers and ``simple_response``) is also used by the pods and the GCS fault front; it
handles keep-alive, ``Content-Length`` and chunked bodies, and rejects what it does not
understand with a clean 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

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


async def read_requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int = MAX_PROXY_BODY
) -> AsyncIterator[tuple[RequestHead, bytes]]:
    """Each request of a kept-alive client connection with its whole body (a ``100 Continue``
    sent first when the client waits for one), until the client ends the connection."""
    while True:
        head = await read_request_head(reader)
        if head is None:
            return
        framing = body_framing(head)
        if "100-continue" in (head.get("expect") or "").lower():
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        yield head, await read_body(reader, framing, limit)


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
# Service data planes
# --------------------------------------------------------------------------------------------

KUBE_PROXY, NEG, MESH = "kube-proxy", "neg", "mesh"
DATA_PLANES = (KUBE_PROXY, NEG, MESH)
DEFAULT_DATA_PLANE = KUBE_PROXY
# A Service's mode: this annotation if set, else "neg" when GKE's NEG annotation is there
# (as on container-native load-balanced Services), else the lab's default.
DATA_PLANE_ANNOTATION = "lab.greenlight.dev/data-plane"
NEG_ANNOTATION = "cloud.google.com/neg"
DEFAULT_ENDPOINT_DELAY_S = 1.5
DEFAULT_NEG_DETACH_S = 0.3
DEFAULT_NEG_ATTACH_S = 2.5
DEFAULT_NEG_HEALTH_INTERVAL_S = 0.5
DEFAULT_NEG_HEALTH_PATH = "/healthz"
NEG_HEALTH_TIMEOUT_S = 1.0
NEG_HEALTH_USER_AGENT = "GoogleHC/1.0"
_RESET_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends an RST


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Abort a connection with a TCP reset (SO_LINGER 0), dropping anything unsent."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_LINGER)
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes from ``reader`` to ``writer`` until end of stream, then half-close ``writer``."""
    while data := await reader.read(IO_CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _splice(
    creader: asyncio.StreamReader,
    cwriter: asyncio.StreamWriter,
    breader: asyncio.StreamReader,
    bwriter: asyncio.StreamWriter,
) -> None:
    """Pipe client->backend and backend->client, one task each, until both directions ended.

    An end of stream is passed on as a half-close. A failure on either side (a reset, a
    write to a peer that is gone) resets both connections, as a NAT passes an RST through.
    """
    pipes = {asyncio.create_task(_pipe(creader, bwriter)), asyncio.create_task(_pipe(breader, cwriter))}
    try:
        while pipes:
            done, pipes = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            errors = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
            if errors:
                for error in errors:
                    if not isinstance(error, OSError):
                        log.error("service proxy: pipe failed", exc_info=error)
                reset_connection(cwriter)
                reset_connection(bwriter)
                return
    finally:
        for task in pipes:
            task.cancel()
        if pipes:
            await asyncio.gather(*pipes, return_exceptions=True)


class _UpstreamFailed(Exception):
    """An upstream exchange failed; ``retryable`` when no response byte had arrived."""

    def __init__(self, backend: Backend, cause: BaseException, *, connect: bool, no_response: bool) -> None:
        super().__init__(f"{backend[0]}:{backend[1]}: {type(cause).__name__}: {cause}".rstrip(": "))
        self.connect = connect
        self.no_response = no_response


@dataclass
class _NegEndpoint:
    """One endpoint of a Service's network endpoint group, as the load balancer sees it."""

    backend: Backend
    task: asyncio.Task[None] | None = None  # attach lag, then the load balancer's health checks
    in_lb: bool = False  # attached and healthy: the load balancer sends it requests
    detach: asyncio.TimerHandle | None = None  # pending detach after the endpoint was removed


class _Service:
    """One Service's listener, data plane mode, routing state and upstream pools."""

    def __init__(self, key: str, mode: str, health_path: str) -> None:
        self.key = key
        self.mode = mode
        self.health_path = health_path
        self.server: asyncio.Server | None = None
        self.port = 0
        self.endpoints: tuple[Backend, ...] = ()  # where the data plane sends new traffic now
        self.cursor = 0
        self.pools: dict[Backend, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self.connections: set[asyncio.Task[Any]] = set()  # the task serving each client connection
        # kube-proxy: endpoint sets on their way to the proxy, (due time, set), in order
        self.pending: deque[tuple[float, tuple[Backend, ...]]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        # neg: the network endpoint group
        self.neg: dict[Backend, _NegEndpoint] = {}

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
    """A listener per lab Service, in front of the Service's data plane (see the module doc).

    ``default_mode`` is the data plane of Services that ``configure`` gives none.
    ``endpoint_delay_s`` / ``endpoint_jitter_s`` (None: a third of the delay) set kube-proxy's
    propagation delay; 0 applies changes at once (unit tests). ``neg_*`` set the NEG load
    balancer's lags and health checks. ``seed`` seeds kube-proxy's backend and delay picks.
    Everything runs on the event loop's thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        default_mode: str = DEFAULT_DATA_PLANE,
        endpoint_delay_s: float = DEFAULT_ENDPOINT_DELAY_S,
        endpoint_jitter_s: float | None = None,
        neg_detach_s: float = DEFAULT_NEG_DETACH_S,
        neg_attach_s: float = DEFAULT_NEG_ATTACH_S,
        neg_health_interval_s: float = DEFAULT_NEG_HEALTH_INTERVAL_S,
        neg_healthy_threshold: int = 2,
        neg_unhealthy_threshold: int = 2,
        neg_health_path: str = DEFAULT_NEG_HEALTH_PATH,
        seed: int | None = None,
    ) -> None:
        if default_mode not in DATA_PLANES:
            raise ValueError(f"unknown data plane {default_mode!r} (known: {', '.join(DATA_PLANES)})")
        jitter = endpoint_delay_s / 3 if endpoint_jitter_s is None else endpoint_jitter_s
        delays = (endpoint_delay_s, jitter, neg_detach_s, neg_attach_s)
        if min(delays) < 0 or neg_health_interval_s <= 0:
            raise ValueError("data plane delays must be >= 0 and the health check interval > 0")
        if neg_healthy_threshold < 1 or neg_unhealthy_threshold < 1:
            raise ValueError("health check thresholds must be >= 1")
        self._host = host
        self.default_mode = default_mode
        self.endpoint_delay_s = float(endpoint_delay_s)
        self.endpoint_jitter_s = float(jitter)
        self.neg_detach_s = float(neg_detach_s)
        self.neg_attach_s = float(neg_attach_s)
        self.neg_health_interval_s = float(neg_health_interval_s)
        self.neg_healthy_threshold = neg_healthy_threshold
        self.neg_unhealthy_threshold = neg_unhealthy_threshold
        self.neg_health_path = neg_health_path
        self._random = random.Random(seed)
        self._services: dict[str, _Service] = {}
        self._endpoints: dict[str, tuple[Backend, ...]] = {}  # the truth, as last pushed
        self._modes: dict[str, str] = {}  # configured modes (absent: the default)
        self._health_paths: dict[str, str] = {}
        self._lock = asyncio.Lock()

    # -- configuration and status -----------------------------------------------------------

    def configure(self, key: str, mode: str | None = None, *, health_path: str | None = None) -> str:
        """Choose Service ``key``'s data plane (None: the default); return the mode in effect.

        ``health_path`` is what the NEG load balancer checks (default ``neg_health_path``).
        An unknown mode (a mistyped annotation) logs a warning and falls back to the default:
        a Service write must not fail on it. On a running proxy a new mode (or health path)
        reprograms the data plane at once from the current endpoints; open client
        connections are not moved.
        """
        if mode is not None and mode not in DATA_PLANES:
            log.warning(
                "service %s: unknown data plane %r (known: %s); using %s",
                key, mode, ", ".join(DATA_PLANES), self.default_mode,
            )  # fmt: skip
            mode = None
        if mode is None:
            self._modes.pop(key, None)
        else:
            self._modes[key] = mode
        if health_path is None:
            self._health_paths.pop(key, None)
        else:
            self._health_paths[key] = health_path
        service = self._services.get(key)
        if service is not None and (service.mode, service.health_path) != (self.mode(key), self._health(key)):
            self._stop_plane(service)
            service.mode, service.health_path = self.mode(key), self._health(key)
            self._start_plane(service)
        return self.mode(key)

    def mode(self, key: str) -> str:
        """The data plane of Service ``key`` (configured, else the default)."""
        return self._modes.get(key, self.default_mode)

    def known_endpoints(self, key: str) -> list[Backend]:
        """Where Service ``key``'s data plane sends new traffic now: kube-proxy's known set,
        the NEG load balancer's healthy backends, the mesh's current endpoints; [] without a proxy."""
        service = self._services.get(key)
        return [] if service is None else list(service.endpoints)

    def settings(self) -> dict[str, Any]:
        """The data plane configuration, for status pages."""
        return {
            "default_mode": self.default_mode,
            "endpoint_delay_s": self.endpoint_delay_s,
            "endpoint_jitter_s": self.endpoint_jitter_s,
            "neg_detach_s": self.neg_detach_s,
            "neg_attach_s": self.neg_attach_s,
            "neg_health_interval_s": self.neg_health_interval_s,
            "neg_healthy_threshold": self.neg_healthy_threshold,
            "neg_unhealthy_threshold": self.neg_unhealthy_threshold,
            "neg_health_path": self.neg_health_path,
        }

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per running proxy: its mode, the pushed endpoints and the ones its data plane routes to."""
        return {
            key: {
                "mode": s.mode,
                "endpoints": [f"{h}:{p}" for h, p in self._endpoints.get(key, ())],
                "known_endpoints": [f"{h}:{p}" for h, p in s.endpoints],
            }
            for key, s in self._services.items()
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def ensure(self, key: str) -> int:
        """Start the proxy of Service ``key`` on a free port unless it runs; return its port."""
        async with self._lock:
            service = self._services.get(key)
            if service is not None:
                return service.port
            service = _Service(key, self.mode(key), self._health(key))
            service.server = await asyncio.start_server(
                lambda r, w: self._accept(service, r, w), self._host, 0, limit=STREAM_LIMIT
            )
            service.port = service.server.sockets[0].getsockname()[1]
            self._services[key] = service
            self._start_plane(service)
            return service.port

    def track(self, key: str) -> None:
        """Run Service ``key``'s data plane without a listener of its own: a backend set that
        another front forwards requests into with ``forward`` (a Gateway's per-backend NEG).
        Programmed at once from the endpoints already pushed, as ``ensure`` does."""
        if key in self._services:
            return
        service = _Service(key, self.mode(key), self._health(key))
        self._services[key] = service
        self._start_plane(service)

    async def forward(self, key: str, head: RequestHead, body: bytes, client: asyncio.StreamWriter) -> bool:
        """Answer one request read by another front through Service ``key``'s data plane (an
        L7 mode: ``neg`` or ``mesh``), as its own listener would; True when the client
        connection stays open. ``key`` must be tracked (``track``) or ensured."""
        service = self._services[key]
        mode = service.mode if service.mode != KUBE_PROXY else NEG
        return await self._forward(service, mode, head, body, client)

    def set_endpoints(self, key: str, endpoints: list[tuple[str, int]]) -> None:
        """Push the ready backends of Service ``key`` (kept even before ``ensure``).

        The data plane follows in its own time (see the module doc). Call it on the event
        loop's thread.
        """
        current = tuple((str(h), int(p)) for h, p in endpoints)
        previous = self._endpoints.get(key, ())
        self._endpoints[key] = current
        service = self._services.get(key)
        if service is None or current == previous:
            return
        if service.mode == KUBE_PROXY:
            self._propagate(service, current)
        elif service.mode == NEG:
            self._neg_update(service, current)
        else:
            self._route(service, current)

    async def remove(self, key: str) -> None:
        """Stop the proxy of Service ``key`` and close its connections; no-op when absent."""
        self._endpoints.pop(key, None)
        self._modes.pop(key, None)
        self._health_paths.pop(key, None)
        async with self._lock:
            service = self._services.pop(key, None)
        if service is None:
            return
        self._stop_plane(service)
        service.endpoints = ()
        if service.server is not None:
            service.server.close()
        connections = list(service.connections)
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.wait(connections, timeout=5)
        service.drop_idle(set())

    def url(self, key: str) -> str | None:
        """Base URL of Service ``key``'s proxy, or None when it has none (or only ``track``s it)."""
        service = self._services.get(key)
        return None if service is None or service.server is None else f"http://{self._host}:{service.port}"

    def urls(self) -> dict[str, str]:
        """Base URL of every running proxy, by Service key."""
        return {
            key: f"http://{self._host}:{s.port}" for key, s in self._services.items() if s.server is not None
        }

    async def close(self) -> None:
        """Stop every proxy."""
        for key in list(self._services):
            await self.remove(key)

    # -- programming the data planes ------------------------------------------------------------

    def _health(self, key: str) -> str:
        return self._health_paths.get(key, self.neg_health_path)

    def _start_plane(self, service: _Service) -> None:
        """Program a (new or re-moded) proxy at once from the endpoints already pushed."""
        truth = self._endpoints.get(service.key, ())
        if service.mode == NEG:
            for backend in truth:
                self._neg_add(service, backend, attached=True)
            self._neg_publish(service)
        else:
            self._route(service, truth)

    def _stop_plane(self, service: _Service) -> None:
        """Forget pending kube-proxy updates and the NEG (its lags and health checks)."""
        if service.timer is not None:
            service.timer.cancel()
            service.timer = None
        service.pending.clear()
        for ep in service.neg.values():
            if ep.detach is not None:
                ep.detach.cancel()
            if ep.task is not None:
                ep.task.cancel()
        service.neg.clear()

    def _route(self, service: _Service, endpoints: tuple[Backend, ...]) -> None:
        """Send new traffic of ``service`` to ``endpoints`` from now on."""
        service.endpoints = endpoints
        service.drop_idle(set(endpoints))

    # kube-proxy: every change arrives after the propagation delay, in order

    def _propagate(self, service: _Service, endpoints: tuple[Backend, ...]) -> None:
        jitter = self.endpoint_jitter_s
        delay = self.endpoint_delay_s + (self._random.uniform(-jitter, jitter) if jitter else 0.0)
        if delay <= 0 and not service.pending:
            self._route(service, endpoints)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, delay)
        if service.pending:
            due = max(due, service.pending[-1][0])
        service.pending.append((due, endpoints))
        if service.timer is None:
            service.timer = loop.call_at(due, self._apply_due, service)

    def _apply_due(self, service: _Service) -> None:
        service.timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + 0.001  # the loop may run a timer a clock tick early
        latest = None
        while service.pending and service.pending[0][0] <= now:
            latest = service.pending.popleft()[1]
        if latest is not None:
            self._route(service, latest)
        if service.pending:
            service.timer = loop.call_at(service.pending[0][0], self._apply_due, service)

    # neg: detach after neg_detach_s, attach after neg_attach_s and the load balancer's health checks

    def _neg_update(self, service: _Service, truth: tuple[Backend, ...]) -> None:
        wanted = set(truth)
        for backend in truth:
            ep = service.neg.get(backend)
            if ep is None:
                self._neg_add(service, backend, attached=False)
            elif ep.detach is not None:  # back before it was detached: it stays
                ep.detach.cancel()
                ep.detach = None
        loop = asyncio.get_running_loop()
        for backend, ep in list(service.neg.items()):
            if backend in wanted or ep.detach is not None:
                continue
            if self.neg_detach_s <= 0:
                self._neg_detach(service, backend)
            else:
                ep.detach = loop.call_later(self.neg_detach_s, self._neg_detach, service, backend)

    def _neg_add(self, service: _Service, backend: Backend, *, attached: bool) -> None:
        ep = _NegEndpoint(backend, in_lb=attached)
        ep.task = asyncio.get_running_loop().create_task(
            self._neg_life(service, ep, attached), name=f"neg-{service.key}-{backend[1]}"
        )
        service.neg[backend] = ep

    def _neg_detach(self, service: _Service, backend: Backend) -> None:
        ep = service.neg.pop(backend, None)
        if ep is None:
            return
        if ep.task is not None:
            ep.task.cancel()
        self._neg_publish(service)

    def _neg_publish(self, service: _Service) -> None:
        """The load balancer's backend set: the group's attached, healthy endpoints."""
        self._route(service, tuple(b for b, ep in service.neg.items() if ep.in_lb))

    async def _neg_life(self, service: _Service, ep: _NegEndpoint, attached: bool) -> None:
        """Health-check one endpoint; it is in the load balancer's set while attached and healthy."""
        loop = asyncio.get_running_loop()
        attach_at = loop.time() + (0.0 if attached else self.neg_attach_s)
        healthy, streak = attached, 0  # streak: results in a row that disagree with ``healthy``
        while True:
            ok = await self._neg_health_check(ep.backend, service.health_path)
            if ok == healthy:
                streak = 0
            else:
                streak += 1
                if streak >= (self.neg_healthy_threshold if ok else self.neg_unhealthy_threshold):
                    healthy, streak = ok, 0
            now = loop.time()
            in_lb = healthy and now >= attach_at
            if ep.in_lb != in_lb and service.neg.get(ep.backend) is ep:
                ep.in_lb = in_lb
                self._neg_publish(service)
            wait = self.neg_health_interval_s
            if healthy and not in_lb:  # join as soon as the attach lag is over
                wait = min(wait, max(0.0, attach_at - now))
            await asyncio.sleep(wait)

    async def _neg_health_check(self, backend: Backend, path: str) -> bool:
        """One load-balancer health check: ``GET path`` answered 200 within the timeout."""
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {backend[0]}:{backend[1]}\r\n"
            f"User-Agent: {NEG_HEALTH_USER_AGENT}\r\nConnection: close\r\n\r\n"
        ).encode()
        writer = None
        try:
            async with asyncio.timeout(NEG_HEALTH_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(*backend, limit=STREAM_LIMIT)
                writer.write(request)
                response = await read_response_head(reader)
                return response.status == 200
        except (OSError, TimeoutError, EOFError, HttpError):
            return False
        finally:
            if writer is not None:
                close_quietly(writer)

    # -- serving ------------------------------------------------------------------------------

    async def _accept(
        self, service: _Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        service.connections.add(task)
        try:
            if service.mode == KUBE_PROXY:
                await self._serve_l4(service, reader, writer)
            else:
                await self._serve_http(service, service.mode, reader, writer)
        finally:
            service.connections.discard(task)

    async def _serve_l4(
        self, service: _Service, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> None:
        """kube-proxy: one backend for the whole connection, picked at random among the known ones."""
        bwriter = None
        try:
            if not service.endpoints:  # iptables would REJECT the SYN; we can only reset
                reset_connection(cwriter)
                return
            backend = self._random.choice(service.endpoints)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    breader, bwriter = await asyncio.open_connection(*backend, limit=STREAM_LIMIT)
            except (OSError, TimeoutError):
                reset_connection(cwriter)
                return
            await _splice(creader, cwriter, breader, bwriter)
        finally:
            close_quietly(cwriter)
            if bwriter is not None:
                close_quietly(bwriter)

    async def _serve_http(
        self, service: _Service, mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The L7 modes (neg, mesh): read each request and forward it on its own."""
        try:
            async for head, body in read_requests(reader, writer):
                if not await self._forward(service, mode, head, body, writer):
                    return
        except HttpError as e:
            await send_error(writer, e.status, str(e))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("service proxy %s: unexpected error", service.key)
        finally:
            close_quietly(writer)

    async def _forward(
        self, service: _Service, mode: str, head: RequestHead, body: bytes, client: asyncio.StreamWriter
    ) -> bool:
        """Answer one request through a backend; True when the client connection stays open.

        The mesh retries once on another backend; the NEG load balancer does not.
        """
        keep_alive = head.keep_alive
        request = _encode_upstream_request(head, body)
        tried: set[Backend] = set()
        failure: _UpstreamFailed | None = None
        for _attempt in range(2 if mode == MESH else 1):
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
        if failure is not None:
            status, message = 502, f"service {service.key}: upstream {failure}"
        elif mode == NEG:
            status = 502
            message = f"failed_to_pick_backend: no healthy backend in the network endpoint group of service {service.key}"
        else:
            status, message = 503, f"service {service.key} has no ready endpoints"
        client.write(simple_response(status, json_bytes({"error": message}), keep_alive=keep_alive))
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
        except asyncio.CancelledError:  # the Service was removed
            close_quietly(writer)
            raise
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
