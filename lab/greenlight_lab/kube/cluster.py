"""One lab Kubernetes cluster: object store + REST API + controllers, in the daemon's loop.

    cluster = KubeCluster("lab-primary", faults, pods, proxies)
    port = await cluster.start()          # http://127.0.0.1:<port>, namespaces default + kube-system,
                                          # the default RBAC policy (rbac.BOOTSTRAP_*)
    ...
    await cluster.stop()                  # pods stopped, proxies removed, server closed

Faults are looked up under the target ``kube-<name without "lab-">`` (``kube-primary``).
Its Gateway API controller and Gateway data plane (greenlight_lab.gateway) are ``gateways``;
their faults are under ``gateway`` and ``gateway-<name without "lab-">``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from greenlight_lab import serving
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.gateway import DEFAULT_PROGRAM_S, GatewayController
from greenlight_lab.kube import rbac
from greenlight_lab.kube.api import KubeApi
from greenlight_lab.kube.controller import Controller
from greenlight_lab.kube.store import Store

if TYPE_CHECKING:
    from greenlight_lab.kube.controller import PodRuntimeLike as PodRuntime
    from greenlight_lab.kube.controller import ServiceProxiesLike as ServiceProxies


class KubeCluster:
    """A Kubernetes API stand-in with its controller; ``store`` is usable directly in-process."""

    def __init__(
        self,
        name: str,
        faults: FaultRegistry,
        pods: PodRuntime,
        proxies: ServiceProxies,
        *,
        gateway_program_s: float = DEFAULT_PROGRAM_S,
    ) -> None:
        self.name = name
        self.fault_target = f"kube-{name.removeprefix('lab-')}"
        self.store = Store(name)
        self.controller = Controller(name, self.store, pods, proxies)
        self.gateways = GatewayController(name, self.store, faults, program_s=gateway_program_s)
        self.api = KubeApi(
            self.store,
            faults,
            self.fault_target,
            name,
            pod_status=pods.status,
            proxy_url=proxies.url,
            ready_endpoints=self.controller.ready_endpoints,
            pod_logs=getattr(pods, "logs", None),
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Create the system namespaces and the default RBAC policy, start the controller and
        serve; returns the bound port."""
        for ns in ("default", "kube-system"):
            if self.store.find("namespaces", None, ns) is None:
                self.store.create("namespaces", {"metadata": {"name": ns}})
        for plural, objs in (
            ("clusterroles", rbac.BOOTSTRAP_CLUSTER_ROLES),
            ("clusterrolebindings", rbac.BOOTSTRAP_CLUSTER_ROLE_BINDINGS),
        ):
            for obj in objs:
                if self.store.find(plural, None, obj["metadata"]["name"]) is None:
                    self.store.create(plural, obj)
        self.controller.start()
        self.gateways.start()
        self._runner, self.port = await serving.serve(self.api.app, host, port, shutdown_timeout=2.0)
        return self.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` once started."""
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """End open watches, stop the controller (its pods and proxies) and close the server."""
        self.store.close_watchers()
        await self.gateways.stop()
        await self.controller.stop()
        await serving.close(self._runner)
        self._runner = None
