"""The ``gateway-httproute`` router's view of a Gateway API HTTPRoute: snapshot and patch. Pure.

The route's rules send traffic to backendRefs; each colour has a Service of its own
(``<service>-<colour>``, selecting that colour's pods), and the colour's share of a rule is its
backendRef's ``weight`` (Gateway API: an integer 0..1000000, default 1; a request goes to a
backend with probability weight / sum of weights). Greenlight keeps every rule that names the
colours' Services at the same weights: 100 and 0 for blue-green, 90 and 10 for a progressive
step. A merge patch replaces ``spec.rules`` as a whole (a list), so the patch carries every rule
as read, with only those weights changed, guarded by the resourceVersion read.

A gateway acts on a new generation of the route only once its controller has programmed it
(GKE's takes tens of seconds, more for a new Gateway). The controller says so in
``status.parents[]``: per parentRef, ``Accepted`` and ``ResolvedRefs`` conditions whose
``observedGeneration`` is the route's generation, and, where the controller reports whether its
data plane has the change (GKE's ``Reconciled``, others' ``Programmed``), that one too. Until
every parent says so for the current generation, the weights read are the intent, not what the gateway does: :attr:`RouteSnapshot.programmed`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from greenlight.core.switch import Recorded, Weights
from greenlight.errors import InputInvalid

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
REQUIRED_CONDITIONS = ("Accepted", "ResolvedRefs")
# conditions some controllers add once the data plane has the change (GKE: Reconciled): when a
# parent reports one, it must be True at the route's generation too
DATA_PLANE_CONDITIONS = ("Reconciled", "Programmed")


def colour_service(service: str, colour: str) -> str:
    """The Service of one colour that an HTTPRoute's backendRef names: ``<service>-<colour>``."""
    return f"{service}-{colour}"


@dataclass(frozen=True)
class RouteSnapshot(Recorded):
    """An HTTPRoute as one read of it: its rules, which Service is which colour, its record and
    whether the gateway has programmed its current generation."""

    name: str
    resource_version: str
    rules: tuple[Mapping[str, Any], ...]
    backends: Mapping[str, str]  # colour -> the name of its Service
    annotations: Mapping[str, str] = field(default_factory=dict)
    namespace: str = ""
    generation: int = 0
    programmed: bool = True
    programmed_reason: str = ""

    kind = "HTTPRoute"

    @property
    def guard(self) -> str:
        """The route's generation (spec changes) and its record; not its resourceVersion, which
        every status write of the gateway's controller moves."""
        record = json.dumps(dict(sorted(self.annotations.items())), separators=(",", ":"))
        return f"generation {self.generation}, record {hashlib.sha256(record.encode()).hexdigest()[:12]}"

    def _colour_of(self, ref: Mapping[str, Any]) -> str | None:
        if (ref.get("kind") or "Service") != "Service" or (ref.get("group") or "") != "":
            return None
        name = ref.get("name")
        return next((c for c, svc in self.backends.items() if svc == name), None)

    def _colour_rules(self) -> list[int]:
        """Indexes of the rules that name any colour's Service."""
        return [
            i
            for i, rule in enumerate(self.rules)
            if any(self._colour_of(ref) for ref in rule.get("backendRefs") or [])
        ]

    @property
    def weights(self) -> dict[str, int]:
        """colour -> weight as the first rule naming the colours gives it (0 for a colour it omits)."""
        found = self._colour_rules()
        out = dict.fromkeys(self.backends, 0)
        if not found:
            return out
        for ref in self.rules[found[0]].get("backendRefs") or []:
            colour = self._colour_of(ref)
            if colour:
                out[colour] += _weight(ref)
        return out

    @property
    def problem(self) -> str | None:
        """Why the route cannot be switched: it is not a blue-green route of these Services (naming
        what to add), or it splits traffic between colours without an overlap recorded; None when
        it can."""
        services = " and ".join(f"Service {svc}" for svc in self.backends.values())
        found = self._colour_rules()
        if not found:
            return (
                f"HTTPRoute {self.name} has no backendRef naming {services}: it is not a blue-green route "
                "(add a backendRef per colour to its rule)"
            )
        for i in found:
            named = {self._colour_of(ref) for ref in self.rules[i].get("backendRefs") or []} - {None}
            missing = [svc for c, svc in self.backends.items() if c not in named]
            if missing:
                return (
                    f"HTTPRoute {self.name} rule {i} has no backendRef naming Service {', '.join(missing)}: "
                    "each colour needs one (weight 0 for the colour not serving)"
                )
        weights = [self._rule_weights(i) for i in found]
        if any(w != weights[0] for w in weights[1:]):
            return f"HTTPRoute {self.name}: its rules give the colours different weights ({weights})"
        if self.selected is None and self.overlap is None:
            shares = ", ".join(f"{c} {w}" for c, w in sorted(self.weights.items()))
            return f"HTTPRoute {self.name} splits traffic between colours ({shares}) without a record of why"
        return None

    def _rule_weights(self, index: int) -> dict[str, int]:
        out = dict.fromkeys(self.backends, 0)
        for ref in self.rules[index].get("backendRefs") or []:
            colour = self._colour_of(ref)
            if colour:
                out[colour] += _weight(ref)
        return out

    @property
    def selected(self) -> str | None:
        """The colour with all the weight of the route's colour rules (None when shared or none)."""
        found = self._colour_rules()
        if not found:
            return None
        serving = set()
        for i in found:
            serving |= {c for c, w in self._rule_weights(i).items() if w > 0}
        return next(iter(serving)) if len(serving) == 1 else None

    def patch(self, weights: Weights, annotations: Mapping[str, str | None]) -> dict[str, Any]:
        """Every rule as read, with each colour's backendRef weighted by ``weights`` (a colour not
        in it: 0), and the record; guarded by the resourceVersion."""
        rules = [copy.deepcopy(dict(rule)) for rule in self.rules]
        for rule in rules:
            for ref in rule.get("backendRefs") or []:
                colour = self._colour_of(ref)
                if colour:
                    ref["weight"] = int(weights.get(colour, 0))
        return {
            "metadata": {"resourceVersion": self.resource_version, "annotations": dict(annotations)},
            "spec": {"rules": rules},
        }


