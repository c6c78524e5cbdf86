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
  ``GREENLIGHT_GITHUB_WEBHOOK_SECRET`` -> ``greenlight-github-webhook-secret``,
  ``GREENLIGHT_SLACK_SIGNING_SECRET`` -> ``greenlight-slack-signing-secret``,
  ``GREENLIGHT_SCRATCH_DATABASE_URL`` -> ``greenlight-scratch-database-url`` and
  ``GREENLIGHT_REGISTRY_USERNAME`` + ``GREENLIGHT_REGISTRY_PASSWORD`` ->
  ``greenlight-registry-credentials`` (``{"username": ..., "password": ...}``) and
  ``GREENLIGHT_GITHUB_PACKAGES_TOKEN`` -> ``greenlight-github-packages-token``. Values are never
  printed, and an existing block is left as it is.

:func:`expected_objects` lists all of these without touching the API (``greenlight doctor``
checks them; :func:`ensure_setup` creates exactly what it lists). The GitHub triggers are
declared in prefect.yaml and created by ``prefect deploy``; the backup dead man's switch is an
automation with notification blocks that setup creates or updates for each profile that turns it
on (greenlight.tasks.automations: the server sends it, no worker), and the PagerDuty routing key
(``GREENLIGHT_PAGERDUTY_ROUTING_KEY``) and SMTP password (``GREENLIGHT_SMTP_PASSWORD``) go to the
blocks the profiles' ``alerts`` sections name. Running setup twice changes nothing the second time.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, NamedTuple

from prefect.blocks.system import Secret
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, VariableCreate, WorkPoolCreate
from prefect.exceptions import ObjectNotFound

from greenlight.clients.email import PASSWORD_ENV as SMTP_PASSWORD_ENV
from greenlight.clients.pagerduty import ROUTING_KEY_ENV as PAGERDUTY_KEY_ENV
from greenlight.flows.concurrency import lock_name, traffic_lock_name
from greenlight.flows.promotion import FREEZE_VARIABLE
from greenlight.settings import available_environments, load_profile
from greenlight.tasks.automations import ensure_dead_mans_switch
from greenlight.tasks.cleanup import PACKAGES_TOKEN_BLOCK, PACKAGES_TOKEN_ENV
from greenlight.tasks.database import SCRATCH_URL_BLOCK, SCRATCH_URL_ENV
from greenlight.tasks.records import RECORD_KEY_BLOCK
from greenlight.tasks.registry import PASSWORD_ENV, REGISTRY_CREDENTIALS_BLOCK, USERNAME_ENV
from greenlight.webhook.slack import SIGNING_SECRET_BLOCK, SIGNING_SECRET_ENV

WORK_POOL = "greenlight-local"
WEBHOOK_SECRET_BLOCK = "greenlight-github-webhook-secret"
WEBHOOK_SECRET_ENV = "GREENLIGHT_GITHUB_WEBHOOK_SECRET"
SLACK_TOKEN_ENV = "SLACK_BOT_TOKEN"

# the kinds of object setup manages (SetupObject.kind)
WORK_POOL_KIND = "work pool"
LIMIT_KIND = "global concurrency limit"
VARIABLE_KIND = "variable"
SECRET_BLOCK_KIND = "secret block"


class SetupObject(NamedTuple):
    """One object ``greenlight setup`` manages: its kind (one of the ``*_KIND`` names), its name in
    the Prefect API, and why the flows need it."""

    kind: str
    name: str
    why: str


def freeze_variable(environment: str) -> str:
    """The Prefect Variable that freezes ``environment``'s releases."""
    return FREEZE_VARIABLE.format(env=environment.replace("-", "_"))


def _block_sources(environments: list[str]) -> dict[str, tuple[str, ...]]:
    """Secret block -> the environment variable(s) its value is made from (no entry: generated)."""
    sources: dict[str, tuple[str, ...]] = {}
    for env in environments:
        slack = load_profile(env).slack
        if slack and slack.token_secret_block:
            sources[slack.token_secret_block] = (SLACK_TOKEN_ENV,)
        alerts = load_profile(env).alerts
        if alerts.pagerduty and alerts.pagerduty.routing_key_secret_block:
            sources[alerts.pagerduty.routing_key_secret_block] = (PAGERDUTY_KEY_ENV,)
        if alerts.email and alerts.email.password_secret_block:
            sources[alerts.email.password_secret_block] = (SMTP_PASSWORD_ENV,)
    sources[WEBHOOK_SECRET_BLOCK] = (WEBHOOK_SECRET_ENV,)
    sources[SIGNING_SECRET_BLOCK] = (SIGNING_SECRET_ENV,)
    sources[SCRATCH_URL_BLOCK] = (SCRATCH_URL_ENV,)
    sources[REGISTRY_CREDENTIALS_BLOCK] = (USERNAME_ENV, PASSWORD_ENV)
    sources[PACKAGES_TOKEN_BLOCK] = (PACKAGES_TOKEN_ENV,)
    return sources


