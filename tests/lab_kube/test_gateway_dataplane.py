"""The lab's Gateway data plane over real pods (greenlight_lab.gateway): requests split by the
*programmed* HTTPRoute weights, a weight on a colour without ready pods answers 502 as GKE's
load balancer does, and a blue-green switch that scales the old colour down as soon as it has
patched the route loses requests, while one that waits for the route's status and for the old
colour to go quiet loses none."""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from greenlight.clients.kube import Kube
from greenlight_lab.catalogue import Behaviour, Catalogue
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.gateway import (
    CONTROLLER_NAME,
    BackendProgram,
    GatewayController,
    RouteProgram,
    RuleProgram,
    ensure_gateway_route,
    gateway_body,
    httproute_body,
    pick_backend,
    route_programmed,
    route_request,
)
from greenlight_lab.kube.cluster import KubeCluster
from greenlight_lab.load import BackgroundLoad
from greenlight_lab.pods import PodRuntime
from greenlight_lab.proxy import ServiceProxies

from .conftest import KubeLab, LoopThread, deployment_body

GROUP, VERSION = "gateway.networking.k8s.io", "v1"
HOST = "shop.example.com"


class TimedRecorder:
    """Every request a pod served: (monotonic time, labels, code); thread-safe."""

    def __init__(self) -> None:
        self.records: list[tuple[float, dict[str, str], int]] = []
        self._lock = threading.Lock()

    def record(self, labels: Any, code: int, latency_s: float, at: float | None = None) -> None:
        with self._lock:
            self.records.append((time.monotonic(), dict(labels), code))

    def last_served(self, namespace: str, colour: str) -> float:
        """When a pod of ``colour`` in ``namespace`` last answered a request (0: never)."""
        with self._lock:
            return max(
                (
                    t
                    for t, labels, _ in self.records
                    if labels.get("namespace") == namespace and labels.get("color") == colour
                ),
                default=0.0,
            )


@pytest.fixture(scope="module")
def gw() -> Iterator[tuple[KubeLab, TimedRecorder]]:
    """A "lab-primary" cluster over real pods, kube-proxy Services and the Gateway controller at
    its lab defaults (2 s programming delay, jitter a third), images v1 and v2."""
    loop = LoopThread("kube-loop")
    catalogue = Catalogue()
    catalogue.push("ghcr.io/acme/web:v1", Behaviour(version="1"))
    catalogue.push("ghcr.io/acme/web:v2", Behaviour(version="2"))
    recorder = TimedRecorder()
    faults = FaultRegistry()

    async def make() -> tuple[KubeCluster, PodRuntime, ServiceProxies]:
        pods = PodRuntime(catalogue, recorder)
        proxies = ServiceProxies(endpoint_delay_s=0.5)
        return KubeCluster("lab-primary", faults, pods, proxies), pods, proxies

    cluster, pods, proxies = loop.run(make())
    port = loop.run(cluster.start())
    lab = KubeLab(loop, cluster, faults, pods, proxies, f"http://127.0.0.1:{port}", kubeconfig=None)  # type: ignore[arg-type]
    try:
        yield lab, recorder
    finally:
        loop.run(cluster.stop(), timeout=30)
        loop.run(pods.close(), timeout=30)
        loop.run(proxies.close())
        loop.close()


def _colours(lab: KubeLab, ns: str, colours: dict[str, str], replicas: int = 2) -> None:
    """Namespace ``ns`` with one Deployment ``web-<colour>`` per colour (image by colour), available."""
    with lab.api_client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        core.create_namespace({"metadata": {"name": ns}})
        for colour, image in colours.items():
            labels = {"app": "web", "color": colour}
            apps.create_namespaced_deployment(
                ns, deployment_body(f"web-{colour}", image=image, replicas=replicas, labels=labels)
            )
        for colour, image in colours.items():
            if "missing" in image:
                continue
            lab.wait_for(
                lambda c=colour: (
                    (apps.read_namespaced_deployment(f"web-{c}", ns).status.available_replicas or 0)
                    == replicas
                ),
                what=f"{colour} available",
                timeout=30,
            )


