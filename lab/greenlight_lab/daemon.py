"""The lab daemon: one asyncio process hosting every stand-in written by us.

Run as ``python -m greenlight_lab.daemon DIR --gcs-upstream URL [--data-plane MODE]
[--endpoint-delay-s S] [--scrape-interval-s S] [--ingestion-delay-s S] [--slack-request-url URL]``
(the Slack stand-in's signing secret comes from ``$GREENLIGHT_LAB_SLACK_SIGNING_SECRET``, never from
the command line: that is visible in ps). It starts two Kubernetes API servers with their controllers
(``lab-primary``, ``lab-dr``), the pods and Service proxies they drive (every Service on the
``--data-plane`` default, ``kube-proxy``, unless its annotations choose another), the OCI registry, the Slack endpoint, the GCS fault front, the gRPC
Monitoring service (points every ``--scrape-interval-s``, readable ``--ingestion-delay-s`` after
their scrape) and a small control API, then writes ``DIR/daemon.json`` with their ports.
The GitHub Packages API stand-in (greenlight_lab.packages) answers for the catalogue's images
with the token ``$GREENLIGHT_LAB_PACKAGES_TOKEN`` (read:packages and delete:packages).
SIGTERM stops everything (pods drain) and exits.

The control API: ``GET /status``, ``GET /urls``, ``GET|POST|DELETE /faults``, ``GET /faults/{id}``,
``GET|POST /images``, ``GET /slack`` (the Slack messages), ``POST /slack/click`` (a person clicks an
approval button: the Slack stand-in's ``POST /lab/click``, same body and answer), ``GET
/slack/responses`` (what was posted to response_urls), ``GET|PUT|DELETE /slack/interactivity`` (the
Request URL and signing secret; DELETE restores the daemon's own), ``GET /pagerduty/incidents``,
``GET /pagerduty/events`` (the PagerDuty stand-in's), ``GET /smtp/messages`` (the SMTP sink's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from greenlight_lab import serving
from greenlight_lab.catalogue import Behaviour, Catalogue
from greenlight_lab.cloudflare import CloudflareStandIn, tokens_from_environment
from greenlight_lab.cloudflare import routes as cloudflare_routes
from greenlight_lab.faults import FaultRegistry, FaultRule
from greenlight_lab.front import HttpFaultFront
from greenlight_lab.kube.cluster import KubeCluster
from greenlight_lab.metrics import RequestRecorder
from greenlight_lab.monitoring import MonitoringServer
from greenlight_lab.packages import (
    DELETE_SCOPE,
    LAB_LOGIN,
    PACKAGES_TOKEN_ENV,
    READ_SCOPE,
    Grant,
    PackagesStandIn,
)
from greenlight_lab.pagerduty import ROUTING_KEY_ENV as PAGERDUTY_KEY_ENV
from greenlight_lab.pagerduty import PagerDutyStandIn
from greenlight_lab.pods import PodRuntime
from greenlight_lab.proxy import DATA_PLANES, DEFAULT_DATA_PLANE, DEFAULT_ENDPOINT_DELAY_S, ServiceProxies
from greenlight_lab.registry import REGISTRY_PASSWORD_ENV, REGISTRY_USERNAME_ENV, RegistryStandIn
from greenlight_lab.slack import SIGNING_SECRET_ENV, SlackStandIn
from greenlight_lab.smtp import SmtpSink
from greenlight_lab.state import (
    DEFAULT_GATEWAY_PROGRAM_S,
    DEFAULT_INGESTION_DELAY_S,
    DEFAULT_SCRAPE_INTERVAL_S,
)

log = logging.getLogger("greenlight_lab.daemon")
CLUSTERS = ("lab-primary", "lab-dr")


class Daemon:
    def __init__(
        self,
        directory: Path,
        gcs_upstream: str,
        project: str,
        data_plane: str = DEFAULT_DATA_PLANE,
        endpoint_delay_s: float = DEFAULT_ENDPOINT_DELAY_S,
        scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
        ingestion_delay_s: float = DEFAULT_INGESTION_DELAY_S,
        slack_request_url: str | None = None,
        slack_signing_secret: str | None = None,
        registry_users: dict[str, str] | None = None,
        packages_token: str | None = None,
        gateway_program_s: float = DEFAULT_GATEWAY_PROGRAM_S,
    ) -> None:
        self.dir = directory
        self.faults = FaultRegistry()
        self.catalogue = Catalogue(directory / "images.json")
        # the Monitoring stand-in's reset points need the seconds after each series' first request
        self.recorder = RequestRecorder(keep_first_s=max(60.0, scrape_interval_s + 1))
        self.pods = PodRuntime(self.catalogue, self.recorder)
        self.proxies = ServiceProxies(default_mode=data_plane, endpoint_delay_s=endpoint_delay_s)
        self.clusters = {
            name: KubeCluster(name, self.faults, self.pods, self.proxies, gateway_program_s=gateway_program_s)
            for name in CLUSTERS
        }
        self.registry = RegistryStandIn(self.catalogue, self.faults, users=registry_users)
        # GitHub's Packages API for the catalogue's images; the lab's token may read and delete
        grants = (
            {packages_token: Grant(LAB_LOGIN, frozenset({READ_SCOPE, DELETE_SCOPE}))}
            if packages_token
            else {}
        )
        self.packages = PackagesStandIn(self.catalogue, self.faults, tokens=grants)
        self.slack = SlackStandIn(
            self.faults, request_url=slack_request_url, signing_secret=slack_signing_secret
        )
        self.gcs_front = HttpFaultFront(gcs_upstream, self.faults, target="gcs")
        # alerts: PagerDuty's Events API (the lab's routing key: $GREENLIGHT_PAGERDUTY_ROUTING_KEY) and an SMTP sink
        pd_key = os.environ.get(PAGERDUTY_KEY_ENV)
        self.pagerduty = PagerDutyStandIn(self.faults, {pd_key} if pd_key else set())
        self.smtp = SmtpSink(self.faults)
        self.cloudflare = CloudflareStandIn(self.faults, tokens_from_environment(dict(os.environ)))
        self.monitoring = MonitoringServer(
            self.recorder,
            self.faults,
            project_id=project,
            scrape_interval_s=scrape_interval_s,
            ingestion_delay_s=ingestion_delay_s,
        )
        self.ports: dict[str, int] = {}
        self._control: web.AppRunner | None = None

    async def start(self) -> dict[str, int]:
        for name, cluster in self.clusters.items():
            self.ports[f"kube-{name.removeprefix('lab-')}"] = await cluster.start()
        self.ports["registry"] = await self.registry.start()
        self.ports["packages"] = await self.packages.start()
        self.ports["slack"] = await self.slack.start()
        self.ports["gcs-front"] = await self.gcs_front.start()
        self.ports["pagerduty"] = await self.pagerduty.start()
        self.ports["smtp"] = await self.smtp.start()
        self.ports["cloudflare"] = await self.cloudflare.start()
        self.ports["monitoring"] = await asyncio.to_thread(self.monitoring.start)
        self.ports["control"] = await self._start_control()
        return self.ports

    async def stop(self) -> None:
        for step in (
            *(c.stop() for c in self.clusters.values()),
            self.pods.close(),
            self.proxies.close(),
            self.registry.stop(),
            self.packages.stop(),
            self.slack.stop(),
            self.gcs_front.stop(),
            self.pagerduty.stop(),
            self.smtp.stop(),
            self.cloudflare.stop(),
        ):
            try:
                await asyncio.wait_for(step, 15)
            except Exception as e:  # keep stopping the rest
                log.warning("stop step failed: %s", e)
        await asyncio.to_thread(self.monitoring.stop)
        await serving.close(self._control)

    # -- control API ----------------------------------------------------------------------
    async def _start_control(self) -> int:
        app = web.Application()
        app.add_routes(
            [
                web.get("/status", self._status),
                web.get("/urls", self._urls),
                web.get("/gateways", self._gateways),
                web.get("/faults", self._faults_list),
                web.post("/faults", self._faults_add),
                web.get("/faults/{id}", self._faults_get),
                web.delete("/faults", self._faults_clear),
                web.get("/images", self._images_list),
                web.post("/images", self._images_push),
                web.post("/images/signature", self._images_place_signature),
                web.get("/slack", self._slack_messages),
                web.post("/slack/click", self._slack_click),
                web.get("/slack/responses", self._slack_responses),
                web.get("/slack/interactivity", self._slack_interactivity_get),
                web.put("/slack/interactivity", self._slack_interactivity_put),
                web.delete("/slack/interactivity", self._slack_interactivity_reset),
                web.get("/pagerduty/incidents", self._pagerduty_incidents),
                web.get("/pagerduty/events", self._pagerduty_events),
                web.get("/smtp/messages", self._smtp_messages),
                *cloudflare_routes(self.cloudflare),
            ]
        )
        self._control, port = await serving.serve(app, "127.0.0.1", 0)
        return port

    async def _status(self, _: web.Request) -> web.Response:
        counts = {
            name: {plural: len(c.store.list(plural)[0]) for plural in ("pods", "deployments", "services")}
            for name, c in self.clusters.items()
        }
        data_plane = {**self.proxies.settings(), "services": self.proxies.describe()}
        return web.json_response(
            {
                "ports": self.ports,
                "objects": counts,
                "faults": self.faults.list(),
                "data_plane": data_plane,
                "gateways": {
                    **next(iter(self.clusters.values())).gateways.settings(),
                    "urls": {k: v for c in self.clusters.values() for k, v in c.gateways.urls().items()},
                },
                "monitoring": self.monitoring.settings(),
                "slack": self.slack.interactivity(),
            }
        )

    async def _urls(self, _: web.Request) -> web.Response:
        return web.json_response(self.proxies.urls())

    async def _gateways(self, _: web.Request) -> web.Response:
        """Every Gateway's listener URL by ``<cluster>/<namespace>/<name>``."""
        urls: dict[str, str] = {}
        for cluster in self.clusters.values():
            urls.update(cluster.gateways.urls())
        return web.json_response(urls)

    async def _faults_list(self, _: web.Request) -> web.Response:
        return web.json_response(self.faults.list())

    async def _faults_get(self, request: web.Request) -> web.Response:
        try:
            rule = self.faults.get(int(request.match_info["id"]))
        except ValueError:
            rule = None
        if rule is None:
            return web.json_response({"error": f"no fault rule {request.match_info['id']}"}, status=404)
        return web.json_response(rule)

    async def _faults_add(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        allowed = {"target", "verb", "resource", "mode", "status", "stall_s", "count", "retry_after", "skip"}
        unknown = set(body) - allowed
        if unknown or "target" not in body:
            return web.json_response(
                {"error": f"need 'target'; unknown fields: {sorted(unknown)}"}, status=400
            )
        try:
            rule = self.faults.add(FaultRule(**body))
        except (TypeError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(rule.to_dict())

    async def _faults_clear(self, request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.faults.clear(request.query.get("target"))})

    async def _images_list(self, _: web.Request) -> web.Response:
        return web.json_response(self.catalogue.list())

    async def _images_push(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        ref = body.pop("ref", None)
        signed_by = body.pop("signed_by", "lab")  # "lab" (default), "other", or None: unsigned
        pushed_at = body.pop("pushed_at", None)  # epoch seconds: a backdated push (image cleanup's tests)
        platforms = body.pop("platforms", None)  # ["linux/amd64", ...]: a multi-platform image (an index)
        try:
            behaviour = Behaviour(**body)
            digest = self.catalogue.push(
                str(ref), behaviour, signed_by=signed_by, pushed_at=pushed_at, platforms=platforms
            )
        except (TypeError, ValueError) as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(
            {
                "ref": ref,
                "digest": digest,
                "behaviour": asdict(behaviour),
                "signature": signed_by,
                "platforms": platforms,
            }
        )

    async def _images_place_signature(self, request: web.Request) -> web.Response:
        """``{"ref": TARGET, "from": SOURCE}``: SOURCE's signature at TARGET's .sig tag."""
        body = await _json_body(request)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("ref"), str)
            or not isinstance(body.get("from"), str)
        ):
            return web.json_response(
                {"error": 'the body must be {"ref": TARGET, "from": SOURCE}'}, status=400
            )
        try:
            tag = self.catalogue.place_signature(body["ref"], body["from"])
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(
            {"ref": body["ref"], "tag": tag, "signature": self.catalogue.signer(body["ref"])}
        )

    async def _pagerduty_incidents(self, _: web.Request) -> web.Response:
        return web.json_response(self.pagerduty.incidents)

    async def _pagerduty_events(self, _: web.Request) -> web.Response:
        return web.json_response(self.pagerduty.events)

    async def _smtp_messages(self, _: web.Request) -> web.Response:
        return web.json_response(self.smtp.messages)

    async def _slack_messages(self, _: web.Request) -> web.Response:
        return web.json_response(self.slack.messages)

    async def _slack_click(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        status, answer = await self.slack.click(body)
        return web.json_response(answer, status=status)

    async def _slack_responses(self, _: web.Request) -> web.Response:
        return web.json_response(self.slack.responses)

    async def _slack_interactivity_get(self, _: web.Request) -> web.Response:
        return web.json_response(self.slack.interactivity())

    async def _slack_interactivity_put(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        status, answer = self.slack.put_interactivity(body if isinstance(body, dict) else None)
        return web.json_response(answer, status=status)

    async def _slack_interactivity_reset(self, _: web.Request) -> web.Response:
        self.slack.reset_interactivity()
        return web.json_response(self.slack.interactivity())


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


async def _main(
    directory: Path,
    gcs_upstream: str,
    project: str,
    data_plane: str,
    endpoint_delay_s: float,
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    ingestion_delay_s: float = DEFAULT_INGESTION_DELAY_S,
    slack_request_url: str | None = None,
    slack_signing_secret: str | None = None,
    registry_users: dict[str, str] | None = None,
    packages_token: str | None = None,
    gateway_program_s: float = DEFAULT_GATEWAY_PROGRAM_S,
) -> None:
    daemon = Daemon(
        directory,
        gcs_upstream,
        project,
        data_plane,
        endpoint_delay_s,
        scrape_interval_s,
        ingestion_delay_s,
        slack_request_url=slack_request_url,
        slack_signing_secret=slack_signing_secret,
        registry_users=registry_users,
        packages_token=packages_token,
        gateway_program_s=gateway_program_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        ports = await daemon.start()
        out = directory / "daemon.json"
        tmp = out.with_suffix(".tmp")
        settings = {
            "data_plane": data_plane,
            "endpoint_delay_s": endpoint_delay_s,
            "gateway_program_s": gateway_program_s,
            **daemon.monitoring.settings(),
            "slack_request_url": slack_request_url,
        }
        tmp.write_text(json.dumps({"pid": os.getpid(), "ports": ports, **settings}))
        tmp.replace(out)
        log.info("lab daemon ready: %s", ports)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="greenlight_lab.daemon")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--gcs-upstream", required=True)
    parser.add_argument("--project", default="lab-project")
    parser.add_argument("--data-plane", choices=DATA_PLANES, default=DEFAULT_DATA_PLANE)
    parser.add_argument("--endpoint-delay-s", type=float, default=DEFAULT_ENDPOINT_DELAY_S)
    parser.add_argument("--scrape-interval-s", type=float, default=DEFAULT_SCRAPE_INTERVAL_S)
    parser.add_argument("--ingestion-delay-s", type=float, default=DEFAULT_INGESTION_DELAY_S)
    parser.add_argument("--gateway-program-s", type=float, default=DEFAULT_GATEWAY_PROGRAM_S)
    parser.add_argument(
        "--slack-request-url",
        help="the Slack app's interactivity Request URL: where the stand-in POSTs clicks "
        f"(signing secret: ${SIGNING_SECRET_ENV})",
    )
    args = parser.parse_args()
    if not args.endpoint_delay_s >= 0:
        parser.error("--endpoint-delay-s must be >= 0")
    if not 0 < args.scrape_interval_s < float("inf"):
        parser.error("--scrape-interval-s must be > 0")
    if not 0 <= args.ingestion_delay_s < float("inf"):
        parser.error("--ingestion-delay-s must be >= 0")
    if not 0 <= args.gateway_program_s < float("inf"):
        parser.error("--gateway-program-s must be >= 0")
    if args.slack_request_url is not None and urlsplit(args.slack_request_url).scheme not in (
        "http",
        "https",
    ):
        parser.error("--slack-request-url must be an http(s) URL")
    signing_secret = os.environ.get(SIGNING_SECRET_ENV) or None
    # the registry's one user (a Basic login with another password is refused; anonymous pulls pass)
    user, password = os.environ.get(REGISTRY_USERNAME_ENV), os.environ.get(REGISTRY_PASSWORD_ENV)
    registry_users = {user: password} if user and password else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(
        _main(
            args.dir,
            args.gcs_upstream,
            args.project,
            args.data_plane,
            args.endpoint_delay_s,
            args.scrape_interval_s,
            args.ingestion_delay_s,
            args.slack_request_url,
            signing_secret,
            registry_users,
            os.environ.get(PACKAGES_TOKEN_ENV) or None,
            args.gateway_program_s,
        )
    )


if __name__ == "__main__":
    main()
