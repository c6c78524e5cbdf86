"""The controller, through the official client, with the fake data plane of conftest.py."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from .conftest import KubeLab, deployment_body, service_body


def _deployment(apps: client.AppsV1Api, ns: str, name: str) -> client.V1Deployment:
    return apps.read_namespaced_deployment(name, ns)


def _condition(d: client.V1Deployment, ctype: str) -> Any:
    return next((c for c in d.status.conditions or [] if c.type == ctype), None)


def _available(apps: client.AppsV1Api, ns: str, name: str, replicas: int) -> Any:
    d = _deployment(apps, ns, name)
    ok = (d.status.available_replicas or 0) == replicas and (d.status.updated_replicas or 0) == replicas
    ok = ok and (d.status.replicas or 0) == replicas and d.status.observed_generation == d.metadata.generation
    return d if ok else None


def _pods(core: client.CoreV1Api, ns: str, selector: str = "") -> list[client.V1Pod]:
    return core.list_namespaced_pod(ns, label_selector=selector).items


def test_rollout_reaches_available(
    kube: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """A Deployment gets its pods, running and ready, and reports Available / NewReplicaSetAvailable."""
    body = deployment_body("web", replicas=3, labels={"app": "web", "color": "blue"})
    apps.create_namespaced_deployment(ns, body)
    d = kube.wait_for(lambda: _available(apps, ns, "web", 3), what="3 available")
    assert _condition(d, "Available").status == "True"
    assert _condition(d, "Available").reason == "MinimumReplicasAvailable"
    assert _condition(d, "Progressing").reason == "NewReplicaSetAvailable"
    pods = _pods(core, ns, "app=web")
    assert len(pods) == 3
    pod = pods[0]
    phash = pod.metadata.labels["pod-template-hash"]
    assert pod.metadata.name.startswith(f"web-{phash}-") and len(phash) == 10
    assert pod.metadata.owner_references[0].kind == "Deployment"
    assert pod.metadata.owner_references[0].uid == d.metadata.uid
    assert pod.status.phase == "Running" and pod.status.pod_ip == "127.0.0.1"
    assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    cs = pod.status.container_statuses[0]
    assert cs.ready and cs.state.running.started_at and cs.image == "ghcr.io/acme/app:v1"
    assert pod.metadata.annotations["lab.greenlight.dev/port"].isdigit()
    started = kube.runtime.started[f"lab-primary/{ns}/{pod.metadata.name}"]
    assert started["readiness_path"] == "/healthz" and started["port"] == 8080
    assert started["labels"] == {
        "namespace": ns,
        "pod": pod.metadata.name,
        "container": "app",
        "top_level_controller_name": "web",
        "color": "blue",
        "job": "web",
        "cluster": "lab-primary",
    }


def test_rolling_update_replaces_every_pod(
    kube: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """A template change rolls every pod to the new hash within maxSurge (terminating pods do not count), and stops the old pods."""
    apps.create_namespaced_deployment(ns, deployment_body("roll", replicas=4))
    kube.wait_for(lambda: _available(apps, ns, "roll", 4), what="4 available")
    old = {p.metadata.name for p in _pods(core, ns, "app=roll")}
    peak = 0

    def rolled() -> bool:
        nonlocal peak
        pods = [p for p in _pods(core, ns, "app=roll") if not p.metadata.deletion_timestamp]
        peak = max(peak, len(pods))
        return bool(_available(apps, ns, "roll", 4)) and not old & {p.metadata.name for p in pods}

    apps.patch_namespaced_deployment(
        "roll",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ghcr.io/acme/app:v2"}]}}}},
    )
    kube.wait_for(rolled, what="rollout to v2")
    assert peak <= 5  # 4 replicas + 25% surge
    pods = _pods(core, ns, "app=roll")
    assert {p.spec.containers[0].image for p in pods} == {"ghcr.io/acme/app:v2"}
    stopped = {key for key, _ in kube.runtime.stopped}
    assert {f"lab-primary/{ns}/{name}" for name in old} <= stopped


def test_image_pull_backoff_never_available(
    kube: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """An unknown image leaves pods Pending in ImagePullBackOff and the Deployment unavailable."""
    apps.create_namespaced_deployment(
        ns, deployment_body("pull", image="ghcr.io/acme/unknown:v1", replicas=2)
    )

    def backoff() -> Any:
        pods = _pods(core, ns, "app=pull")
        waits = [p.status.container_statuses[0].state.waiting for p in pods if p.status.container_statuses]
        return len(waits) == 2 and all(w and w.reason == "ImagePullBackOff" for w in waits)

    kube.wait_for(backoff, what="ImagePullBackOff")
    d = _deployment(apps, ns, "pull")
    assert _condition(d, "Available").status == "False"
    assert _condition(d, "Available").reason == "MinimumReplicasUnavailable"
    assert not d.status.available_replicas and d.status.unavailable_replicas == 2
    assert _pods(core, ns, "app=pull")[0].status.phase == "Pending"


def test_crash_loop_surfaces_in_pod_status(
    kube: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """A crashing image shows CrashLoopBackOff with a growing restartCount and no availability."""
    apps.create_namespaced_deployment(ns, deployment_body("crash", image="ghcr.io/acme/crash:v1", replicas=1))

    def crashing() -> Any:
        pods = _pods(core, ns, "app=crash")
        if not pods or not pods[0].status.container_statuses:
            return None
        cs = pods[0].status.container_statuses[0]
        return cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff" and cs.restart_count >= 2

    kube.wait_for(crashing, what="CrashLoopBackOff")
    assert _condition(_deployment(apps, ns, "crash"), "Available").status == "False"


def test_progress_deadline_exceeded(kube: KubeLab, apps: client.AppsV1Api, ns: str) -> None:
    """Without progress for progressDeadlineSeconds, Progressing turns False / ProgressDeadlineExceeded."""
    apps.create_namespaced_deployment(
        ns, deployment_body("stuck", image="ghcr.io/acme/slow:v1", replicas=1, progressDeadlineSeconds=1)
    )

    def exceeded() -> Any:
        cond = _condition(_deployment(apps, ns, "stuck"), "Progressing")
        return cond is not None and cond.status == "False" and cond.reason == "ProgressDeadlineExceeded"

    kube.wait_for(exceeded, timeout=8, what="ProgressDeadlineExceeded")


def test_endpoints_follow_a_selector_patch_at_once(
    kube: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """When the PATCH of a Service selector returns, its proxy already has the new colour's backends."""
    for color in ("blue", "green"):
        apps.create_namespaced_deployment(
            ns, deployment_body(f"web-{color}", replicas=2, labels={"app": "web", "color": color})
        )
    core.create_namespaced_service(ns, service_body("web", {"app": "web", "color": "blue"}))
    key = f"lab-primary/{ns}/web"
    for color in ("blue", "green"):
        kube.wait_for(lambda c=color: _available(apps, ns, f"web-{c}", 2), what=f"{color} available")
    kube.wait_for(lambda: len(kube.proxies.endpoints.get(key, [])) == 2, what="blue endpoints")

    def ports(color: str) -> set[int]:
        return {
            int(p.metadata.annotations["lab.greenlight.dev/port"]) for p in _pods(core, ns, f"color={color}")
        }

    assert {p for _, p in kube.proxies.endpoints[key]} == ports("blue")
    core.patch_namespaced_service("web", ns, {"spec": {"selector": {"app": "web", "color": "green"}}})
    assert {p for _, p in kube.proxies.endpoints[key]} == ports("green")  # no waiting
    svc = core.read_namespaced_service("web", ns)
    assert svc.metadata.annotations["lab.greenlight.dev/url"] == kube.proxies.echo_url

    def endpoints_object_green() -> bool:
        ep = core.read_namespaced_endpoints("web", ns)
        names = {a.target_ref.name for s in ep.subsets or [] for a in s.addresses or []}
        return names == {p.metadata.name for p in _pods(core, ns, "color=green")}

    kube.wait_for(endpoints_object_green, what="Endpoints object lists green pods")
    ep = core.read_namespaced_endpoints("web", ns)
    assert ep.subsets[0].ports[0].name == "http"


