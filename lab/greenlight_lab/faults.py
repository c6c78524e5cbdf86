"""Faults on demand for the lab's stand-ins.

A rule matches calls to one target (``kube-primary``, ``kube-dr``, ``gcs``, ``monitoring``,
``slack``, ``registry``, ``packages``, ``pagerduty``, ``smtp``, ``cloudflare``) and optionally a verb and a resource,
and applies to the next
``count`` matching calls (``count=-1``: until cleared), after letting ``skip`` through. Its mode is ``error`` (answer
``status``; for gRPC targets, UNAVAILABLE) or ``stall`` (hold the call ``stall_s`` seconds,
then answer normally).

Verbs are Kubernetes verbs for kube targets (get, list, watch, create, update, patch, delete)
and lower-case HTTP methods or RPC names for the others. Resources are plural resource names
(deployments, services, ...) for kube, the API method for Slack (chat.postMessage), ``zones`` or ``dns_records`` for Cloudflare, and
free-form otherwise. ``None`` in a rule matches anything.

Thread-safe: the gRPC stand-in calls it from worker threads, the HTTP ones from the loop.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["error", "stall"]


@dataclass
class FaultRule:
    target: str
    verb: str | None = None
    resource: str | None = None
    mode: Mode = "error"
    status: int = 503
    stall_s: float = 30.0
    count: int = 1
    retry_after: float | None = None
    skip: int = 0  # matching calls let through before the rule applies
    id: int = 0
    fired: int = field(default=0)

    def matches(self, target: str, verb: str | None, resource: str | None) -> bool:
        return (
            self.target == target
            and (self.verb is None or self.verb == verb)
            and (self.resource is None or self.resource == resource)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultRegistry:
    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._history: dict[int, FaultRule] = {}  # every rule ever added, spent or cleared, by id
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def add(self, rule: FaultRule) -> FaultRule:
        if rule.mode not in ("error", "stall"):
            raise ValueError(f"fault mode must be 'error' or 'stall', not {rule.mode!r}")
        if rule.count == 0 or rule.count < -1:
            raise ValueError(f"fault count must be positive or -1 (until cleared), not {rule.count}")
        with self._lock:
            rule.id = next(self._ids)
            self._rules.append(rule)
            self._history[rule.id] = rule
        return rule

    def clear(self, target: str | None = None) -> int:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if target is not None and r.target != target]
            return before - len(self._rules)

    def take(self, target: str, verb: str | None = None, resource: str | None = None) -> FaultRule | None:
        """The first rule matching this call, consumed by one; None when the call goes through."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(target, verb, resource):
                    if rule.skip > 0:
                        rule.skip -= 1
                        return None
                    rule.fired += 1
                    if rule.count > 0:
                        rule.count -= 1
                        if rule.count == 0:
                            self._rules.remove(rule)
                    return rule
        return None

    def get(self, rule_id: int) -> dict[str, Any] | None:
        """A rule by id, also once spent or cleared: ``fired`` tells how often it was applied."""
        with self._lock:
            rule = self._history.get(rule_id)
            return None if rule is None else {**rule.to_dict(), "active": rule in self._rules}

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_dict() for r in self._rules]
