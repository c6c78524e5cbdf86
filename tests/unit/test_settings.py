"""Environment profiles: every shipped profile validates; bad ones name the file, field and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from greenlight.core.approval import public_key_of
from greenlight.errors import InputInvalid, ProfileInvalid
from greenlight.settings import REPO_ROOT, available_environments, load_profile
from greenlight_lab.state import LAB_APPROVAL_SIGNING_KEY, LAB_ENVIRONMENTS

DEFAULT_ENVIRONMENTS = REPO_ROOT / "deployments" / "environments"  # the shipped real profiles

SHIPPED = [(d, n) for d in (DEFAULT_ENVIRONMENTS, LAB_ENVIRONMENTS) for n in ("staging", "production", "dr")]


@pytest.mark.parametrize(("directory", "name"), SHIPPED)
def test_shipped_profiles_validate(directory: Path, name: str) -> None:
    """The real and the lab profiles of staging, production and dr load without error."""
    profile = load_profile(name, directory)
    assert profile.name == name
    assert {a.name for a in profile.apps} == {"backend", "frontend"}


def test_lab_profiles_mirror_real_ones_but_with_short_timings() -> None:
    """The lab profiles keep the platform's names and shorten only the timings."""
    for name in ("staging", "production", "dr"):
        real, lab = load_profile(name, DEFAULT_ENVIRONMENTS), load_profile(name, LAB_ENVIRONMENTS)
        assert (real.namespace, [a.image_repository for a in real.apps]) == (
            lab.namespace,
            [a.image_repository for a in lab.apps],
        )
        assert lab.gate.interval_s < real.gate.interval_s
        assert lab.release.bake_s < real.release.bake_s
    assert load_profile("production", LAB_ENVIRONMENTS).release.bake_s <= 60
    assert load_profile("dr", LAB_ENVIRONMENTS).cluster.context == "lab-dr"


def _base() -> dict:
    return yaml.safe_load((LAB_ENVIRONMENTS / "staging.yaml").read_text())


def _set(doc: dict, dotted: str, value: object) -> dict:
    *path, last = dotted.split(".")
    node = doc
    for key in path:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


BAD = [
    ("gate.max_error_rate", 1.5, "gate.max_error_rate", "less than or equal to 1"),
    ("namespace", "Bad_NS", "namespace", "should match pattern"),
    ("apps.0.port", 70000, "apps.0.port", "less than or equal to 65535"),
    ("apps.0.health_path", "healthz", "apps.0.health_path", "should match pattern"),
    ("cluster", {"context": "x", "in_cluster": True}, "cluster", "exactly one"),
    ("registry.allowed", [], "registry.allowed", "at least 1"),
    ("registry.image_template", "{repository}", "registry.image_template", "{commit}"),
    ("release.colours", ["blue", "blue"], "release.colours", "must differ"),
    ("gate.surprise", 1, "gate.surprise", "Extra inputs are not permitted"),
    ("apps", [], "apps", "at least 1"),
]


@pytest.mark.parametrize(("field", "value", "where", "what"), BAD)
def test_invalid_profile_names_file_field_and_problem(
    tmp_path: Path, field: str, value: object, where: str, what: str
) -> None:
    """A profile with one bad field fails with the file path, the dotted field and the reason."""
    (tmp_path / "staging.yaml").write_text(yaml.safe_dump(_set(_base(), field, value)))
    with pytest.raises(ProfileInvalid) as err:
        load_profile("staging", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "staging.yaml") in msg
    assert f": {where}" in msg
    assert what in msg


def test_duplicate_app_names_are_refused(tmp_path: Path) -> None:
    """Two apps with one name are refused, naming the repeated name."""
    doc = _base()
    doc["apps"].append(dict(doc["apps"][0]))
    (tmp_path / "staging.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileInvalid, match="repeated: backend"):
        load_profile("staging", tmp_path)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("a: [1, 2", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: other\n", "does not match"),
    ],
)
def test_unparseable_profile_is_named(tmp_path: Path, text: str, what: str) -> None:
    """YAML that is broken, not a mapping, or misnamed fails with the file and the reason."""
    (tmp_path / "staging.yaml").write_text(text)
    with pytest.raises(ProfileInvalid, match=what):
        load_profile("staging", tmp_path)


