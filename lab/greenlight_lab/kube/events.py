"""core/v1 Events as the kubelet and the scheduler write them, for the lab's pods.

A real kubelet's event recorder (client-go ``record.EventCorrelator``) does not create a new
Event for a repeat: an Event with the same involved object, reason, message, source and type
gets its ``count`` bumped and its ``lastTimestamp`` moved, under the same name. Names are
``<pod>.<16 hex digits>`` (the first occurrence's time in nanoseconds, as client-go does).
The kube-apiserver drops Events ``--event-ttl`` after their last write (1 h by default):
:class:`EventRecorder` deletes them on its next write after that.

``involvedObject`` carries kind Pod, name, namespace, uid, apiVersion v1, and for a
container's events ``fieldPath: spec.containers{<name>}``; ``source.component`` is
``kubelet`` (with ``host``) or ``default-scheduler``; ``reportingComponent`` likewise.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from greenlight_lab.kube.store import ApiError, Obj, Store

log = logging.getLogger(__name__)

EVENT_TTL_S = 3600.0  # kube-apiserver --event-ttl default
NODE = "lab-node"


@dataclass
class _Seen:
    name: str
    namespace: str
    last: float  # time.time() of its last write


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


class EventRecorder:
    """Writes (and aggregates, and expires) one cluster's pod Events into its store."""

    def __init__(
        self, store: Store, ttl_s: float = EVENT_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._clock = clock
        self._seen: dict[tuple[str, ...], _Seen] = {}

    def pod_event(
        self,
        pod: Obj,
        type_: str,
        reason: str,
        message: str,
        *,
        container: str | None = None,
        component: str = "kubelet",
    ) -> Obj | None:
        """Record one occurrence of an Event about ``pod`` (a stored Pod object); returns the Event
        as stored, None when it could not be written (the namespace is gone)."""
        now = self._clock()
        self._expire(now)
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
        field_path = f"spec.containers{{{container}}}" if container else ""
        key = (ns, uid, name, field_path, reason, message, component, type_)
        seen = self._seen.get(key)
        try:
            if seen is not None:
                existing = self.store.find("events", ns, seen.name)
                if existing is not None:
                    event = {**existing}
                    event["count"] = int(existing.get("count") or 1) + 1
                    event["lastTimestamp"] = _stamp(now)
                    event["metadata"] = {
                        k: v for k, v in existing["metadata"].items() if k != "resourceVersion"
                    }
                    seen.last = now
                    return self.store.update("events", event, ns, seen.name)
            event_name = f"{name}.{int(now * 1e9):x}"
            involved: Obj = {"kind": "Pod", "namespace": ns, "name": name, "uid": uid, "apiVersion": "v1"}
            if meta.get("resourceVersion"):
                involved["resourceVersion"] = meta["resourceVersion"]
            if field_path:
                involved["fieldPath"] = field_path
            source: Obj = {"component": component}
            if component == "kubelet":
                source["host"] = NODE
            body: Obj = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": event_name, "namespace": ns},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": source,
                "firstTimestamp": _stamp(now),
                "lastTimestamp": _stamp(now),
                "count": 1,
                "type": type_,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": NODE if component == "kubelet" else "",
            }
            stored = self.store.create("events", body, ns)
            self._seen[key] = _Seen(event_name, ns, now)
            return stored
        except ApiError as e:  # a namespace being deleted takes no new Events
            log.debug("event %s for pod %s/%s not written: %s", reason, ns, name, e.message)
            return None

    def _expire(self, now: float) -> None:
        for key, seen in list(self._seen.items()):
            if now - seen.last >= self.ttl_s:
                del self._seen[key]
                with contextlib.suppress(ApiError):
                    self.store.delete("events", seen.namespace, seen.name)