def test_scale_down_leaves_endpoints_before_stopping(
    kube: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """Scaling down removes pods from the Service's endpoints first, then stops them in the runtime."""
    apps.create_namespaced_deployment(ns, deployment_body("sd", replicas=3))
    core.create_namespaced_service(ns, service_body("sd", {"app": "sd"}))
    key = f"lab-primary/{ns}/sd"
    kube.wait_for(lambda: _available(apps, ns, "sd", 3), what="3 available")
    kube.wait_for(lambda: len(kube.proxies.endpoints.get(key, [])) == 3, what="3 endpoints")
    before = {
        p.metadata.name: int(p.metadata.annotations["lab.greenlight.dev/port"])
        for p in _pods(core, ns, "app=sd")
    }
    mark = len(kube.journal)
    apps.patch_namespaced_deployment_scale("sd", ns, {"spec": {"replicas": 1}})
    kube.wait_for(lambda: _available(apps, ns, "sd", 1), what="1 available")
    kube.wait_for(lambda: sum(1 for e in kube.journal[mark:] if e[0] == "stop") == 2, what="2 pods stopped")
    entries = kube.journal[mark:]
    for entry in entries:
        if entry[0] == "stop":
            name = entry[1].rsplit("/", 1)[1]
            last = [e for e in entries[: entries.index(entry)] if e[0] == "endpoints" and e[1] == key][-1]
            assert ("127.0.0.1", before[name]) not in last[2], f"{name} stopped while still an endpoint"
    assert len(kube.proxies.endpoints[key]) == 1


def test_paused_deployment_is_left_alone(
    kube: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """A paused Deployment gets no pods; resuming it rolls out."""
    apps.create_namespaced_deployment(ns, deployment_body("pz", replicas=2, paused=True))
    kube.wait_for(lambda: _deployment(apps, ns, "pz").status.conditions, what="status")
    assert _condition(_deployment(apps, ns, "pz"), "Progressing").reason == "DeploymentPaused"
    assert _pods(core, ns, "app=pz") == []
    apps.patch_namespaced_deployment("pz", ns, {"spec": {"paused": False}})
    kube.wait_for(lambda: _available(apps, ns, "pz", 2), what="2 available after resume")


def test_deleting_a_deployment_deletes_and_stops_its_pods(
    kube: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """A deleted Deployment's pods are deleted and stopped in the runtime."""
    apps.create_namespaced_deployment(ns, deployment_body("gone", replicas=2))
    kube.wait_for(lambda: _available(apps, ns, "gone", 2), what="2 available")
    keys = {f"lab-primary/{ns}/{p.metadata.name}" for p in _pods(core, ns, "app=gone")}
    apps.delete_namespaced_deployment("gone", ns)
    kube.wait_for(lambda: not _pods(core, ns, "app=gone"), what="pods deleted")
    kube.wait_for(lambda: keys <= {k for k, _ in kube.runtime.stopped}, what="pods stopped")


def test_service_delete_removes_its_proxy(kube: KubeLab, core: client.CoreV1Api, ns: str) -> None:
    """Deleting a Service removes its proxy and its Endpoints object."""
    core.create_namespaced_service(ns, service_body("tmp", {"app": "tmp"}))
    key = f"lab-primary/{ns}/tmp"
    kube.wait_for(lambda: key in kube.proxies.ensured, what="proxy ensured")
    kube.wait_for(
        lambda: core.list_namespaced_endpoints(ns, field_selector="metadata.name=tmp").items,
        what="endpoints object",
    )
    core.delete_namespaced_service("tmp", ns)
    kube.wait_for(lambda: key in kube.proxies.removed, what="proxy removed")
    kube.wait_for(
        lambda: not core.list_namespaced_endpoints(ns, field_selector="metadata.name=tmp").items,
        what="endpoints object deleted",
    )


def _job(name: str, image: str, backoff_limit: int = 0) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "task", "image": image}]}
            },
        },
    }


