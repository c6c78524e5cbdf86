"""The lab's fault registry: matching, counting down, clearing."""

from __future__ import annotations

import pytest

from greenlight_lab.faults import FaultRegistry, FaultRule

CASES = [
    # rule (target, verb, resource), call (target, verb, resource), matches
    (("kube-primary", None, None), ("kube-primary", "get", "pods"), True),
    (("kube-primary", "patch", "services"), ("kube-primary", "patch", "services"), True),
    (("kube-primary", "patch", "services"), ("kube-primary", "get", "services"), False),
    (("kube-primary", "patch", "services"), ("kube-primary", "patch", "deployments"), False),
    (("kube-primary", None, None), ("kube-dr", "get", "pods"), False),
    (("gcs", "get", None), ("gcs", "get", "download"), True),
]


@pytest.mark.parametrize(("rule", "call", "expected"), CASES)
def test_rule_matches_target_verb_and_resource(rule: tuple, call: tuple, expected: bool) -> None:
    """A rule matches its target and, where given, its verb and resource; None matches anything."""
    reg = FaultRegistry()
    reg.add(FaultRule(*rule))
    assert (reg.take(*call) is not None) is expected


def test_rule_applies_to_the_next_n_calls_only() -> None:
    """A rule with count N fires N times and is then gone."""
    reg = FaultRegistry()
    reg.add(FaultRule("slack", count=2, status=429))
    assert [reg.take("slack") is not None for _ in range(3)] == [True, True, False]
    assert reg.list() == []


def test_until_cleared_rule_keeps_firing_until_clear() -> None:
    """count=-1 fires until cleared; clear(target) removes only that target's rules."""
    reg = FaultRegistry()
    reg.add(FaultRule("monitoring", count=-1))
    reg.add(FaultRule("gcs", count=-1))
    assert all(reg.take("monitoring") for _ in range(50))
    assert reg.clear("monitoring") == 1
    assert reg.take("monitoring") is None
    assert reg.take("gcs") is not None


@pytest.mark.parametrize("bad", [{"count": 0}, {"count": -2}, {"mode": "explode"}])
def test_malformed_rules_are_refused(bad: dict) -> None:
    """A rule that could never fire, or with an unknown mode, is refused."""
    with pytest.raises(ValueError):
        FaultRegistry().add(FaultRule("gcs", **bad))


def test_skip_lets_the_first_matching_calls_through() -> None:
    """A rule with skip N lets N matching calls through, then applies."""
    reg = FaultRegistry()
    reg.add(FaultRule("kube-primary", "patch", "services", skip=2, count=1))
    assert [reg.take("kube-primary", "patch", "services") is not None for _ in range(4)] == [
        False,
        False,
        True,
        False,
    ]


def test_spent_and_cleared_rules_stay_readable_with_their_fired_count() -> None:
    reg = FaultRegistry()
    spent = reg.add(FaultRule(target="gcs", count=2))
    cleared = reg.add(FaultRule(target="slack", count=-1))
    for _ in range(3):
        reg.take("gcs")
    reg.take("slack")
    reg.clear("slack")
    assert reg.get(spent.id) == {**spent.to_dict(), "fired": 2, "active": False}
    assert reg.get(cleared.id) is not None and reg.get(cleared.id)["fired"] == 1  # type: ignore[index]
    assert reg.get(999) is None
