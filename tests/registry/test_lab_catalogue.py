"""The lab's image catalogue: content digests, moving tags, lookups and persistence."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from greenlight.core.signatures import signature_tag
from greenlight_lab.catalogue import BEHAVIOUR_LABEL, Behaviour, Catalogue, build_manifest

GOOD = Behaviour("v1")
BAD = Behaviour("v2", error_rate=0.5, latency_ms=300)


def test_digest_is_the_sha256_of_the_manifest_it_serves():
    """push returns sha256 of the canonical OCI manifest that manifest() serves."""
    catalogue = Catalogue()
    digest = catalogue.push("ghcr.io/sma/backend:v1", GOOD)
    found = catalogue.manifest("sma/backend", "v1")
    assert found is not None
    assert found[0] == digest == "sha256:" + hashlib.sha256(found[1]).hexdigest()
    manifest = json.loads(found[1])
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["schemaVersion"] == 2
    assert catalogue.blob("sma/backend", manifest["config"]["digest"]) is not None


def test_same_push_gives_same_digest_and_different_behaviour_a_different_one():
    """Pushing the same behaviour twice is stable; another behaviour or repository changes the digest."""
    catalogue = Catalogue()
    first = catalogue.push("ghcr.io/sma/backend:a", GOOD)
    assert catalogue.push("ghcr.io/sma/backend:b", GOOD) == first
    assert Catalogue().push("ghcr.io/sma/backend:a", GOOD) == first
    assert catalogue.push("ghcr.io/sma/backend:c", BAD) != first
    assert catalogue.push("ghcr.io/sma/frontend:a", GOOD) != first


def test_repush_moves_the_tag_and_keeps_the_old_digest_pullable():
    """A re-pushed tag points at the new digest while the old digest still resolves."""
    catalogue = Catalogue()
    old = catalogue.push("ghcr.io/sma/backend:stable", GOOD)
    new = catalogue.push("ghcr.io/sma/backend:stable", BAD)
    assert catalogue.lookup("ghcr.io/sma/backend:stable") == (new, BAD)
    assert catalogue.lookup(f"ghcr.io/sma/backend@{old}") == (old, GOOD)


def test_lookup_matches_full_name_with_case_insensitive_host():
    """lookup needs the same full name; the registry host is compared case-insensitively."""
    catalogue = Catalogue()
    digest = catalogue.push("ghcr.io/sma/backend:v1", GOOD)
    assert catalogue.lookup("GHCR.io/sma/backend:v1") == (digest, GOOD)
    assert catalogue.lookup(f"ghcr.io/sma/backend:whatever@{digest}") == (digest, GOOD)
    assert catalogue.lookup("docker.io/sma/backend:v1") is None
    assert catalogue.lookup("ghcr.io/sma/backend:v9") is None
    assert catalogue.lookup("ghcr.io/sma/backend") is None
    assert catalogue.lookup("ghcr.io/SMA/backend:v1") is None


@pytest.mark.parametrize(
    "ref",
    ["ghcr.io/SMA/backend:v1", "ghcr.io/sma/backend", "ghcr.io/sma/backend@sha256:" + "a" * 64, ""],
)
def test_push_refuses_malformed_or_untagged_refs(ref):
    """A push by anything but a valid host/repo:tag raises ValueError naming the ref."""
    with pytest.raises(ValueError, match=re.escape(f"cannot push {ref!r}")):
        Catalogue().push(ref, GOOD)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": -0.1}, "error_rate"),
        ({"error_rate": float("nan")}, "error_rate"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"startup_s": -0.5}, "startup_s"),
        ({"startup_s": float("inf")}, "startup_s"),
        ({"latency_sigma": -0.1}, "latency_sigma"),
        ({"latency_sigma": float("nan")}, "latency_sigma"),
        ({"latency_sigma": float("inf")}, "latency_sigma"),
        ({"latency_sigma": True}, "latency_sigma"),
        ({"latency_sigma": "0.5"}, "latency_sigma"),
    ],
)
def test_behaviour_out_of_range_is_refused(kwargs, field):
    """A behaviour with an error rate outside [0,1] or a negative time raises ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        Catalogue().push("ghcr.io/sma/backend:v1", Behaviour("v1", **kwargs))