@pytest.mark.parametrize("name", ["nope", "../etc/passwd", "Prod", ""])
def test_unknown_or_malformed_environment_is_refused(name: str) -> None:
    """An environment with no profile, or a name that is not one, is refused naming the known ones."""
    with pytest.raises(InputInvalid) as err:
        load_profile(name, LAB_ENVIRONMENTS)
    assert repr(name) in str(err.value) or f"'{name}'" in str(err.value)


def test_environment_directory_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    """GREENLIGHT_ENVIRONMENTS points load_profile at another directory."""
    monkeypatch.setenv("GREENLIGHT_ENVIRONMENTS", str(LAB_ENVIRONMENTS))
    assert load_profile("staging").cluster.context == "lab-primary"
    assert available_environments() == ["dr", "production", "staging"]


def test_unknown_app_is_refused_naming_known_ones() -> None:
    """Asking a profile for an app it does not have names the apps it has."""
    with pytest.raises(InputInvalid, match=r"unknown app 'db'.*backend, frontend"):
        load_profile("staging", LAB_ENVIRONMENTS).app("db")


def _production() -> dict:
    return yaml.safe_load((LAB_ENVIRONMENTS / "production.yaml").read_text())


PEOPLE_BAD = [
    # id, approval changes, message fragment
    ("approver-not-a-person", {"approvers": ["alice", "zoe"]}, "approvers zoe are not declared in 'people'"),
    ("slack-id-twice", {"people": [{"name": "alice", "slack": "U0LABALICE"}, {"name": "bob", "slack": "U0LABALICE"}],
                        "approvers": ["alice"]}, "slack U0LABALICE is declared twice"),
    ("github-twice-any-case", {"people": [{"name": "a", "slack": "U0LABALICE", "github": "Al"},
                                          {"name": "b", "slack": "U0LABBOB01", "github": "al"}], "approvers": ["a"]},
     "github"),
    ("malformed-slack-id", {"people": [{"name": "alice", "slack": "alice"}], "approvers": ["alice"]},
     "release.approval.people.0.slack"),
    ("verified-needs-people", {"people": [], "approvers": ["alice"]}, "require_verified needs 'people'"),
    ("verified-needs-receiver-keys", {"receiver_keys": []}, "require_verified needs 'receiver_keys'"),
    ("malformed-receiver-key", {"receiver_keys": ["c2hvcnQ="]}, "receiver_keys.0: the public key is not an Ed25519 key"),
    ("verified-approver-without-slack", {"people": [{"name": "alice", "github": "alice"}], "approvers": ["alice"]},
     "approvers alice have no 'slack' user ID"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "what"), [c[1:] for c in PEOPLE_BAD], ids=[c[0] for c in PEOPLE_BAD])
def test_approval_people_are_validated(tmp_path: Path, changes: dict, what: str) -> None:
    """People are declared once, each identity once; every approver is one of them, and under
    require_verified (the default) each has a Slack user ID, or nobody could ever approve."""
    doc = _production()
    doc["release"]["approval"].update(changes)
    (tmp_path / "production.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileInvalid, match=what):
        load_profile("production", tmp_path)


def test_verified_answers_need_a_slack_section(tmp_path: Path) -> None:
    """Verified answers come from Slack: a production profile without a slack section is refused."""
    doc = _production()
    del doc["slack"]
    (tmp_path / "production.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileInvalid, match="has no 'slack' section"):
        load_profile("production", tmp_path)


def test_typed_names_are_accepted_without_require_verified(tmp_path: Path) -> None:
    """With require_verified off, bare approver names without people still load (answers typed)."""
    doc = _production()
    doc["release"]["approval"].update({"people": [], "approvers": ["alice"], "require_verified": False})
    (tmp_path / "production.yaml").write_text(yaml.safe_dump(doc))
    assert load_profile("production", tmp_path).release.approval.approvers == ["alice"]


def test_production_requires_verified_answers_by_default() -> None:
    """Both shipped production profiles require verified answers, from people with Slack IDs; the
    lab's names the public half of the lab receiver's key."""
    for directory in (DEFAULT_ENVIRONMENTS, LAB_ENVIRONMENTS):
        approval = load_profile("production", directory).release.approval
        assert approval.required and approval.require_verified and approval.receiver_keys
        assert all(p.slack for p in approval.people if p.name in approval.approvers)
    lab = load_profile("production", LAB_ENVIRONMENTS).release.approval
    assert lab.receiver_keys == [public_key_of(LAB_APPROVAL_SIGNING_KEY)]
