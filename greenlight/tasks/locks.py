"""The global concurrency limits the flows hold, acquired strictly: a limit that does not exist is
an error naming it and its fix (``greenlight setup`` creates them), never a silent skip."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from greenlight.errors import NotFound


def limit_exists(name: str) -> bool:
    """Whether the global concurrency limit ``name`` exists (errors reaching the API propagate)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return False
    return True


@contextmanager
def hold(name: str, *, lease_duration: float, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold one slot of the global concurrency limit ``name`` for the block (waiting up to
    ``timeout_seconds``: TimeoutError after; None waits on). NotFound, saying to run
    ``greenlight setup``, when the limit does not exist; the lease is renewed while the block runs."""
    with ExitStack() as stack:
        try:
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    strict=True,
                    timeout_seconds=timeout_seconds,
                    lease_duration=lease_duration,
                )
            )
        except ConcurrencySlotAcquisitionError as e:
            try:
                missing = not limit_exists(name)
            except Exception:  # the API is not answering: Prefect's own error says more
                missing = False
            if missing:
                raise NotFound(
                    f"global concurrency limit {name!r} does not exist in the Prefect API: "
                    "run `greenlight setup` (it creates the release and traffic locks of every environment)"
                ) from e
            raise
        yield
