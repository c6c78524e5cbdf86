"""The adoption plan (greenlight.core.adopt): which steps, in which order, what each object becomes,
and what blocks adoption, over tables of cluster snapshots."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from greenlight.core.adopt import (
    ADOPTED_FROM,
    ADOPTED_INTO,
    ADOPTED_REPLICAS,
    ADOPTED_SELECTOR,
    AdoptApp,
    colour_deployment,
    image_to_resolve,
    plan_adoption,
    plan_lines,
    plan_undo,
    restore_patch,
    selector_matches,
)
from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS, RELEASE_ID

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
REPO = "ghcr.io/acme/web"
APP = AdoptApp(
    name="web",
    namespace="shop",
    service="web",
    preview="web-preview",
    container="web",
    image_repository=REPO,
    propagation_s=3,
    allowed=("ghcr.io/acme",),
)
Obj = dict[str, Any]


def deployment(
    name: str = "web", labels: dict[str, str] | None = None, image: str = f"{REPO}:v1", replicas: int = 2
) -> Obj:
    labels = labels if labels is not None else {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "generation": 3,
            "labels": dict(labels),
            "annotations": {"deployment.kubernetes.io/revision": "3", "team": "shop"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                        }
                    ],
                    "terminationGracePeriodSeconds": 30,
                },
            },
        },
        "status": {
            "observedGeneration": 3,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        },
    }


def service(selector: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "resourceVersion": "41",
            "annotations": annotations or {},
        },
        "spec": {
            "type": "NodePort",
            "selector": selector if selector is not None else {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}],
        },
    }


def pod(name: str, labels: dict[str, str], image_id: str = "", ready: bool = True) -> Obj:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "web", "imageID": image_id}],
        },
    }


def pods_of_web(image_id: str = f"{REPO}@{DIGEST}") -> list[Obj]:
    return [pod(f"web-abc-{i}", {"app": "web", "pod-template-hash": "abc"}, image_id) for i in range(2)]


def world(**changes: Any) -> dict[str, Any]:
    """A plain app: Deployment web (2 replicas of a tag) behind Service web, pods reporting the digest."""
    base: dict[str, Any] = {
        "service": service(),
        "preview": None,
        "deployments": [deployment()],
        "pods": pods_of_web(),
        "hpas": [],
        "tag_digest": None,
    }
    base.update(changes)
    return base


def plan(w: dict[str, Any], app: AdoptApp = APP) -> Any:
    return plan_adoption(
        app, w["service"], w["preview"], w["deployments"], w["pods"], w["hpas"], w["tag_digest"]
    )


def test_plain_app_gets_the_five_steps_in_the_zero_loss_order() -> None:
    """Copy with the colour, wait until it serves beside the old pods, narrow, preview, scale down."""
    p = plan(world())
    assert p.outcome == "adopt", p.reason
    assert [s.action for s in p.steps] == [
        "create-deployment",
        "await-serving",
        "narrow-service",
        "create-preview",
        "scale-down-old",
    ]
    assert [s.target for s in p.steps] == [
        "deployments/web-blue",
        "deployments/web-blue",
        "services/web",
        "services/web-preview",
        "deployments/web",
    ]
    assert not any(s.done for s in p.steps)
    assert (p.colour, p.source, p.replicas, p.image) == ("blue", "web", 2, f"{REPO}@{DIGEST}")
    assert p.warnings == ()
    text = "\n".join(plan_lines(p))
    assert "kubectl scale deployment web --replicas=2" in text


def test_the_copy_carries_every_old_label_plus_the_colour_and_the_pinned_image() -> None:
    """The copy's pods match the Service's old selector (they serve beside the old ones) and the
    narrowed one; its selector differs from the old Deployment's; server fields are gone."""
    p = plan(world())
    body = p.steps[0].body
    assert body["metadata"]["name"] == "web-blue"
    assert body["spec"]["selector"] == {"matchLabels": {"app": "web", "color": "blue"}}
    assert body["spec"]["template"]["metadata"]["labels"] == {"app": "web", "color": "blue"}
    assert body["spec"]["replicas"] == 2
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPO}@{DIGEST}"
    assert "status" not in body
    for f in ("uid", "resourceVersion", "generation"):
        assert f not in body["metadata"]
    assert body["metadata"]["annotations"] == {"team": "shop", ADOPTED_FROM: "web"}
    # the container's probes and shutdown settings carry over unchanged
    assert body["spec"]["template"]["spec"]["containers"][0]["lifecycle"] == {
        "preStop": {"exec": {"command": ["sleep", "5"]}}
    }