def _route_app(lab: KubeLab, ns: str, weights: dict[str, int], colours: tuple[str, ...]) -> dict[str, Any]:
    """Services web-<colour>, Gateway "gw" and HTTPRoute "web" with ``weights`` (colour ->
    weight), waited until programmed; returns the route."""
    with lab.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        for colour in colours:
            core.create_namespaced_service(
                ns,
                {
                    "metadata": {"name": f"web-{colour}"},
                    "spec": {
                        "selector": {"app": "web", "color": colour},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                },
            )
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gateways", gateway_body("gw", ns))
        body = httproute_body("web", ns, "gw", HOST, {f"web-{c}": w for c, w in weights.items()}, 80)
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", body)
        return _wait_programmed(lab, custom, ns, "web")


def _wait_programmed(lab: KubeLab, custom: client.CustomObjectsApi, ns: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = {}

    def check() -> bool:
        got.update(custom.get_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", name))
        return route_programmed(got)

    lab.wait_for(check, what=f"route {ns}/{name} programmed", timeout=15)
    return got


def _gateway_url(lab: KubeLab, ns: str) -> str:
    gateways: GatewayController = lab.cluster.gateways
    url = gateways.urls().get(f"lab-primary/{ns}/gw")
    assert url, gateways.urls()
    return url


class Client:
    """One keep-alive connection to a Gateway, sending ``Host: HOST``."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def get(self, path: str = "/hello", host: str = HOST) -> tuple[int, dict[str, str], bytes]:
        self.conn.request("GET", path, headers={"Host": host})
        resp = self.conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

    def close(self) -> None:
        self.conn.close()


def _colour_of(headers: dict[str, str]) -> str:
    pod = headers.get("x-pod", "")
    return pod.split("-")[1] if pod.startswith("web-") else f"status-without-pod:{pod}"


def test_httproute_weights_90_10_split_requests_about_90_10(gw: tuple[KubeLab, TimedRecorder]) -> None:
    """400 requests on one keep-alive connection through a 90/10 route land about 90/10 (within
    5 sigma of the binomial): the gateway balances per request, not per connection."""
    lab, _ = gw
    ns = "split"
    _colours(lab, ns, {"blue": "ghcr.io/acme/web:v1", "green": "ghcr.io/acme/web:v2"})
    _route_app(lab, ns, {"blue": 90, "green": 10}, ("blue", "green"))
    c = Client(_gateway_url(lab, ns))
    n = 400
    seen: Counter[str] = Counter()
    backends: set[str] = set()
    for _ in range(n):
        status, headers, _body = c.get()
        assert status == 200
        seen[_colour_of(headers)] += 1
        backends.add(headers["x-backend"])
    c.close()
    expected, sigma = n * 0.1, (n * 0.1 * 0.9) ** 0.5
    assert set(seen) == {"blue", "green"}
    assert abs(seen["green"] - expected) <= 5 * sigma, seen
    assert len(backends) == 4  # both pods of both colours, over one client connection


def test_httproute_patch_takes_effect_only_once_programmed(gw: tuple[KubeLab, TimedRecorder]) -> None:
    """Right after a patch to 0/100 the status still carries the old observedGeneration and the
    requests still go by the old weights; once the status says the new generation, all go to green."""
    lab, _ = gw
    ns = "switch"
    _colours(lab, ns, {"blue": "ghcr.io/acme/web:v1", "green": "ghcr.io/acme/web:v2"})
    route = _route_app(lab, ns, {"blue": 100, "green": 0}, ("blue", "green"))
    c = Client(_gateway_url(lab, ns))
    with lab.api_client() as api:
        custom = client.CustomObjectsApi(api)
        patch = {"spec": {"rules": [{"backendRefs": [
            {"name": "web-blue", "port": 80, "weight": 0},
            {"name": "web-green", "port": 80, "weight": 100},
        ]}]}}  # fmt: skip
        patched = custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", "web", patch)
        assert patched["metadata"]["generation"] == route["metadata"]["generation"] + 1
        right_after = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", "web")
        conditions = right_after["status"]["parents"][0]["conditions"]
        assert {cond["observedGeneration"] for cond in conditions} == {route["metadata"]["generation"]}
        assert not route_programmed(right_after)
        early = Counter(_colour_of(c.get()[1]) for _ in range(20))
        assert early == Counter({"blue": 20})
        done = _wait_programmed(lab, custom, ns, "web")
        assert done["status"]["parents"][0]["controllerName"] == CONTROLLER_NAME
    late = Counter(_colour_of(c.get()[1]) for _ in range(20))
    c.close()
    assert late == Counter({"green": 20})


def test_httproute_weight_on_colour_without_ready_pods_answers_502(gw: tuple[KubeLab, TimedRecorder]) -> None:
    """A 50/50 route whose second colour has no ready pod: its share is answered 502
    failed_to_pick_backend (no retry on the healthy colour), the rest 200 from blue."""
    lab, _ = gw
    ns = "empty"
    _colours(lab, ns, {"blue": "ghcr.io/acme/web:v1", "green": "ghcr.io/acme/web:missing"})
    _route_app(lab, ns, {"blue": 50, "green": 50}, ("blue", "green"))
    c = Client(_gateway_url(lab, ns))
    answers = [c.get() for _ in range(60)]
    c.close()
    codes = Counter(status for status, _, _ in answers)
    assert set(codes) == {200, 502}, codes
    assert all(_colour_of(h) == "blue" for s, h, _ in answers if s == 200)
    bad = [json.loads(b) for s, _, b in answers if s == 502]
    assert all("failed_to_pick_backend" in b["error"] and "web-green" in b["error"] for b in bad)


def test_httproute_backend_not_found_answers_500_and_no_route_404(gw: tuple[KubeLab, TimedRecorder]) -> None:
    """A backendRef naming no Service gets its share answered 500 (Gateway API: invalid
    backends), a Host no route names 404, and a rule whose weights are all 0 answers 500."""
    lab, _ = gw
    ns = "invalid"
    _colours(lab, ns, {"blue": "ghcr.io/acme/web:v1"})
    with lab.api_client() as api:
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        core.create_namespaced_service(
            ns,
            {
                "metadata": {"name": "web-blue"},
                "spec": {"selector": {"app": "web", "color": "blue"}, "ports": [{"port": 80}]},
            },
        )
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gateways", gateway_body("gw", ns))
        body = httproute_body("web", ns, "gw", HOST, {"web-blue": 1, "web-nowhere": 1}, 80)
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", body)
        zero = httproute_body("zero", ns, "gw", "zero.example.com", {"web-blue": 0}, 80)
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", zero)
        _wait_programmed(lab, custom, ns, "zero")

        def web_status_seen() -> bool:
            r = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", "web")
            return bool((r.get("status") or {}).get("parents"))

        lab.wait_for(web_status_seen, what="status of route web", timeout=15)
    c = Client(_gateway_url(lab, ns))
    codes = Counter(c.get()[0] for _ in range(60))
    assert set(codes) == {200, 500}, codes
    assert c.get(host="elsewhere.example.com")[0] == 404
    assert c.get(host="zero.example.com")[0] == 500
    c.close()


def _switch_under_load(
    lab: KubeLab, recorder: TimedRecorder, ns: str, *, careful: bool
) -> tuple[Any, dict[str, float]]:
    """Blue live at 100 through Gateway gw; under 60 rps switch the route to green and scale
    blue to 0: at once (naive) or after the route's status says the new generation is programmed
    and blue has had no request for a second (careful). Returns the load report and timings."""
    _colours(lab, ns, {"blue": "ghcr.io/acme/web:v1", "green": "ghcr.io/acme/web:v2"})
    timings: dict[str, float] = {}
    with lab.api_client() as api:
        kube = Kube(api)
        ensure_gateway_route(
            kube, ns, "web", "gw", HOST, {"blue": "web-blue", "green": "web-green"}, 80, "blue",
            {"app": "web"}, "color", timeout_s=20,
        )  # fmt: skip
        custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
        url = _gateway_url(lab, ns)
        with BackgroundLoad(url + "/hello", rps=60, seconds=60, host=HOST) as load:
            time.sleep(1.0)
            began = time.monotonic()
            patch = {"spec": {"rules": [{"backendRefs": [
                {"name": "web-blue", "port": 80, "weight": 0},
                {"name": "web-green", "port": 80, "weight": 100},
            ]}]}}  # fmt: skip
            patched = custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", "web", patch)
            if careful:
                generation = patched["metadata"]["generation"]

                def programmed() -> bool:
                    r = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", "web")
                    return route_programmed(r) and all(
                        cond["observedGeneration"] >= generation
                        for p in r["status"]["parents"]
                        for cond in p["conditions"]
                    )

                lab.wait_for(programmed, what="route programmed", timeout=15)
                timings["programmed_after_s"] = time.monotonic() - began
                lab.wait_for(
                    lambda: time.monotonic() - recorder.last_served(ns, "blue") > 1.0,
                    what="blue quiet",
                    timeout=15,
                )
                timings["blue_quiet_after_s"] = time.monotonic() - began
            apps.patch_namespaced_deployment_scale("web-blue", ns, {"spec": {"replicas": 0}})
            time.sleep(5.0)
    assert load.report is not None
    return load.report, timings


def test_httproute_naive_switch_loses_requests_careful_switch_none(gw: tuple[KubeLab, TimedRecorder]) -> None:
    """Under steady load through the gateway: patching the route to 0/100 and scaling blue to 0
    at once loses requests (the gateway still sends blue its share until the change is
    programmed, and blue's pods leave its NEG within 0.3 s); waiting for the route's status
    (observedGeneration, Accepted, ResolvedRefs) and for blue to go quiet first loses none."""
    lab, recorder = gw
    naive, _ = _switch_under_load(lab, recorder, "naive", careful=False)
    careful, timings = _switch_under_load(lab, recorder, "careful", careful=True)
    print(f"naive: {naive.render()}\ncareful: {careful.render()}\ntimings: {timings}")
    assert naive.failed > 0, naive.render()
    assert naive.failed_by.get("5xx", 0) > 0
    assert careful.failed == 0, careful.render()
    assert careful.succeeded > 300
    # the careful switch really moved: the last part of the run was served by green only
    assert any(b.startswith("web-green") for b in careful.backends)


def _program(
    name: str,
    hostnames: tuple[str, ...],
    matches: tuple[tuple[str, str], ...],
    created: str = "2026-01-01T00:00:00Z",
) -> RouteProgram:
    rule = RuleProgram(matches, (BackendProgram(name, f"lab-primary/ns/{name}", 1),))
    return RouteProgram("ns", name, 1, created, hostnames, (rule,), ())


ROUTES = (
    _program("any-host", (), (("PathPrefix", "/"),)),
    _program("wild", ("*.example.com",), (("PathPrefix", "/"),)),
    _program("exact-host", ("shop.example.com",), (("PathPrefix", "/"),)),
    _program("api", ("shop.example.com",), (("PathPrefix", "/api"),)),
    _program("api-exact", ("shop.example.com",), (("Exact", "/api/health"),)),
)
ROUTING = [
    ("exact hostname wins over wildcard and none", "shop.example.com", "/", "exact-host"),
    ("the host header's port is ignored", "shop.example.com:8080", "/", "exact-host"),
    ("wildcard matches a subdomain", "cart.example.com", "/", "wild"),
    ("wildcard does not match the bare domain", "example.com", "/", "any-host"),
    ("a route without hostnames takes any host", "other.test", "/x", "any-host"),
    ("longest PathPrefix wins", "shop.example.com", "/api/items", "api"),
    ("PathPrefix matches whole segments only", "shop.example.com", "/apix", "exact-host"),
    ("Exact wins over a prefix", "shop.example.com", "/api/health", "api-exact"),
]


@pytest.mark.parametrize(("case", "host", "path", "want"), ROUTING, ids=[c[0] for c in ROUTING])
def test_gateway_routes_by_hostname_then_path_precedence(case: str, host: str, path: str, want: str) -> None:
    """route_request picks the rule the Gateway API's precedence names."""
    rule = route_request(ROUTES, host, path)
    assert rule is not None and rule.backends[0].name == want, case


def test_gateway_no_matching_route_and_zero_weights() -> None:
    """No route for a host: None (404); every weight 0: no backend (500)."""
    only = (_program("exact-host", ("shop.example.com",), (("PathPrefix", "/"),)),)
    assert route_request(only, "other.test", "/") is None
    zero = RuleProgram((("PathPrefix", "/"),), (BackendProgram("a", "k/a", 0), BackendProgram("b", "k/b", 0)))
    assert pick_backend(zero, random.Random(1)) is None
    one = RuleProgram((("PathPrefix", "/"),), (BackendProgram("a", "k/a", 0), BackendProgram("b", "k/b", 3)))
    assert {pick_backend(one, random.Random(i)).name for i in range(20)} == {"b"}  # type: ignore[union-attr]


def test_gateway_program_setting_precedence_and_refusal(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--gateway-program-s wins over GREENLIGHT_LAB_GATEWAY_PROGRAM_S, which wins over lab.yaml,
    then the 2 s default; a value that is not seconds >= 0 is refused naming where it came from."""
    from greenlight_lab.supervisor import GATEWAY_PROGRAM_ENV, LabError, gateway_program_setting

    monkeypatch.delenv(GATEWAY_PROGRAM_ENV, raising=False)
    assert gateway_program_setting(tmp_path) == 2.0
    (tmp_path / "lab.yaml").write_text("gateway_program_s: 4\n")
    assert gateway_program_setting(tmp_path) == 4.0
    monkeypatch.setenv(GATEWAY_PROGRAM_ENV, "0.5")
    assert gateway_program_setting(tmp_path) == 0.5
    assert gateway_program_setting(tmp_path, 3.0) == 3.0
    monkeypatch.setenv(GATEWAY_PROGRAM_ENV, "-1")
    with pytest.raises(LabError, match=GATEWAY_PROGRAM_ENV):
        gateway_program_setting(tmp_path)
