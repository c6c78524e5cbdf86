"""``greenlight setup``: create, idempotently, what the flows need in the Prefect API.

- the work pool the deployments of prefect.yaml name (``greenlight-local``, type process);
- two global concurrency limits per environment: one release at a time (held across approval),
  and one traffic move or scale-down at a time (held briefly by switches, rollbacks, cleanup);
- a Prefect Variable per environment for release freezes (``greenlight_release_freeze_<env>``,
  created as "off"; set it to a reason to freeze releases);
- Secret block ``greenlight-release-record-key``: a random key, made once, that signs the release
  records (so that a ConfigMap writer cannot forge a "released" entry);
- Secret blocks for credentials the flows read, from the environment when given:
  ``SLACK_BOT_TOKEN`` -> the block each profile's ``slack.token_secret_block`` names,
  ``GREENLIGHT_GITHUB_WEBHOOK_SECRET`` -> ``greenlight-github-webhook-secret`` and
  ``GREENLIGHT_SLACK_SIGNING_SECRET`` -> ``greenlight-slack-signing-secret``. Values are never
  printed, and an existing block is left as it is.

The automations (GitHub triggers, the backup dead man's switch) are declared in prefect.yaml and
created by ``prefect deploy``. Running setup twice changes nothing the second time.
"""

from __future__ import annotations

import os
import secrets

from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, VariableCreate, WorkPoolCreate
from prefect.exceptions import ObjectNotFound

from greenlight.flows.release import FREEZE_VARIABLE, lock_name, traffic_lock_name
from greenlight.settings import available_environments, load_profile
from greenlight.tasks.records import RECORD_KEY_BLOCK
from greenlight.webhook.slack import SIGNING_SECRET_BLOCK, SIGNING_SECRET_ENV

WORK_POOL = "greenlight-local"
WEBHOOK_SECRET_BLOCK = "greenlight-github-webhook-secret"


def _secret_blocks(environments: list[str]) -> dict[str, str]:
    """block name -> environment variable holding its value."""
    blocks = {}
    for env in environments:
        slack = load_profile(env).slack
        if slack and slack.token_secret_block:
            blocks[slack.token_secret_block] = "SLACK_BOT_TOKEN"
    blocks[WEBHOOK_SECRET_BLOCK] = "GREENLIGHT_GITHUB_WEBHOOK_SECRET"
    blocks[SIGNING_SECRET_BLOCK] = SIGNING_SECRET_ENV
    return blocks


def ensure_setup(environments: list[str] | None = None, dry_run: bool = False) -> list[str]:
    """One line per object: 'exists ...', 'created ...' or 'would create ...'."""
    envs = environments or available_environments()
    lines: list[str] = []
    verb = "would create" if dry_run else "created"
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(WORK_POOL)
            lines.append(f"exists  work pool {WORK_POOL} (type {pool.type})")
        except ObjectNotFound:
            if not dry_run:
                client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
            lines.append(f"{verb} work pool {WORK_POOL} (type process)")
        for env in envs:
            for name, what in (
                (lock_name(env), f"one release of {env} at a time"),
                (traffic_lock_name(env), f"one traffic move or scale-down in {env} at a time"),
            ):
                try:
                    existing = client.read_global_concurrency_limit_by_name(name)
                    lines.append(f"exists  global concurrency limit {name} (limit {existing.limit})")
                except ObjectNotFound:
                    if not dry_run:
                        client.create_global_concurrency_limit(
                            GlobalConcurrencyLimitCreate(name=name, limit=1)
                        )
                    lines.append(f"{verb} global concurrency limit {name} (limit 1): {what}")
            var = FREEZE_VARIABLE.format(env=env.replace("-", "_"))
            if client.read_variable_by_name(var) is not None:
                lines.append(f"exists  variable {var}")
            else:
                if not dry_run:
                    client.create_variable(VariableCreate(name=var, value="off"))
                lines.append(f"{verb} variable {var} = off (set it to a reason to freeze {env} releases)")
    try:
        Secret.load(RECORD_KEY_BLOCK)
        lines.append(f"exists  secret block {RECORD_KEY_BLOCK}")
    except ValueError:
        if not dry_run:
            Secret(value=secrets.token_hex(32)).save(RECORD_KEY_BLOCK)
        lines.append(
            f"{verb} secret block {RECORD_KEY_BLOCK}: a new random key that signs release records (value not shown)"
        )
    for block, env_var in sorted(_secret_blocks(envs).items()):
        try:
            Secret.load(block)
            lines.append(f"exists  secret block {block}")
            continue
        except ValueError:
            pass
        value = os.environ.get(env_var)
        if not value:
            lines.append(f"skipped secret block {block}: ${env_var} is not set")
            continue
        if not dry_run:
            Secret(value=value).save(block)
        lines.append(f"{verb} secret block {block} from ${env_var} (value not shown)")
    return lines
