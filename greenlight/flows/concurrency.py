"""Running things at once, and keeping runs apart.

:func:`parallel` runs a function over items in threads that keep the Prefect run context (a
release gates its apps at once). The locks are Prefect global concurrency limits: one per
environment held by a release from before its approval to the end of its bake, and one held
briefly by whatever moves an environment's traffic or scales a colour down."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from greenlight.settings import Profile
from greenlight.tasks.locks import hold

T = TypeVar("T")
R = TypeVar("R")


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``fn`` over ``items`` in threads that keep the Prefect run context; first error re-raised."""
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    # one thread per item: each mostly waits (rollouts, gate windows), so a release of many apps
    # takes about as long as one of a single app
    with ThreadPoolExecutor(max_workers=min(64, len(items))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, fn, i) for i in items]
        return [f.result() for f in futures]


def lock_name(environment: str) -> str:
    """The global concurrency limit that serialises releases of one environment (held from before
    the approval to the end of the bake, so cleanup never scales down a colour a release holds)."""
    return f"greenlight-release-{environment}"


def traffic_lock_name(environment: str) -> str:
    """The global concurrency limit held, briefly, by whatever moves an environment's traffic or
    scales a colour down: a release's switches, a rollback, a switch by hand, cleanup's last check."""
    return f"greenlight-traffic-{environment}"


@contextmanager
def traffic_lock(profile: Profile) -> Iterator[None]:
    """Hold the environment's traffic lock (waits for it; the holders keep it for seconds)."""
    with hold(traffic_lock_name(profile.name), lease_duration=profile.release.lock_lease_s):
        yield
