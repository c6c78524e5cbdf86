"""The fault-injection suite: each case injects faults through the lab (or by hand, for webhooks
and killed processes), checks that nothing is lost and that the system ends in a known state,
and leaves one line in the report printed at the end of the session (by tests/conftest.py):

    fault | injected | survived | data lost

``injected`` is read back from the lab (how often its rules actually fired), so a case whose
fault never fired fails instead of passing vacuously. ``data lost`` is what the case measured
(failed requests, apps switched twice, rows missing, runs started by a forged webhook...): a
case that passes has asserted it to be zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

from greenlight_lab import supervisor
from greenlight_lab.state import LabState

FAULT_LINE = "greenlight-fault-line"  # the user property a case's report line travels in
OUTCOME_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


@dataclass
class FaultLine:
    fault: str
    injected: int
    survived: bool
    lost: dict[str, int]
    error: str = ""


@dataclass
class Fault:
    """One case's faults: inject through the lab, count what fired, record what was lost."""

    lab: LabState | None
    description: str = ""
    rule_ids: list[int] = field(default_factory=list)
    targets: set[str] = field(default_factory=set)
    by_hand: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    hand_labels: dict[str, int] = field(default_factory=dict)

    def describe(self, text: str) -> None:
        self.description = text

    def inject(self, target: str, label: str | None = None, **rule: Any) -> int:
        """Add a lab fault rule (see greenlight_lab.faults); returns its id. Rules with a ``label``
        get a report line of their own (the case's outcome and losses, their own fired count)."""
        assert self.lab is not None, "this case has no lab"
        out = supervisor.control(self.lab, "POST", "/faults", {"target": target, **rule})
        self.rule_ids.append(int(out["id"]))
        self.targets.add(target)
        if label:
            self.labels[int(out["id"])] = label
        return int(out["id"])

    def injected_by_hand(self, n: int = 1, label: str | None = None) -> None:
        """Faults the lab's rules cannot express (a forged webhook, a killed process); with a
        ``label``, a report line of its own."""
        if label:
            self.hand_labels[label] = self.hand_labels.get(label, 0) + n
        else:
            self.by_hand += n

    def fired(self, rule_id: int | None = None) -> int:
        """How often the lab applied this case's rules (or one of them)."""
        if self.lab is None:
            return 0
        ids = self.rule_ids if rule_id is None else [rule_id]
        return sum(int(supervisor.control(self.lab, "GET", f"/faults/{i}")["fired"]) for i in ids)

    def clear(self) -> None:
        """Remove this case's rules from the lab (the fired counts stay readable)."""
        for target in self.targets:
            supervisor.control(self.lab, "DELETE", f"/faults?target={target}")  # type: ignore[arg-type]

    def measured_loss(self, what: str, count: int) -> int:
        """Record a loss measurement (the case asserts it is zero)."""
        self.lost[what] = self.lost.get(what, 0) + count
        return count


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    rep = yield
    item.stash.setdefault(OUTCOME_KEY, {})[rep.when] = rep
    return rep


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Iterator[Fault]:
    """A fault case: ``fault.inject(...)`` / ``fault.injected_by_hand()``, ``fault.measured_loss(...)``."""
    lab = request.getfixturevalue("lab") if "lab" in request.fixturenames else None
    case = Fault(lab=lab, description=request.node.name)
    try:
        yield case
    finally:
        if case.lab is not None and case.targets:
            case.clear()
        outcome = request.node.stash.get(OUTCOME_KEY, {}).get("call")
        passed = outcome is not None and outcome.passed
        error = ""
        if outcome is not None and not outcome.passed:
            error = str(outcome.longrepr).strip().splitlines()[-1][:120] if outcome.longrepr else "failed"
        if case.labels or case.hand_labels:
            counts = {label: case.fired(rule_id) for rule_id, label in case.labels.items()}
            counts.update(case.hand_labels)
        else:
            counts = {case.description: case.fired() + case.by_hand}
        for label, injected in counts.items():
            # carried by the test's report, so that the session's summary (tests/conftest.py) sees
            # it also when the test ran on a pytest-xdist worker
            line = FaultLine(label, injected, passed and injected > 0, dict(case.lost), error)
            request.node.user_properties.append((FAULT_LINE, asdict(line)))
        if passed:
            silent = [label for label, n in counts.items() if n == 0]
            assert not silent, f"{silent}: the fault never fired, so this case proves nothing"