def test_narrowing_adds_the_colour_guarded_by_the_resource_version_and_records_the_release() -> None:
    """The Service keeps its old selector keys, gains app and colour, and the record annotations."""
    p = plan(world(service=service({"tier": "web"}), deployments=[deployment(labels={"tier": "web"})],
                   pods=[pod("web-abc-1", {"tier": "web"}, f"{REPO}@{DIGEST}")]))  # fmt: skip
    assert p.outcome == "adopt", p.reason
    patch = p.steps[2].body
    assert patch["spec"]["selector"] == {"tier": "web", "app": "web", "color": "blue"}
    assert patch["metadata"]["resourceVersion"] == "41"
    ann = patch["metadata"]["annotations"]
    assert ann[ACTIVE_COLOUR] == "blue"
    assert ann[RELEASE_ID] == "adopted"
    assert json.loads(ann[DIGESTS]) == {"web": DIGEST}
    assert json.loads(ann[ADOPTED_SELECTOR]) == {"tier": "web"}
    # the copy gets app=web too: Greenlight finds a colour's pods by app=<name>,color=<colour>
    assert p.steps[0].body["spec"]["template"]["metadata"]["labels"] == {
        "tier": "web",
        "app": "web",
        "color": "blue",
    }


def test_preview_is_a_cluster_ip_copy_of_the_ports_selecting_the_other_colour() -> None:
    """No node port is copied (it would clash), the preview selects green."""
    body = plan(world()).steps[3].body
    assert body["spec"]["type"] == "ClusterIP"
    assert body["spec"]["selector"] == {"app": "web", "color": "green"}
    assert body["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080}]
    assert body["metadata"]["annotations"] == {ADOPTED_FROM: "web"}


def _image_cases() -> list[tuple[str, dict[str, Any], str | None, str | None]]:
    return [
        # id, world changes, the copy's image (None: refused), the refusal's words
        ("pinned-in-spec", {"deployments": [deployment(image=f"{REPO}@{OTHER_DIGEST}")], "pods": pods_of_web("")},
         f"{REPO}@{OTHER_DIGEST}", None),
        ("tag-pods-report-digest", {}, f"{REPO}@{DIGEST}", None),
        ("tag-pods-report-docker-pullable", {"pods": pods_of_web(f"docker-pullable://{REPO}@{DIGEST}")},
         f"{REPO}@{DIGEST}", None),
        ("tag-no-digest-in-pods-registry-says", {"pods": pods_of_web(""), "tag_digest": OTHER_DIGEST},
         f"{REPO}@{OTHER_DIGEST}", None),
        ("tag-moved-pods-win", {"tag_digest": OTHER_DIGEST}, f"{REPO}@{DIGEST}", None),
        ("tag-no-digest-anywhere", {"pods": pods_of_web("")}, None, "cannot tell which digest"),
        ("pods-run-two-digests",
         {"pods": [pod("web-abc-1", {"app": "web"}, f"{REPO}@{DIGEST}"), pod("web-abc-2", {"app": "web"}, f"{REPO}@{OTHER_DIGEST}")]},
         None, "2 different images"),
        ("other-repository", {"deployments": [deployment(image="ghcr.io/acme/api:v1")]}, None, "image_repository"),
        ("registry-not-allowed", {"deployments": [deployment(image="docker.io/acme/web:v1")]}, None, None),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "image", "words"), [c[1:] for c in _image_cases()], ids=[c[0] for c in _image_cases()]
)
def test_the_copy_runs_what_runs_now_pinned_by_digest(
    changes: dict[str, Any], image: str | None, words: str | None
) -> None:
    """The spec's digest, else the one the pods report, else the registry's answer for the tag."""
    p = plan(world(**changes))
    if image is None:
        assert p.outcome == "refused"
        assert p.refusal_kind in ("input", "conflict")
        if words:
            assert words in p.reason
    else:
        assert p.outcome == "adopt", p.reason
        assert p.image == image


def test_registry_not_allowed_is_refused_as_input_when_the_repository_also_differs() -> None:
    """A registry outside the allow-list is bad input, named."""
    app = AdoptApp(**{**APP.__dict__, "image_repository": "docker.io/acme/web"})
    p = plan(world(deployments=[deployment(image="docker.io/acme/web:v1")]), app)
    assert p.outcome == "refused" and p.refusal_kind == "input"
    assert "allow-list" in p.reason


