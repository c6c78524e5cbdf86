"""config-restore against the lab: a bundle round-trips into the cluster through a server-side dry run,
a corrupted or foreign bundle is refused with nothing applied, Secrets come back by name and keys
only, a cluster that moved between dry run and apply is a conflict, and bad input names what is wrong."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pytest

from greenlight.clients.gcs import GcsClient
from greenlight.commands import restore as restore_command
from greenlight.core.restore import RESTORED_WITHOUT_VALUES, Item
from greenlight.errors import BackupInvalid, Conflict, InputInvalid, NotFound
from greenlight.flows.config_backup import backup_config, build_bundle
from greenlight.flows.config_restore import plan_restore, restore_config
from greenlight.tasks.restore import apply_items
from greenlight.tasks.storage import upload_objects
from greenlight_lab.state import LabState

from .conftest import BUCKET, ENCODED, SECRET_VALUE, Place

pytestmark = pytest.mark.lab


def backup(place: Place) -> str:
    """A config bundle of the place's namespace; its prefix."""
    return str(backup_config(place.profile.name, profile=place.profile)["prefix"])


def restore(place: Place, **kwargs: Any) -> dict[str, Any]:
    return restore_config(place.profile.name, profile=place.profile, **kwargs)


def actions(result: dict[str, Any]) -> dict[str, str]:
    return {o["ref"]: o["action"] for o in result["objects"]}


def no_secret_in(text: str) -> None:
    assert SECRET_VALUE not in text and ENCODED not in text


def test_round_trip_restores_deleted_and_changed_objects_and_then_has_nothing_to_do(place: Place) -> None:
    """Backup, then delete a ConfigMap and change a Service and a Deployment: the dry run shows exactly that
    (created; changed with the fields), writes nothing; --apply makes the cluster match the bundle; a
    second run finds everything unchanged."""
    kube, ns = place.kube, place.namespace
    backup(place)
    kube.delete("configmaps", "web-config", ns)
    kube.patch("services", "web", {"spec": {"ports": [{"name": "http", "port": 81, "targetPort": 8080}]}}, ns)
    dep = kube.get("deployments", "web", ns)
    dep["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "MODE", "value": "degraded"}]
    kube.replace("deployments", "web", dep, ns)
    before = place.snapshot()

    dry = restore(place)
    got = actions(dry)
    assert got == {
        "secrets/web-db": "left-alone",
        "configmaps/web-config": "create",
        "services/web": "update",
        "deployments/web": "update",
        "ingresses/web": "unchanged",
    }
    changes = {o["ref"]: o["changes"] for o in dry["objects"]}
    assert changes["services/web"] == ["spec.ports[http].port: 81 -> 80"]
    assert changes["deployments/web"] == [
        'spec.template.spec.containers[web].env[MODE].value: "degraded" -> "normal"'
    ]
    assert dry["applied"] is False and dry["done"] == []
    assert place.snapshot() == before, "a dry run wrote to the cluster"

    done = restore(place, apply=True)
    assert sorted(done["done"]) == [
        "changed deployments/web",
        "changed services/web",
        "created configmaps/web-config",
    ]
    assert kube.get("configmaps", "web-config", ns)["data"] == {"LOG_LEVEL": "info", "FEATURE_X": "on"}
    assert kube.get("services", "web", ns)["spec"]["ports"][0]["port"] == 80
    env = kube.get("deployments", "web", ns)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "MODE", "value": "normal"}]

    again = restore(place, apply=True)
    assert set(actions(again).values()) == {"unchanged", "left-alone"}
    assert again["done"] == []
    assert again["counts"]["create"] == again["counts"]["update"] == 0


def test_server_managed_fields_never_show_as_drift(place: Place) -> None:
    """Right after a backup, with the cluster's uid, resourceVersion, clusterIP, generation, status and the
    deployment revision annotation on every live object, nothing is reported as changed."""
    backup(place)
    svc = place.kube.get("services", "web", place.namespace)
    assert svc["spec"].get("clusterIP"), "the lab assigns cluster IPs"
    result = restore(place)
    assert {o["ref"]: o["changes"] for o in result["objects"] if o["changes"]} == {}
    assert result["counts"]["update"] == 0 and result["counts"]["create"] == 0


def write_bundle(place: Place, objects: list[tuple[str, str, dict[str, Any]]]) -> str:
    """A bundle of ``objects`` exactly as config-backup writes one (files, checksummed index, owner); its prefix."""
    plan = build_bundle(place.profile, objects, [])
    index = (json.dumps(plan.index, indent=2, sort_keys=True) + "\n").encode()
    upload_objects.fn(plan.bucket, {plan.prefix + p: b for p, b in plan.files.items()})
    upload_objects.fn(plan.bucket, {plan.prefix + "index.json": index})
    return plan.prefix


