"""A token service on another host, for the realm tests: it records what it was sent.

``RealmSpy`` listens on ``127.0.0.2`` by default (another host than the registry stand-in's
``127.0.0.1``: Linux routes all of 127/8 to the loopback interface). Every GET is recorded with
its Authorization header as received, and answered in one of these ways:

- ``upstream`` set: the same path and query fetched anonymously from ``upstream`` (the stand-in,
  so the token it hands out is one the stand-in accepts);
- ``redirect_to`` set: 302 to that URL plus the query;
- ``deny``: 401 DENIED (a token service that refuses anonymous pulls);
- otherwise a token of its own.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Seen:
    path: str  # with the query
    authorization: str | None  # the header exactly as received


class RealmSpy:
    """A tiny HTTP token service on its own thread; use as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.2",
        upstream: str | None = None,
        redirect_to: str | None = None,
        deny: bool = False,
    ) -> None:
        self.upstream, self.redirect_to, self.deny = upstream, redirect_to, deny
        self.seen: list[Seen] = []
        spy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                spy.seen.append(Seen(self.path, self.headers.get("Authorization")))
                query = urlsplit(self.path).query
                if spy.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", spy.redirect_to + (f"?{query}" if query else ""))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if spy.deny:
                    self._json(401, {"errors": [{"code": "DENIED", "message": "anonymous pull refused"}]})
                    return
                if spy.upstream is not None:
                    with urllib.request.urlopen(spy.upstream + self.path, timeout=5) as answer:
                        self._json(answer.status, json.loads(answer.read()))
                    return
                self._json(200, {"token": "spy-token", "expires_in": 300})

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="realm-spy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def authorizations(self) -> list[str | None]:
        return [s.authorization for s in self.seen]

    def __enter__(self) -> RealmSpy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
