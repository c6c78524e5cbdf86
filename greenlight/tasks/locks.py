"""The global concurrency limits the flows hold, acquired strictly: a limit that does not exist is
an error naming it and its fix (``greenlight setup`` creates them), never a silent skip.

A bounded wait (``timeout_seconds``) is a wait for a *holder* to let go. Prefect counts the time
its API takes to answer inside that timeout, so a loaded server could make a free lock look held
for a short wait (CI: cleanup, waiting 2 s, said a release was running while nothing held the
lock). So the wait is measured against holders: a lock nobody holds when asked gets
``API_GRACE_S`` more for the API to grant it, and a wait that runs out says which it was:
LockHeld when a holder kept it, TransientError when the API did not grant a free lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from greenlight.errors import LockHeld, NotFound, TransientError

#: how much longer than the caller's wait a lock nobody holds is given for the API to grant it
API_GRACE_S = 30.0


def _missing(name: str) -> NotFound:
    return NotFound(
        f"global concurrency limit {name!r} does not exist in the Prefect API: "
        "run `greenlight setup` (it creates the release and traffic locks of every environment)"
    )


def held_slots(name: str) -> int:
    """How many slots of the global concurrency limit ``name`` are held now (NotFound, saying to
    run ``greenlight setup``, when it does not exist; errors reaching the API propagate)."""
    with get_client(sync_client=True) as client:
        try:
            return int(client.read_global_concurrency_limit_by_name(name).active_slots)
        except ObjectNotFound as e:
            raise _missing(name) from e


def limit_exists(name: str) -> bool:
    """Whether the global concurrency limit ``name`` exists (errors reaching the API propagate)."""
    try:
        held_slots(name)
    except NotFound:
        return False
    return True


@contextmanager
def hold(name: str, *, lease_duration: float, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` for the block, the lease renewed
    while it runs. ``timeout_seconds`` bounds the wait for a holder to let go (None waits on):
    LockHeld after it when someone holds the slot; a slot nobody held when asked gets
    ``API_GRACE_S`` more, then TransientError (the API did not grant a free lock). NotFound,
    saying to run ``greenlight setup``, when the limit does not exist."""
    wait = timeout_seconds
    if timeout_seconds is not None and held_slots(name) == 0:
        wait = timeout_seconds + API_GRACE_S
    with ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(name, occupy=1, strict=True, timeout_seconds=wait, lease_duration=lease_duration)
            )
        except ConcurrencySlotAcquisitionError as e:
            try:
                missing = not limit_exists(name)
            except Exception:  # the API is not answering: Prefect's own error says more
                missing = False
            if missing:
                raise _missing(name) from e
            raise
        except TimeoutError as e:
            if wait == timeout_seconds or held_slots(name) > 0:
                raise LockHeld(f"{name} is held: not acquired within {timeout_seconds:g} s") from e
            raise TransientError(
                f"the Prefect API did not grant {name} within {wait:g} s, though nothing holds it"
            ) from e
        yield