def test_tags_and_list_describe_the_catalogue():
    """tags() lists a repository's tags by path or full name; list() has a row per tag and untagged digest."""
    catalogue = Catalogue()
    old = catalogue.push("ghcr.io/sma/backend:v1", GOOD)
    catalogue.push("ghcr.io/sma/backend:v1", BAD)
    catalogue.push("ghcr.io/sma/backend:v2", BAD)
    new = catalogue.lookup("ghcr.io/sma/backend:v2")
    assert new is not None
    sigs = [signature_tag(old), signature_tag(new[0])]  # each digest's signature
    assert catalogue.tags("sma/backend") == sorted(["v1", "v2", *sigs])  # .sig tags too, as tags/list
    assert catalogue.tags("ghcr.io/sma/backend") == sorted(["v1", "v2", *sigs])
    assert catalogue.tags("sma/nothing") == []
    rows = catalogue.list()
    assert [(row["tag"], row["behaviour"]["version"]) for row in rows] == [
        ("v1", "v2"),
        ("v2", "v2"),
        (None, "v1"),
    ]
    assert rows[-1]["digest"] == old
    assert all(row["image"] == "ghcr.io/sma/backend" for row in rows)


def test_a_new_catalogue_on_the_same_path_sees_pushed_images(tmp_path):
    """State written by one Catalogue is read back by a new one on the same file, tags and old digests included."""
    path = tmp_path / "lab" / "images.json"
    first = Catalogue(path)
    old = first.push("ghcr.io/sma/backend:v1", GOOD)
    new = first.push("ghcr.io/sma/backend:v1", BAD)
    second = Catalogue(path)
    assert second.lookup("ghcr.io/sma/backend:v1") == (new, BAD)
    assert second.lookup(f"ghcr.io/sma/backend@{old}") == (old, GOOD)
    assert second.manifest("sma/backend", old) == first.manifest("sma/backend", old)
    assert [p.name for p in path.parent.iterdir()] == ["images.json"]  # no temp files left behind


def test_a_corrupt_catalogue_file_is_reported_by_path(tmp_path):
    """An unreadable catalogue file raises ValueError naming the file."""
    path = tmp_path / "images.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"images\.json is unreadable"):
        Catalogue(path)


def test_same_repository_path_on_two_hosts_serves_the_latest_push():
    """When two hosts hold one repository path, the registry view serves the most recent push."""
    catalogue = Catalogue()
    catalogue.push("ghcr.io/sma/backend:v1", GOOD)
    latest = catalogue.push("registry.example.com/sma/backend:v1", BAD)
    found = catalogue.manifest("sma/backend", "v1")
    assert found is not None and found[0] == latest


def test_latency_sigma_round_trips_and_is_part_of_the_digest(tmp_path):
    """latency_sigma survives to_dict/from_dict and a reload from disk; a non-zero sigma is a
    different image, sigma 0 leaves the config (and so the digest) as before the field existed."""
    noisy = Behaviour("v1", latency_ms=20, latency_sigma=0.5, error_rate=0.005)
    assert noisy.latency_sigma == 0.5
    assert Behaviour.from_dict(noisy.to_dict()) == noisy
    assert Behaviour.from_dict({"version": "v1"}).latency_sigma == 0.0
    assert Behaviour("v1", latency_sigma=1) == Behaviour("v1", latency_sigma=1.0)  # stored as a float

    quiet = Behaviour("v1", latency_ms=20, error_rate=0.005)
    assert "latency_sigma" not in quiet.digest_dict()
    assert noisy.digest_dict()["latency_sigma"] == 0.5
    _, _, config = build_manifest("sma/backend", noisy)
    label = json.loads(json.loads(config)["config"]["Labels"][BEHAVIOUR_LABEL])
    assert label["latency_sigma"] == 0.5

    path = tmp_path / "images.json"
    first = Catalogue(path)
    digest = first.push("ghcr.io/sma/backend:noisy", noisy)
    assert digest != first.push("ghcr.io/sma/backend:quiet", quiet)
    assert Catalogue(path).lookup("ghcr.io/sma/backend:noisy") == (digest, noisy)