def _weight(ref: Mapping[str, Any]) -> int:
    value = ref.get("weight", 1)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 1


def programmed(route: Mapping[str, Any]) -> tuple[bool, str]:
    """Has every parent's controller accepted and resolved the route's current generation?
    (True, "") or (False, why not: which parent, which condition, which generation)."""
    meta = route.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    parents: Sequence[Mapping[str, Any]] = (route.get("spec") or {}).get("parentRefs") or []
    if not parents:
        return False, f"HTTPRoute {meta.get('name')} has no parentRefs: no Gateway serves it"
    statuses: Sequence[Mapping[str, Any]] = (route.get("status") or {}).get("parents") or []
    for parent in parents:
        pname = parent.get("name")
        pns = parent.get("namespace") or meta.get("namespace")
        status = next(
            (
                st
                for st in statuses
                if (st.get("parentRef") or {}).get("name") == pname
                and ((st.get("parentRef") or {}).get("namespace") or meta.get("namespace")) == pns
            ),
            None,
        )
        if status is None:
            return False, f"Gateway {pname} has not reported on the route yet (no status.parents entry)"
        conditions = {str(c.get("type")): c for c in status.get("conditions") or []}
        present = [k for k in DATA_PLANE_CONDITIONS if k in conditions]
        for kind in (*REQUIRED_CONDITIONS, *present):
            cond = conditions.get(kind)
            if cond is None:
                return False, f"Gateway {pname}: no {kind} condition yet"
            observed = int(cond.get("observedGeneration") or 0)
            if observed < generation:
                return False, (
                    f"Gateway {pname} has not programmed generation {generation} yet "
                    f"({kind} observed generation {observed})"
                )
            if cond.get("status") != "True":
                return False, (
                    f"Gateway {pname}: {kind} is {cond.get('status')} ({cond.get('reason')}: "
                    f"{cond.get('message') or 'no message'})"
                )
    return True, ""


def snapshot_route(route: Mapping[str, Any], backends: Mapping[str, str]) -> RouteSnapshot:
    """The snapshot of an HTTPRoute dict as the API serves it; ``backends``: colour -> its Service.

    Raises :class:`InputInvalid` when it has no ``metadata.name``."""
    meta = route.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise InputInvalid("cannot snapshot an HTTPRoute without metadata.name")
    ok, why = programmed(route)
    return RouteSnapshot(
        name=str(name),
        resource_version=str(meta.get("resourceVersion") or ""),
        rules=tuple(copy.deepcopy(list((route.get("spec") or {}).get("rules") or []))),
        backends=dict(backends),
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        namespace=str(meta.get("namespace") or ""),
        generation=int(meta.get("generation") or 0),
        programmed=ok,
        programmed_reason=why,
    )