def _job_condition(batch: client.BatchV1Api, ns: str, name: str) -> Any:
    job = batch.read_namespaced_job(name, ns)
    done = [c for c in job.status.conditions or [] if c.type in ("Complete", "Failed") and c.status == "True"]
    return (done[0], job) if done else None


def test_jobs_complete_or_fail_by_image(
    kube: KubeLab, api: client.ApiClient, core: client.CoreV1Api, ns: str
) -> None:
    """A Job whose pod runs ready completes; a crashing one fails with BackoffLimitExceeded."""
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(ns, _job("ok", "ghcr.io/acme/tool:v1"))
    batch.create_namespaced_job(ns, _job("bad", "ghcr.io/acme/crash:v1"))
    cond, job = kube.wait_for(lambda: _job_condition(batch, ns, "ok"), what="ok finished")
    assert cond.type == "Complete" and job.status.succeeded == 1 and job.status.completion_time
    pod = _pods(core, ns, "job-name=ok")[0]
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.reason == "Completed"
    cond, job = kube.wait_for(lambda: _job_condition(batch, ns, "bad"), what="bad finished")
    assert (cond.type, cond.reason, job.status.failed) == ("Failed", "BackoffLimitExceeded", 1)
    assert "image=ghcr.io/acme/crash:v1" in core.read_namespaced_pod_log(
        _pods(core, ns, "job-name=bad")[0].metadata.name, ns
    )
