"""``greenlight webhook serve [--host 127.0.0.1] [--port 8765 | --fd FD]``: run the receiver of
GitHub's webhooks (``POST /github``) and Slack's interactions (``POST /slack/interactions``).

``--fd`` serves on a TCP socket already listening, inherited as that file descriptor (socket
activation: a supervisor that binds the port itself hands it over, so no other process can take
the port between the choice and the start; the lab does this).

Prints the address, the routes taken from the profiles (which branch releases which
environment) and where the secret and the dedupe file come from, then serves until interrupted
(Ctrl-C or SIGTERM). The receiver only emits Prefect events: a production promotion it starts
still pauses for approval in the flow.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

from greenlight.commands import failed
from greenlight.errors import GreenlightError, InputInvalid

COMMANDS = {"webhook"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``webhook serve``."""
    p = sub.add_parser("webhook", help="the receiver of GitHub webhooks and Slack approvals")
    cmds = p.add_subparsers(dest="webhook_command", required=True)
    s = cmds.add_parser(
        "serve", help="serve POST /github, POST /slack/interactions and GET /healthz until interrupted"
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8765, help="port to bind (default 8765)")
    s.add_argument(
        "--fd",
        type=int,
        default=None,
        help="serve on a listening TCP socket inherited as this file descriptor instead of binding "
        "--host/--port (socket activation)",
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed ``webhook`` command."""
    if args.webhook_command == "serve":
        return serve(args.host, args.port, getattr(args, "fd", None))
    raise InputInvalid(f"unknown webhook command {args.webhook_command!r}")


def serve(host: str, port: int, fd: int | None = None) -> int:
    """Run the receiver with uvicorn on ``host:port`` (or on the listening socket ``fd``); return 0
    after a clean shutdown.

    Raises :class:`InputInvalid` when ``PREFECT_API_URL`` is not set (events would go nowhere),
    when ``fd`` is not a listening TCP socket, and :class:`ProfileInvalid` when a profile is invalid.
    """
    import uvicorn
    from prefect.settings import get_current_settings

    from greenlight.webhook.app import SECRET_BLOCK_ENV, SECRET_ENV, create_app, load_routes
    from greenlight.webhook.dedupe import DeliveryStore
    from greenlight.webhook.slack import signing_key_source, signing_secret_source

    api_url = get_current_settings().api.url
    if not api_url:
        raise InputInvalid(
            "PREFECT_API_URL is not set: the receiver needs a Prefect server to send events to"
        )
    sock = None if fd is None else inherited_socket(fd)
    if sock is not None:
        host, port = sock.getsockname()[:2]
    routes = load_routes()
    store = DeliveryStore()
    signing, key = signing_secret_source(), signing_key_source()
    app = create_app(routes=routes, store=store, slack_signing_secret=signing, signing_key=key)
    _configure_logging()
    print(f"greenlight webhook: listening on http://{host}:{port}/github (health: /healthz)")
    print(f"  Slack interactivity: http://{host}:{port}/slack/interactions (the Slack app's Request URL)")
    print(f"  events to {api_url}; dedupe state {store.path}")
    print(f"  secret: {_secret_origin(SECRET_ENV, SECRET_BLOCK_ENV)}")
    print(f"  Slack signing secret: {signing.origin()}; approval signing key: {key.origin()}")
    for r in routes:
        print(f"  {r.repository} workflow '{r.workflow}' on {r.branch} -> {r.environment}")
    if not routes:
        print("  no profile has a github section: every workflow_run is ignored")
    sys.stdout.flush()
    # the CLI lets SIGPIPE end a command whose output pipe closed (`greenlight ... | head`); a
    # server must not end when a client hangs up before its answer (GitHub gives up after 10 s):
    # that write fails with EPIPE for that connection only
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    server = _graceful_server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    server.run(sockets=None if sock is None else [sock])
    if not server.started:
        raise InputInvalid(f"could not listen on {host}:{port} (in use, or not an address of this machine)")
    print("greenlight webhook: stopped")
    return 0


def inherited_socket(fd: int) -> socket.socket:
    """The listening TCP socket open as file descriptor ``fd``; InputInvalid naming ``fd`` otherwise."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise InputInvalid(f"--fd {fd}: not an open socket ({e.strerror or e})") from e
    listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    if (
        sock.type != socket.SOCK_STREAM
        or sock.family not in (socket.AF_INET, socket.AF_INET6)
        or not listening
    ):
        sock.detach()  # not ours to close
        raise InputInvalid(f"--fd {fd}: not a listening TCP socket")
    return sock


def _graceful_server(config: Any) -> Any:
    """A uvicorn server that, after a graceful shutdown on SIGINT/SIGTERM, returns normally instead
    of re-raising the signal (uvicorn's default), so the command reports and exits 0."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()  # handled by shutting down: nothing to re-raise

    return Server(config)


def _secret_origin(env: str, block_env: str) -> str:
    """Where the secret comes from, never its value."""
    if os.environ.get(env):
        return f"${env}"
    if os.environ.get(block_env):
        return f"Prefect Secret block '{os.environ[block_env]}' (${block_env})"
    return f"NOT CONFIGURED: set ${env} or ${block_env}; every delivery is answered 503"


def _configure_logging() -> None:
    """One line per delivery on stderr from logger ``greenlight.webhook``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("greenlight.webhook")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """``python -m greenlight.commands.webhook serve ...``: the command without the whole CLI."""
    parser = argparse.ArgumentParser(prog="greenlight")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["webhook", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except GreenlightError as e:
        return failed(e)


if __name__ == "__main__":
    sys.exit(main())