def test_defaults_the_server_adds_are_not_drift_thanks_to_the_dry_run(place: Place) -> None:
    """A bundle of hand-written manifests without the fields the API server defaults (a Service's type,
    sessionAffinity, port protocol; a Deployment's strategy, revisionHistoryLimit...): against live objects
    made from the same manifests it is unchanged, because the diff compares the server's dry-run answer;
    a field that really differs still shows, alone."""
    kube, ns = place.kube, place.namespace
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "plain"},
        "spec": {"selector": {"app": "plain"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plain"},
           "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "plain"}},
                    "template": {"metadata": {"labels": {"app": "plain"}},
                                 "spec": {"containers": [{"name": "c", "image": "ghcr.io/sma-platform/backend:rc"}]}}}}  # fmt: skip
    kube.create("services", svc, ns)
    kube.create("deployments", dep, ns)
    live = kube.get("services", "plain", ns)["spec"]
    assert live["type"] == "ClusterIP" and live["ports"][0]["protocol"] == "TCP", "the lab defaults them"
    changed = {**svc, "spec": {**svc["spec"], "selector": {"app": "plain", "tier": "web"}}}
    write_bundle(place, [("services", "plain", changed), ("deployments", "plain", dep)])
    result = restore(place)
    assert actions(result) == {"services/plain": "update", "deployments/plain": "unchanged"}
    assert {o["ref"]: o["changes"] for o in result["objects"]}["services/plain"] == [
        'spec.selector.tier: (unset) -> "web"'
    ]


