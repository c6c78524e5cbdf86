"""Serving a stand-in's aiohttp application on a loopback port, and stopping it."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def serve(app: web.Application, host: str, port: int, **runner: Any) -> tuple[web.AppRunner, int]:
    """Listen on ``host:port`` (0: a free port); return the runner (for :func:`close`) and the bound port.

    ``runner`` goes to :class:`aiohttp.web.AppRunner` (e.g. ``shutdown_timeout``); access logs are off.
    """
    r = web.AppRunner(app, access_log=None, **runner)
    await r.setup()
    await web.TCPSite(r, host, port).start()
    return r, int(r.addresses[0][1])


async def close(runner: web.AppRunner | None) -> None:
    """Stop what :func:`serve` started (nothing when it never started or was closed)."""
    if runner is not None:
        await runner.cleanup()