def expected_objects(environments: list[str] | None = None) -> list[SetupObject]:
    """Everything ``greenlight setup`` creates for ``environments`` (default: every profile), in the
    order it creates them; reads the profiles, never the Prefect API."""
    envs = environments or available_environments()
    out = [SetupObject(WORK_POOL_KIND, WORK_POOL, "the work pool prefect.yaml's deployments run on")]
    for env in envs:
        out += [
            SetupObject(LIMIT_KIND, lock_name(env), f"one release of {env} at a time"),
            SetupObject(
                LIMIT_KIND, traffic_lock_name(env), f"one traffic move or scale-down in {env} at a time"
            ),
            SetupObject(VARIABLE_KIND, freeze_variable(env), f"release freeze of {env} (off, or the reason)"),
        ]
    out.append(
        SetupObject(SECRET_BLOCK_KIND, RECORD_KEY_BLOCK, "the key that signs release records (generated)")
    )
    whys = {
        WEBHOOK_SECRET_BLOCK: "the GitHub webhook secret the receiver checks",
        SIGNING_SECRET_BLOCK: "Slack's signing secret the receiver checks",
        SCRATCH_URL_BLOCK: "the PostgreSQL server backup verification and drills restore into",
        REGISTRY_CREDENTIALS_BLOCK: "the credentials image resolution sends to the registry",
        PACKAGES_TOKEN_BLOCK: "the GitHub token image cleanup lists and deletes package versions with",
    }
    for block, env_vars in sorted(_block_sources(envs).items()):
        alert_whys: dict[tuple[str, ...], str] = {
            (PAGERDUTY_KEY_ENV,): "the PagerDuty routing key alerts page with",
            (SMTP_PASSWORD_ENV,): "the SMTP password alert emails are sent with",
        }
        why = alert_whys.get(env_vars) or whys.get(block, "the Slack bot token notifications post with")
        out.append(
            SetupObject(SECRET_BLOCK_KIND, block, f"{why} (from {' + '.join('$' + v for v in env_vars)})")
        )
    return out


def _block_value(env_vars: tuple[str, ...]) -> tuple[Any, str | None]:
    """(the block's value from the environment, None) or (None, why it cannot be made)."""
    missing = [v for v in env_vars if not os.environ.get(v)]
    if missing:
        names = " and ".join(f"${v}" for v in missing)
        return None, f"{names} {'is' if len(missing) == 1 else 'are'} not set"
    if env_vars == (USERNAME_ENV, PASSWORD_ENV):
        return {"username": os.environ[USERNAME_ENV], "password": os.environ[PASSWORD_ENV]}, None
    return os.environ[env_vars[0]], None


def _exists(client: SyncPrefectClient, obj: SetupObject) -> str | None:
    """The 'exists ...' line for ``obj`` when it exists, else None."""
    try:
        if obj.kind == WORK_POOL_KIND:
            return f"exists  work pool {obj.name} (type {client.read_work_pool(obj.name).type})"
        if obj.kind == LIMIT_KIND:
            limit = client.read_global_concurrency_limit_by_name(obj.name).limit
            return f"exists  global concurrency limit {obj.name} (limit {limit})"
        if obj.kind == VARIABLE_KIND:
            return (
                f"exists  variable {obj.name}" if client.read_variable_by_name(obj.name) is not None else None
            )
        client.read_block_document_by_name(obj.name, block_type_slug="secret", include_secrets=False)
        return f"exists  secret block {obj.name}"
    except ObjectNotFound:
        return None


def ensure_setup(environments: list[str] | None = None, dry_run: bool = False) -> list[str]:
    """Create what :func:`expected_objects` lists and is missing; one line per object: 'exists ...',
    'created ...', 'would create ...' or 'skipped ...' (a credential block whose variable is unset)."""
    envs = environments or available_environments()
    sources = _block_sources(envs)
    frozen_env = {freeze_variable(env): env for env in envs}
    lines: list[str] = []
    verb = "would create" if dry_run else "created"
    with get_client(sync_client=True) as client:
        for obj in expected_objects(envs):
            found = _exists(client, obj)
            if found:
                lines.append(found)
            elif obj.kind == WORK_POOL_KIND:
                if not dry_run:
                    client.create_work_pool(WorkPoolCreate(name=obj.name, type="process"))
                lines.append(f"{verb} work pool {obj.name} (type process)")
            elif obj.kind == LIMIT_KIND:
                if not dry_run:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=obj.name, limit=1)
                    )
                lines.append(f"{verb} global concurrency limit {obj.name} (limit 1): {obj.why}")
            elif obj.kind == VARIABLE_KIND:
                if not dry_run:
                    client.create_variable(VariableCreate(name=obj.name, value="off"))
                lines.append(
                    f"{verb} variable {obj.name} = off (set it to a reason to freeze {frozen_env[obj.name]} releases)"
                )
            elif obj.name not in sources:  # the record key: generated once
                if not dry_run:
                    Secret(value=secrets.token_hex(32)).save(obj.name)
                lines.append(
                    f"{verb} secret block {obj.name}: a new random key that signs release records (value not shown)"
                )
            else:
                value, why_not = _block_value(sources[obj.name])
                if why_not:
                    lines.append(f"skipped secret block {obj.name}: {why_not}")
                    continue
                if not dry_run:
                    Secret(value=value).save(obj.name)
                made_from = " + ".join("$" + v for v in sources[obj.name])
                lines.append(f"{verb} secret block {obj.name} from {made_from} (value not shown)")
    for env in envs:  # the dead man's switch: an automation the server notifies from (no worker)
        lines += ensure_dead_mans_switch(load_profile(env), dry_run=dry_run)
    return lines
