"""``greenlight setup``: create, idempotently, what the flows need in the Prefect API."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound

from flows.release import lock_name
from greenlight.settings import available_environments


def ensure_setup(environments: list[str] | None = None, dry_run: bool = False) -> list[str]:
    """One line per object: 'exists ...' or 'created ...' (or 'would create ...'). Running it twice changes nothing."""
    lines = []
    with get_client(sync_client=True) as client:
        for env in environments or available_environments():
            name = lock_name(env)
            try:
                existing = client.read_global_concurrency_limit_by_name(name)
                lines.append(f"exists  global concurrency limit {name} (limit {existing.limit})")
                continue
            except ObjectNotFound:
                pass
            if dry_run:
                lines.append(f"would create global concurrency limit {name} (limit 1)")
                continue
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            lines.append(f"created global concurrency limit {name} (limit 1): one release of {env} at a time")
    return lines