def test_secret_is_restored_by_name_and_keys_and_never_overwritten(
    place: Place, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deleted Secret comes back with its type and keys, each value empty and annotated; an existing one is
    left alone (its value kept) with the keys it lacks named; no value is ever printed or returned."""
    kube, ns = place.kube, place.namespace
    backup(place)
    kube.delete("secrets", "web-db", ns)
    result = restore(place, apply=True)
    assert actions(result)["secrets/web-db"] == "create-without-values"
    detail = {o["ref"]: o["detail"] for o in result["objects"]}["secrets/web-db"]
    assert detail == "fill in keys password, user"
    secret = kube.get("secrets", "web-db", ns)
    assert secret["data"] == {"password": "", "user": ""}
    assert secret["metadata"]["annotations"][RESTORED_WITHOUT_VALUES] == "password,user"

    # a person fills in one value and drops a key: the next restore neither overwrites nor adds it
    secret["data"] = {"password": ENCODED}
    kube.replace("secrets", "web-db", secret, ns)
    rv = kube.get("secrets", "web-db", ns)["metadata"]["resourceVersion"]
    again = restore(place, apply=True)
    item = next(o for o in again["objects"] if o["ref"] == "secrets/web-db")
    assert item["action"] == "left-alone" and item["keys"] == ["user"]
    assert "lacks key(s) the bundle has: user" in item["detail"]
    after = kube.get("secrets", "web-db", ns)
    assert after["data"] == {"password": ENCODED} and after["metadata"]["resourceVersion"] == rv

    restore_command.print_result(result)
    restore_command.print_result(again)
    out = capsys.readouterr().out
    assert "created without values" in out or "create-without-values" in out
    no_secret_in(json.dumps([result, again]) + out)


def colour_route(blue: int, green: int, hostname: str = "web.example.test") -> dict[str, Any]:
    """An HTTPRoute sending ``blue``/``green`` of web's traffic to its colours' Services."""
    refs = [
        {"name": "web-blue", "port": 80, "weight": blue},
        {"name": "web-green", "port": 80, "weight": green},
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [hostname],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": refs}]},
    }  # fmt: skip


def settled(place: Place, name: str) -> None:
    """Wait until the Gateway controller wrote the route's status for its current generation: that
    write moves its resourceVersion, which a dry run then apply would see as the cluster moving."""
    deadline = time.monotonic() + 30
    while True:
        obj = place.kube.get("httproutes", name, place.namespace)
        generation = obj["metadata"].get("generation")
        parents = (obj.get("status") or {}).get("parents") or []
        if parents and all(
            c.get("observedGeneration") == generation for p in parents for c in p.get("conditions") or []
        ):
            return
        assert time.monotonic() < deadline, (
            f"httproutes/{name}: no status for generation {generation} in 30 s"
        )
        time.sleep(0.2)


def test_httproute_is_backed_up_and_restored_and_live_traffic_stays_where_it_goes(place: Place) -> None:
    """The bundle holds the HTTPRoute. A switch after the backup (Service selector and route weights
    moved to green) is not undone by a restore: traffic stays, the rest of the route comes back, and
    the report says what was kept. A deleted route comes back whole."""
    kube, ns = place.kube, place.namespace
    kube.patch("services", "web", {"spec": {"selector": {"app": "web", "color": "blue"}}}, ns)
    kube.create("httproutes", colour_route(100, 0), ns)
    prefix = backup(place)
    assert f"{prefix}httproutes/web.json" in {o.name for o in GcsClient().list(BUCKET, prefix)}
    # a release switched to green since; someone also edited the route's hostname
    kube.patch("services", "web", {"spec": {"selector": {"app": "web", "color": "green"}}}, ns)
    switched = kube.get("httproutes", "web", ns)
    switched["spec"] = colour_route(0, 100, "changed.example.test")["spec"]
    kube.replace("httproutes", "web", switched, ns)
    settled(place, "web")
    before = place.snapshot()

    dry = restore(place)
    by_ref = {o["ref"]: o for o in dry["objects"]}
    assert by_ref["services/web"]["action"] == "unchanged"
    assert "live traffic kept: selector color=green (the bundle has blue)" in by_ref["services/web"]["detail"]
    assert by_ref["httproutes/web"]["action"] == "update"
    assert [c.split(":")[0] for c in by_ref["httproutes/web"]["changes"]] == ["spec.hostnames[0]"]
    assert (
        "live traffic kept: rules[0] web-blue weight 0 (the bundle has 100), "
        "rules[0] web-green weight 100 (the bundle has 0)" in by_ref["httproutes/web"]["detail"]
    )
    assert place.snapshot() == before, "a dry run wrote to the cluster"

    done = restore(place, apply=True)
    assert done["done"] == ["changed httproutes/web"]
    restored = kube.get("httproutes", "web", ns)["spec"]
    assert restored["hostnames"] == ["web.example.test"]
    assert [(r["name"], r["weight"]) for r in restored["rules"][0]["backendRefs"]] == [
        ("web-blue", 0),
        ("web-green", 100),
    ]
    assert kube.get("services", "web", ns)["spec"]["selector"]["color"] == "green"

    settled(place, "web")
    kube.delete("httproutes", "web", ns)
    again = restore(place, apply=True)
    assert again["done"] == ["created httproutes/web"]
    weights = [
        (r["name"], r["weight"]) for r in kube.get("httproutes", "web", ns)["spec"]["rules"][0]["backendRefs"]
    ]
    assert weights == [("web-blue", 100), ("web-green", 0)]  # nothing live to keep: the bundle's


def test_into_restores_beside_the_environment_in_another_namespace(
    place: Place, other_namespace: str
) -> None:
    """--into an existing empty namespace creates every object there, rewritten to that namespace; the
    environment's own namespace is untouched."""
    backup(place)
    before = place.snapshot()
    result = restore(place, into=other_namespace, apply=True)
    assert set(actions(result).values()) == {"create", "create-without-values"}
    for plural, name in (
        ("configmaps", "web-config"),
        ("services", "web"),
        ("deployments", "web"),
        ("ingresses", "web"),
    ):
        assert place.kube.get(plural, name, other_namespace)["metadata"]["namespace"] == other_namespace
    assert place.kube.get("secrets", "web-db", other_namespace)["data"] == {"password": "", "user": ""}
    assert place.snapshot() == before
    assert any("--into" in n for n in result["notes"])


def test_into_a_missing_namespace_is_not_found_and_creates_nothing(place: Place) -> None:
    """--into a namespace that does not exist: NotFound naming it, and no namespace is created."""
    backup(place)
    with pytest.raises(NotFound, match="namespace rc-nowhere-0 does not exist"):
        restore(place, into="rc-nowhere-0", apply=True)
    assert place.kube.find("namespaces", "rc-nowhere-0") is None


def test_corrupted_bundle_is_refused_before_anything_is_applied(place: Place, gcs: GcsClient) -> None:
    """One flipped byte in a stored file: BackupInvalid naming the file and its checksum, nothing applied
    (a deleted ConfigMap stays deleted)."""
    prefix = backup(place)
    name = f"{prefix}configmaps/web-config.json"
    data = bytearray(gcs.read_bytes(BUCKET, name))
    data[len(data) // 2] ^= 0x01
    gcs.delete(BUCKET, name)
    gcs.upload_bytes(BUCKET, name, bytes(data), content_type="application/json")
    place.kube.delete("configmaps", "web-config", place.namespace)
    before = place.snapshot()
    with pytest.raises(BackupInvalid, match=r"configmaps/web-config.json: sha256/size"):
        restore(place, apply=True)
    assert place.snapshot() == before


def test_foreign_bundle_is_refused_before_anything_is_applied(place: Place, gcs: GcsClient) -> None:
    """Another environment's bundle copied, intact, under this environment's prefix: refused as foreign
    (its index names the other environment and namespace), nothing applied."""
    prefix = backup(place)
    other = place.profile.model_copy(update={"name": "rc-other", "namespace": "rc-other"})
    assert other.backups is not None
    stamp = prefix.rstrip("/").rsplit("/", 1)[-1]
    for o in gcs.list(BUCKET, prefix):
        target = f"{other.backups.config_prefix}{other.name}/{stamp}/{o.name[len(prefix) :]}"
        gcs.upload_bytes(BUCKET, target, gcs.read_bytes(BUCKET, o.name), content_type="application/json")
    with pytest.raises(BackupInvalid, match=r"foreign config bundle: index\.json: made for environment"):
        restore_config(other.name, profile=other, apply=True)


def test_a_cluster_that_moved_since_the_dry_run_is_a_conflict_and_nothing_is_applied(place: Place) -> None:
    """Between the dry run and the apply someone changes the Service: the apply refuses (Conflict naming the
    object and both resourceVersions) and writes nothing (the deleted ConfigMap stays deleted)."""
    kube, ns = place.kube, place.namespace
    backup(place)
    kube.delete("configmaps", "web-config", ns)
    kube.patch("services", "web", {"metadata": {"labels": {"app": "web", "tier": "edge"}}}, ns)
    _, namespace, plan = plan_restore(place.profile)
    assert {i.ref for i in plan.writes} == {"configmaps/web-config", "services/web"}
    kube.patch("services", "web", {"metadata": {"labels": {"app": "web", "tier": "moved"}}}, ns)
    with pytest.raises(Conflict, match=r"services/web is at resourceVersion \d+, the dry run saw \d+"):
        apply_items.fn(place.profile, namespace, plan.writes)
    assert kube.find("configmaps", "web-config", ns) is None
    assert kube.get("services", "web", ns)["metadata"]["labels"]["tier"] == "moved"


def test_an_apply_that_fails_part_way_says_what_was_applied_and_what_was_not(place: Place) -> None:
    """A write the API refuses after an earlier one succeeded: the error keeps its kind and names what was
    applied and what was not; what was applied stays (nothing is undone)."""
    ns = place.namespace
    good = Item("configmaps", "rc-good", "create", body={"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "rc-good", "namespace": ns}, "data": {"a": "1"}})  # fmt: skip
    bad = Item("configmaps", "Bad_Name", "create", body={"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "Bad_Name", "namespace": ns}})  # fmt: skip
    later = Item("configmaps", "rc-later", "create", body={**good.body, "metadata": {"name": "rc-later"}})  # type: ignore[dict-item]
    with pytest.raises(InputInvalid) as e:
        apply_items.fn(place.profile, ns, [good, bad, later])
    message = str(e.value)
    assert "restore stopped at configmaps/Bad_Name" in message
    assert (
        "Applied: created configmaps/rc-good. Not applied: configmaps/Bad_Name, configmaps/rc-later"
        in message
    )
    assert place.kube.find("configmaps", "rc-good", ns) is not None
    assert place.kube.find("configmaps", "rc-later", ns) is None


def test_cli_dry_run_prints_every_object_and_exits_0(
    lab: LabState, capsys: pytest.CaptureFixture[str]
) -> None:
    """`restore-config production` right after a backup: one line per object, the counts, DRY RUN, exit 0."""
    backup_config("production")
    code = restore_command.run(
        argparse.Namespace(env="production", bundle=None, into=None, apply=False, json=False)
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "unchanged             services/backend" in out
    assert (
        "DRY RUN: gs://sma-config-backups/config/production/" in out
        and "would be: 0 created, 0 changed" in out
    )
    assert "counts: create 0, update 0," in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        ({"env": "nowhere"}, 2, "unknown environment 'nowhere'"),
        ({"env": "production", "bundle": "19990101T000000.000Z"}, 3, "the most recent: 2"),
        ({"env": "production", "into": "no-such-namespace"}, 3, "namespace no-such-namespace does not exist"),
    ],
)
def test_cli_bad_input_names_what_is_wrong(
    lab: LabState, capsys: pytest.CaptureFixture[str], argv: dict[str, str], code: int, message: str
) -> None:
    """An unknown environment (2), bundle (3, naming the recent ones) or namespace (3): FAILED naming it."""
    if argv["env"] == "production":
        backup_config("production")
    args = argparse.Namespace(**{"bundle": None, "into": None, "apply": False, "json": False, **argv})
    assert restore_command.run(args) == code
    err = capsys.readouterr().err
    assert "FAILED: " in err and message in err
