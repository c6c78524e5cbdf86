"""What `greenlight setup` manages, listed without the Prefect API, and the values of its credential blocks."""

from __future__ import annotations

import pytest

from greenlight.commands.setup import (
    LIMIT_KIND,
    SECRET_BLOCK_KIND,
    VARIABLE_KIND,
    WORK_POOL_KIND,
    _block_value,
    expected_objects,
)
from greenlight.errors import InputInvalid
from greenlight.tasks.registry import _from_block
from greenlight_lab.state import LAB_ENVIRONMENTS


@pytest.fixture(autouse=True)
def lab_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_ENVIRONMENTS", str(LAB_ENVIRONMENTS))


def test_expected_objects_of_the_lab_profiles() -> None:
    """Every environment has its two locks and its freeze variable; the credential blocks are listed once."""
    objects = expected_objects(["staging", "production", "dr"])
    names = [o.name for o in objects]
    assert len(names) == len(set(names))
    by_kind: dict[str, set[str]] = {}
    for o in objects:
        by_kind.setdefault(o.kind, set()).add(o.name)
        assert o.why, o
    assert by_kind[WORK_POOL_KIND] == {"greenlight-local"}
    assert by_kind[LIMIT_KIND] == {
        f"greenlight-{lock}-{env}"
        for lock in ("release", "traffic")
        for env in ("staging", "production", "dr")
    }
    assert by_kind[VARIABLE_KIND] == {
        f"greenlight_release_freeze_{env}" for env in ("staging", "production", "dr")
    }
    assert {
        "greenlight-release-record-key",
        "greenlight-github-webhook-secret",
        "greenlight-slack-signing-secret",
        "greenlight-scratch-database-url",
        "greenlight-registry-credentials",
    } <= by_kind[SECRET_BLOCK_KIND]


@pytest.mark.parametrize(
    ("envs", "limits"),
    [
        (["staging"], {"greenlight-release-staging", "greenlight-traffic-staging"}),
        (["dr"], {"greenlight-release-dr", "greenlight-traffic-dr"}),
    ],
)
def test_expected_objects_of_some_environments_name_only_theirs(envs: list[str], limits: set[str]) -> None:
    """Asking for some environments lists only their locks (the shared blocks stay)."""
    objects = expected_objects(envs)
    assert {o.name for o in objects if o.kind == LIMIT_KIND} == limits
    assert "greenlight-scratch-database-url" in {o.name for o in objects}


def test_expected_objects_say_where_a_credential_block_comes_from() -> None:
    """A credential block's reason names the variables setup fills it from."""
    why = {o.name: o.why for o in expected_objects(["staging"])}
    assert "$GREENLIGHT_SCRATCH_DATABASE_URL" in why["greenlight-scratch-database-url"]
    assert (
        "$GREENLIGHT_REGISTRY_USERNAME + $GREENLIGHT_REGISTRY_PASSWORD"
        in why["greenlight-registry-credentials"]
    )


@pytest.mark.parametrize(
    ("env", "value", "why_not"),
    [
        ({"A": "x"}, "x", None),
        ({}, None, "$A is not set"),
        ({"A": ""}, None, "$A is not set"),
    ],
)
def test_block_value_from_one_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], value: str | None, why_not: str | None
) -> None:
    """A one-variable block takes its value, or is skipped naming the unset variable."""
    monkeypatch.delenv("A", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _block_value(("A",)) == (value, why_not)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"GREENLIGHT_REGISTRY_USERNAME": "bot", "GREENLIGHT_REGISTRY_PASSWORD": "pw"},
            ({"username": "bot", "password": "pw"}, None),
        ),
        ({"GREENLIGHT_REGISTRY_USERNAME": "bot"}, (None, "$GREENLIGHT_REGISTRY_PASSWORD is not set")),
        ({}, (None, "$GREENLIGHT_REGISTRY_USERNAME and $GREENLIGHT_REGISTRY_PASSWORD are not set")),
    ],
)
def test_registry_block_value_needs_both_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: tuple[object, str | None]
) -> None:
    """The registry block holds {username, password} and is made only when both are set."""
    for k in ("GREENLIGHT_REGISTRY_USERNAME", "GREENLIGHT_REGISTRY_PASSWORD"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _block_value(("GREENLIGHT_REGISTRY_USERNAME", "GREENLIGHT_REGISTRY_PASSWORD")) == expected


@pytest.mark.parametrize(
    "value",
    [
        "bot:pw",
        {"username": "bot"},
        {"username": "", "password": "pw"},
        {"username": "bot", "password": 7},
        ["bot", "pw"],
    ],
)
def test_registry_block_of_another_shape_is_refused_without_its_value(value: object) -> None:
    """A registry block that is not {username, password} is InputInvalid naming the block and the shape, not the value."""
    with pytest.raises(InputInvalid) as e:
        _from_block(value)
    assert "greenlight-registry-credentials" in str(e.value) and '"username"' in str(e.value)
    assert "pw" not in str(e.value)


def test_registry_block_of_the_right_shape() -> None:
    """{username, password} gives the pair."""
    assert _from_block({"username": "bot", "password": "pw"}) == ("bot", "pw")