def test_a_lookup_is_needed_only_when_nothing_says_which_digest_runs() -> None:
    """image_to_resolve: the tag when neither spec nor pods pin it."""
    assert image_to_resolve(deployment(), pods_of_web(), "web") is None
    assert image_to_resolve(deployment(), pods_of_web(""), "web") == f"{REPO}:v1"
    assert image_to_resolve(deployment(image=f"{REPO}@{DIGEST}"), [], "web") is None


def hpa(target: str) -> Obj:
    return {
        "metadata": {"name": f"{target}-hpa"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": target}},
    }


def with_(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    w = world()
    fn(w)
    return w


def _mid_rollout(w: dict[str, Any]) -> None:
    w["deployments"][0]["status"]["updatedReplicas"] = 1


def _no_container(w: dict[str, Any]) -> None:
    w["deployments"][0]["spec"]["template"]["spec"]["containers"][0]["name"] = "main"


REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    # id, world, refusal kind, words the reason must hold
    ("no-service", world(service=None), "not-found", "no Service shop/web"),
    ("service-without-selector", world(service=service({})), "input", "no selector"),
    ("nothing-behind-the-service", world(deployments=[deployment(labels={"app": "api"})]), "not-found", "nothing to adopt"),
    ("two-deployments-behind-it",
     world(deployments=[deployment(), deployment("web-canary", {"app": "web", "track": "canary"})]),
     "conflict", "more than one Deployment (web, web-canary)"),
    ("bare-pod-behind-it", world(pods=[*pods_of_web(), pod("debug", {"app": "web", "run": "debug"})]) | {
        "deployments": [deployment(labels={"app": "web", "pod-template-hash": "abc"})]},
     "conflict", "pods of no Deployment"),
    ("deployment-already-coloured",
     world(deployments=[deployment(labels={"app": "web", "color": "blue"})]), "conflict", "already has color=blue"),
    ("hpa-targets-it", world(hpas=[hpa("web")]), "conflict", "HorizontalPodAutoscaler web-hpa scales Deployment web"),
    ("colour-name-taken", world(deployments=[deployment(), deployment("web-green", {"app": "other"})]),
     "conflict", "web-green (the green colour's name) exists"),
    ("old-named-like-a-colour", world(deployments=[deployment("web-blue-old")]), "conflict", "named like the blue"),
    ("preview-name-taken",
     world(preview={"metadata": {"name": "web-preview"}, "spec": {"selector": {"app": "admin"}}}),
     "conflict", "web-preview"),
    ("scaled-to-zero", world(deployments=[deployment(replicas=0)], pods=[]), "input", "scaled to 0"),
    ("mid-rollout", with_(_mid_rollout), "conflict", "mid-rollout"),
    ("no-such-container", with_(_no_container), "input", "no container 'web' (it has main)"),
    ("app-label-names-another-app",
     world(service=service({"app": "shop-web"}), deployments=[deployment(labels={"app": "shop-web"})],
           pods=[pod("p", {"app": "shop-web"}, f"{REPO}@{DIGEST}")]),
     "input", "labelled app=shop-web"),
    ("colour-outside-the-profile", world(service=service({"app": "web", "color": "red"})), "input", "not one of"),
    ("coloured-selector-no-deployment", world(service=service({"app": "web", "color": "blue"})), "conflict",
     "no Deployment web-blue"),
]  # fmt: skip


@pytest.mark.parametrize(("w", "kind", "words"), [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_refusals_name_what_blocks_adoption_and_plan_no_step(
    w: dict[str, Any], kind: str, words: str
) -> None:
    """Each blocker is refused with its kind and a reason naming the object, and no step is planned."""
    p = plan(w)
    assert p.outcome == "refused", p.reason
    assert p.steps == ()
    assert p.refusal_kind == kind, p.refusals
    assert words in p.reason


def test_every_blocker_is_named_at_once() -> None:
    """A person fixes all of them in one go: an HPA and a taken colour name are both said."""
    p = plan(world(hpas=[hpa("web")], deployments=[deployment(), deployment("web-blue", {"app": "x"})]))
    assert len(p.refusals) == 2 and p.refusal_kind == "conflict"


def test_missing_safety_settings_are_warnings_not_refusals() -> None:
    """No readiness probe or preStop: adoption proceeds and says what to add."""
    dep = deployment()
    container = dep["spec"]["template"]["spec"]["containers"][0]
    del container["readinessProbe"], container["lifecycle"]
    p = plan(world(deployments=[dep]))
    assert p.outcome == "adopt"
    assert any("readinessProbe" in w for w in p.warnings) and any("preStop" in w for w in p.warnings)


def adopted(scaled: bool = True, preview: bool = True) -> dict[str, Any]:
    """The cluster as an adoption leaves it (or, with scaled/preview False, as one interrupted leaves it)."""
    p = plan(world())
    copy_dep = copy.deepcopy(p.steps[0].body) | {"status": deployment()["status"]}
    svc = service(
        {"app": "web", "color": "blue"}, {ADOPTED_SELECTOR: '{"app": "web"}', ACTIVE_COLOUR: "blue"}
    )
    old = deployment(replicas=0 if scaled else 2)
    if scaled:
        old["metadata"]["annotations"] |= {ADOPTED_INTO: "web-blue", ADOPTED_REPLICAS: "2"}
    return world(
        service=svc,
        preview=p.steps[3].body if preview else None,
        deployments=[old, copy_dep],
        pods=[pod(f"web-blue-x-{i}", {"app": "web", "color": "blue"}, f"{REPO}@{DIGEST}") for i in range(2)],
    )


RESUMES: list[tuple[str, dict[str, Any], str, list[str]]] = [
    # id, cluster, outcome, the steps still to do
    ("adopted", adopted(), "in-shape", []),
    ("killed-before-scale-down", adopted(scaled=False), "resume", ["scale-down-old"]),
    ("killed-before-preview", adopted(scaled=False, preview=False), "resume", ["create-preview", "scale-down-old"]),
    ("killed-after-copy", world(deployments=[deployment(), adopted()["deployments"][1]]), "resume",
     ["await-serving", "narrow-service", "create-preview", "scale-down-old"]),
    ("bootstrapped-by-greenlight",
     world(service=service({"app": "web", "color": "green"}), preview={"metadata": {"name": "web-preview"},
           "spec": {"selector": {"app": "web", "color": "blue"}}}, deployments=[deployment("web-green", {"app": "web", "color": "green"})]),
     "in-shape", []),
]  # fmt: skip


@pytest.mark.parametrize(("w", "outcome", "pending"), [c[1:] for c in RESUMES], ids=[c[0] for c in RESUMES])
def test_a_rerun_resumes_where_an_interrupted_adoption_stopped_or_says_it_is_in_shape(
    w: dict[str, Any], outcome: str, pending: list[str]
) -> None:
    """Idempotent: what the cluster already shows is not done again."""
    p = plan(w)
    assert p.outcome == outcome, p.reason
    assert [s.action for s in p.pending] == pending
    if outcome == "in-shape":
        assert "nothing to do" in p.reason


def test_undo_takes_back_only_what_adoption_marked() -> None:
    """From the adopted shape: scale the old one back, restore the selector, delete preview and copy."""
    w = adopted()
    state = plan_undo(APP, w["service"], w["preview"], w["deployments"])
    assert state.scale_up == (("web", 2),)
    assert state.copies == ("web-blue",)
    assert state.delete_preview
    assert state.restore is not None
    assert state.restore["spec"]["selector"] == {"app": "web", "color": None}
    assert state.restore["metadata"]["annotations"] == {ADOPTED_SELECTOR: None, ACTIVE_COLOUR: None}
    # a Greenlight-made app (nothing adopt marked) has nothing to undo
    plain = plan_undo(
        APP,
        service({"app": "web", "color": "blue"}),
        None,
        [deployment("web-blue", {"app": "web", "color": "blue"})],
    )
    assert plain.empty


def test_restore_patch_is_none_for_a_service_adopt_did_not_narrow() -> None:
    assert restore_patch(service()) is None


SELECTORS: list[tuple[dict[str, Any], dict[str, str], bool]] = [
    ({"matchLabels": {"app": "web"}}, {"app": "web", "color": "blue"}, True),
    ({"matchLabels": {"app": "web", "color": "blue"}}, {"app": "web"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}, {"tier": "b"}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {"tier": "a"}, False),
    ({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}, {"canary": "1"}, False),
    ({"matchExpressions": [{"key": "canary", "operator": "Exists"}]}, {"canary": "1"}, True),
    ({}, {"app": "web"}, False),
]


@pytest.mark.parametrize(("selector", "labels", "matches"), SELECTORS)
def test_deployment_selectors_match_as_kubernetes_does(
    selector: dict[str, Any], labels: dict[str, str], matches: bool
) -> None:
    assert selector_matches(selector, labels) is matches


def test_colour_deployment_leaves_the_source_untouched() -> None:
    """The copy is a deep copy: the plain Deployment's dict is not changed."""
    src = deployment()
    before = copy.deepcopy(src)
    colour_deployment(APP, src, "blue", f"{REPO}@{DIGEST}")
    assert src == before
