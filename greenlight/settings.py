"""Environment profiles: one YAML file per environment, validated.

Profiles live in ``<config>/environments/<name>.yaml`` and the manifests a profile names (a
pre-deploy Job) in ``<config>/manifests/``, where ``<config>`` is the configuration directory:
``GREENLIGHT_CONFIG``, else ``./deployments`` when the working directory has one (a checkout of
this repository, or a team's own configuration repository laid out the same way).
``GREENLIGHT_ENVIRONMENTS`` names the profiles' directory alone (the lab points it at its own).
Nothing in the flows is specific to one platform: namespaces, apps, images, thresholds,
buckets and targets all come from here.

An invalid profile fails with :class:`ProfileInvalid` naming the file, the field and what
is wrong, e.g. ``deployments/environments/production.yaml: gate.max_error_rate: Input
should be less than or equal to 1``.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from greenlight.core.alerts import Kind as AlertKind
from greenlight.core.alerts import Severity as AlertSeverity
from greenlight.core.approval import check_public_key
from greenlight.core.dns import (
    drill_pattern_problem,
    in_zone,
    name_problem,
    normalise,
    target_problem,
    ttl_problem,
)
from greenlight.core.signatures import check_public_key as check_cosign_key
from greenlight.errors import InputInvalid, ProfileInvalid

#: the source checkout this module runs from (only meaningful in one: the product finds its
#: configuration through config_dir(), never here)
REPO_ROOT = Path(__file__).resolve().parent.parent
#: the blue-green shape Greenlight creates for an app's first release (shipped in the package)
APP_TEMPLATE = Path(__file__).resolve().parent / "templates" / "app.yaml"
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

Name = Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]
Seconds = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cluster(_Model):
    """Where the apps run: a kubeconfig (file and/or context), or the pod's own service account.

    ``in_cluster`` left out means: the kubeconfig when ``context`` or ``kubeconfig`` is named, else
    the pod's service account when running in a pod (``KUBERNETES_SERVICE_HOST`` set), else an error
    (greenlight.clients.kube.choose_config). ``true`` always uses the pod's service account;
    ``false`` always a kubeconfig (its current context when no ``context`` is named).
    """

    context: str | None = Field(
        None, description="the kubeconfig context of the cluster (with `kubeconfig`, or $KUBECONFIG)"
    )
    kubeconfig: str | None = Field(
        None, description="the kubeconfig file (default: $KUBECONFIG, ~/.kube/config), e.g. a mounted Secret"
    )
    in_cluster: bool | None = Field(
        None,
        description="use the pod's service account; unset: the default inside a pod when neither "
        "`context` nor `kubeconfig` is named",
    )
    request_timeout_s: Seconds = Field(
        10,
        description="each API call's client-side timeout: a call that hangs longer is retried as transient",
    )

    @model_validator(mode="after")
    def _one_way(self) -> Cluster:
        if self.in_cluster and (self.context is not None or self.kubeconfig is not None):
            raise ValueError(
                "set exactly one of 'context'/'kubeconfig' (a kubeconfig) or 'in_cluster: true' "
                "(the pod's service account)"
            )
        return self


class App(_Model):
    """One app of the environment: two Deployments (one per colour) behind a live and a preview Service."""

    name: Name = Field(
        description="the app's name: its Deployments are `<name>-<colour>`, its pods carry `app: <name>`"
    )
    service: Name = Field(
        description="the live Service, whose selector the switch moves between colours (`service-selector`); "
        "with `gateway-httproute`, the prefix of the colours' Services `<service>-<colour>` the HTTPRoute names"
    )
    route: Name | None = Field(
        None,
        description="`gateway-httproute`: the HTTPRoute whose backendRefs send this app's traffic to its colours' "
        "Services (default: the `service` name)",
    )
    preview_service: Name | None = Field(
        None, description="the Service that always selects the candidate colour (default `<service>-preview`)"
    )
    container: Name = Field(description="the container of the pod template whose image a release replaces")
    port: int = Field(8080, ge=1, le=65535, description="the port the Services forward to and probes call")
    health_path: str = Field("/healthz", pattern=r"^/", description="the path of the app's health endpoint")
    replicas: int = Field(2, ge=1, le=1000, description="replicas of each colour while it serves")
    image_repository: str = Field(
        description="the app's image repository, e.g. `ghcr.io/org/backend` (must match `registry.allowed`)"
    )

    @property
    def preview(self) -> str:
        return self.preview_service or f"{self.service}-preview"

    @property
    def route_name(self) -> str:
        return self.route or self.service


class SigningKey(_Model):
    """A cosign public key whose signatures count."""

    name: Name = Field(description="what refusals and release records call the key, e.g. `ci`")
    public_key: str = Field(
        description="the PEM public key (the contents of `cosign.pub`: ECDSA P-256, as `cosign generate-key-pair` makes)"
    )


class Signatures(_Model):
    """Whether every digest must carry a valid cosign signature (tag `sha256-<hex>.sig`) by a named key."""

    required: bool = Field(
        False,
        description="refuse a release (before approval, before deploying) unless every digest is signed by one of `signers`",
    )
    signers: list[SigningKey] = Field(
        default_factory=list, description="the cosign public keys whose signatures count (any one suffices)"
    )

    @model_validator(mode="after")
    def _keys(self) -> Signatures:
        if self.required and not self.signers:
            raise ValueError("signatures are required but 'signers' is empty: no signature could ever verify")
        names = [k.name for k in self.signers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"signers: {', '.join(twice)} is declared twice")
        for i, key in enumerate(self.signers):
            try:
                check_cosign_key(key.public_key)
            except ValueError as e:
                raise ValueError(f"signers.{i} ({key.name}): public_key {e}") from None
        return self


class RegistryCleanup(_Model):
    """Image cleanup (`greenlight cleanup-images`): which GHCR package versions of the apps' images
    may be deleted (docs/image-cleanup.md)."""

    retention_days: int = Field(
        30, ge=1, le=3650, description="versions pushed longer ago than this may be deleted (days)"
    )
    keep_newest: int = Field(
        10,
        ge=1,
        le=1000,
        description="the newest image versions of each package are always kept (signatures not counted)",
    )
    api_url: str = Field(
        "https://api.github.com",
        pattern=r"^https?://",
        description="the GitHub REST API (GitHub Enterprise: `https://HOST/api/v3`); `$GREENLIGHT_GITHUB_API_URL` overrides it",
    )
    owner_kind: Literal["org", "user"] = Field(
        "org", description="whether the packages' owner (`ghcr.io/<owner>/...`) is an organization or a user"
    )
    environments: list[str] = Field(
        default_factory=list,
        description="every environment whose apps share these repositories: their live and previous "
        "colours and release records are protected (this environment is always included)",
    )

    @field_validator("environments")
    @classmethod
    def _environment_names(cls, v: list[str]) -> list[str]:
        bad = [name for name in v if not ENV_NAME.match(name)]
        if bad:
            raise ValueError(f"malformed environment name(s): {', '.join(map(repr, bad))}")
        return v


class Registry(_Model):
    """Which images may be released, how a commit names them, and whose signatures they need."""

    allowed: list[str] = Field(
        min_length=1,
        description="image repository prefixes a release may use (e.g. `ghcr.io/org/`); anything else is refused",
    )
    image_template: str = Field(
        "{repository}:{commit}",
        description="how `promote --commit SHA` names an app's image: must contain `{repository}` and `{commit}`",
    )
    signatures: Signatures = Field(
        Signatures(),
        description="cosign signatures every digest must carry (see below; default: none required)",
    )
    cleanup: RegistryCleanup | None = Field(
        None, description="delete old GHCR image versions (none: `cleanup-images` refuses this environment)"
    )

    @field_validator("image_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{repository}" not in v or "{commit}" not in v:
            raise ValueError("must contain {repository} and {commit}")
        return v


class Person(_Model):
    """Someone who may answer approvals, declared once by every identity they have."""

    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^\S(.*\S)?$",
        description="the name `approvers` lists and release records show; unique (case-insensitive)",
    )
    slack: str | None = Field(
        None,
        pattern=r"^[UW][A-Z0-9]{8,20}$",
        description="their Slack user ID (`U0123ABCD`, from the Slack profile's menu): a click from it is verified",
    )
    github: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$",
        description="their GitHub login: a release started by their push counts them as its author",
    )


class Approval(_Model):
    """Whether a release pauses for a person's approval before it changes anything, and whose answers count."""

    required: bool = Field(False, description="pause every release for an approval (needs `approvers`)")
    approvers: list[str] = Field(
        default_factory=list,
        description="who may approve: names of `people` (or, with no people declared, bare names typed by whoever answers)",
    )
    people: list[Person] = Field(
        default_factory=list, description="everyone who may answer, declared once by every identity they have"
    )
    require_verified: bool = Field(
        True,
        description="only answers attested by Greenlight's Slack receiver count (a Slack user ID of `people`); "
        "answers from the CLI, the Prefect UI or the Prefect API are refused and the run keeps waiting "
        "(needs `people` with Slack IDs, `receiver_keys` and a `slack` section)",
    )
    receiver_keys: list[str] = Field(
        default_factory=list,
        description="the public Ed25519 keys (base64) of the Slack receivers whose attestations count (more than "
        "one while a key is rotated); `greenlight approval-key` makes a pair",
    )
    timeout_s: Seconds = Field(
        3600, description="how long a release waits for an answer; then it is refused, nothing changed"
    )
    allow_self_approval: bool = Field(
        False, description="let the release's author approve it (off: the four-eyes rule)"
    )

    @model_validator(mode="after")
    def _approvers(self) -> Approval:
        if self.required and not self.approvers:
            raise ValueError("approval is required but 'approvers' is empty")
        for what, values in (
            ("name", [p.name for p in self.people]),
            ("slack", [p.slack for p in self.people if p.slack]),
            ("github", [p.github for p in self.people if p.github]),
        ):
            folded = [v.casefold() for v in values]
            twice = sorted({v for v in values if folded.count(v.casefold()) > 1})
            if twice:
                raise ValueError(f"people: {what} {', '.join(twice)} is declared twice")
        for i, key in enumerate(self.receiver_keys):
            try:
                check_public_key(key)
            except ValueError as e:
                raise ValueError(f"receiver_keys.{i}: {e}") from None
        names = {p.name.casefold(): p for p in self.people}
        if self.people:
            unknown = [a for a in self.approvers if a.casefold() not in names]
            if unknown:
                raise ValueError(
                    f"approvers {', '.join(unknown)} are not declared in 'people' (each approver is a person's name)"
                )
        if self.required and self.require_verified:
            if not self.people:
                raise ValueError(
                    "require_verified needs 'people' with the approvers' Slack user IDs "
                    "(or set require_verified: false to accept typed names, recorded as unverified)"
                )
            if not self.receiver_keys:
                raise ValueError(
                    "require_verified needs 'receiver_keys': the public key of the Slack receiver "
                    "(`greenlight approval-key` makes a pair), or no answer could ever be verified"
                )
            silent = [a for a in self.approvers if not names[a.casefold()].slack]
            if silent:
                raise ValueError(
                    f"require_verified: approvers {', '.join(silent)} have no 'slack' user ID, so they could never approve"
                )
        return self


class Release(_Model):
    """How a release moves an environment from one colour to the other."""

    colours: tuple[Name, Name] = Field(("blue", "green"), description="the two colours' names (distinct)")
    colour_label: str = Field(
        "color", description="the pod label that tells the colours apart (the Services select on it)"
    )
    progress_deadline_s: Seconds = Field(
        600, description="how long the candidate colour's rollout may take to become ready"
    )
    bake_s: float = Field(
        600, ge=0, description="how long the live colour is watched after a switch, rolled back on breach"
    )
    scale_down_delay_s: float = Field(
        3600, ge=0, description="how long the previous colour keeps running after a switch (instant rollback)"
    )
    requires: str | None = Field(
        None,
        description="an environment whose releases the digests must have passed first (production: `staging`)",
    )
    approval: Approval = Field(Approval(), description="who must approve a release (see below)")
    on_bake_data_loss: Literal["keep-and-alert", "rollback"] = Field(
        "keep-and-alert",
        description="what the bake does when the live colour's metrics stop arriving: keep and alert, or roll back",
    )
    pre_deploy_job: str | None = Field(
        None,
        description="a Job manifest (e.g. migrations) run to completion before the candidate is deployed: "
        "absolute, or under `$GREENLIGHT_CONFIG/manifests`",
    )
    lock_lease_s: float = Field(
        60,
        ge=60,
        description="the environment's release lock is a lease renewed while the release runs: after a crash the "
        "server frees it within this (plus its sweep, 15 s by default), so a rerun does not wait for ever; "
        "Prefect's server accepts no lease under 60 s",
    )
    switch_mode: Literal["auto", "direct", "overlap"] = Field(
        "auto",
        description="how traffic moves: `direct` (one selector patch), `overlap` (select both colours, wait until "
        "the new one serves, then narrow to it) or `auto`: overlap for a Service behind GKE's container-native "
        "load balancing (annotation `cloud.google.com/neg`, which detaches old endpoints before attaching new "
        "ones), direct otherwise",
    )
    propagation_s: float = Field(
        10,
        ge=0,
        description="how long the data plane may take to act on an endpoint change (kube-proxy on every node, a NEG "
        "attaching after its health checks): a switch waits for it unless requests are seen arriving sooner, and "
        "a colour out of the live Service is not scaled down before it has passed",
    )
    max_drain_s: float = Field(
        300,
        ge=0,
        description="the longest cleanup waits for a colour out of the live Service to serve a whole quiet window "
        "(kept-alive connections can hold it for ever); then it is scaled down, and says so",
    )
    settle_timeout_s: Seconds = Field(
        60,
        description="how long the switch waits for the live Endpoints to show the new colour before giving up",
    )

    @field_validator("colours")
    @classmethod
    def _distinct(cls, v: tuple[str, str]) -> tuple[str, str]:
        if v[0] == v[1]:
            raise ValueError("the two colours must differ")
        return v


class Traffic(_Model):
    """What routes an app's live traffic to its colours (the router), and how a release moves it."""

    router: Literal["service-selector", "gateway-httproute"] = Field(
        "service-selector",
        description="`service-selector`: the live Service's selector names the colour; `gateway-httproute`: a "
        "Gateway API HTTPRoute (GKE Gateway and others) sends traffic to the colours' Services by backendRef "
        "weights (0/100), each move verified by the route's status and the traffic that arrives",
    )
    progressive: list[int] = Field(
        [],
        description="`gateway-httproute` only: the new colour's share at each step before it gets all of it, "
        "e.g. `[10, 50]`; the gate judges the new colour at each step, and a breach at any step rolls back",
    )

    @field_validator("progressive")
    @classmethod
    def _ascending(cls, v: list[int]) -> list[int]:
        if any(not 0 < w < 100 for w in v):
            raise ValueError(f"each step is a share between 1 and 99 (100 is the switch itself), got {v}")
        if any(b <= a for a, b in itertools.pairwise(v)):
            raise ValueError(f"the steps must rise, got {v}")
        return v

    @model_validator(mode="after")
    def _progressive_needs_weights(self) -> Traffic:
        if self.progressive and self.router != "gateway-httproute":
            raise ValueError(
                "progressive: a Service selector cannot split traffic by share; use router gateway-httproute"
            )
        return self


class LatencyLimit(_Model):
    """An absolute latency limit the candidate must stay under in every interval."""

    percentile: Literal[50, 95, 99] = Field(description="which percentile of the request latency")
    max_ms: Seconds = Field(description="its limit in milliseconds")


class SmokeProbe(_Model):
    """One HTTP request the gate (and `greenlight smoke`) sends to each colour through its Service."""

    path: str = Field("/", pattern=r"^/", description="the path to GET")
    expect_status: int = Field(200, ge=100, le=599, description="the status it must answer")
    timeout_s: Seconds = Field(5, description="how long to wait for the answer")


class Gate(_Model):
    """The health gate a candidate colour must pass before traffic moves to it."""

    interval_s: Seconds = Field(60, description="the length of one measured interval (production: minutes)")
    intervals: int = Field(3, ge=1, description="how many passing intervals the gate needs")
    min_requests: int = Field(
        100, ge=1, description="requests an interval needs to count; fewer make it inconclusive"
    )
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="the highest 5xx rate (0.05 = 5%) in an interval"
    )
    latency: list[LatencyLimit] = Field(
        default_factory=lambda: [LatencyLimit(percentile=95, max_ms=1000)],
        description="absolute latency limits, each checked in every interval",
    )
    max_error_rate_increase: float = Field(
        0.02,
        ge=0,
        le=1,
        description="relative to the live colour: the candidate's error rate may exceed the live one by at most "
        "this much (0.02 = 2 points)",
    )
    max_latency_ratio: float = Field(
        1.5,
        ge=1,
        description="relative to the live colour: a latency percentile may be at most this ratio of the live one",
    )
    latency_ratio_floor_ms: float = Field(
        10,
        ge=0,
        description="the live percentile is taken as at least this (ms), so that 1 ms against 2 ms is no regression",
    )
    relative: bool = Field(
        True,
        description="also judge the candidate against the live colour, both under the same synthetic traffic in the "
        "same windows (false: absolute limits only, and the report says so)",
    )
    confidence: float = Field(
        0.98,
        ge=0.5,
        lt=1,
        description="how sure a relative regression must be before it fails the gate (1 - Fisher's p-value)",
    )
    synthetic_rps: float = Field(
        10, ge=0, description="synthetic requests per second the gate sends to each colour while it measures"
    )
    probe_via: Literal["apiserver", "cluster-dns"] = Field(
        "apiserver",
        description="how probes reach a Service: through the Kubernetes API server's service proxy (works from "
        "anywhere with cluster credentials) or by cluster DNS (when the flows run inside the cluster)",
    )
    max_extra_intervals: int = Field(2, ge=0, description="inconclusive intervals tolerated before giving up")
    smoke: list[SmokeProbe] = Field(
        default_factory=lambda: [SmokeProbe()],
        description="HTTP probes every colour must answer before it is measured",
    )


class Monitoring(_Model):
    """Where the gate reads the apps' request metrics (Cloud Monitoring, as Managed Prometheus writes them)."""

    project: str = Field(description="the Google Cloud project whose Cloud Monitoring holds the metrics")
    requests_metric: str = Field(
        "prometheus.googleapis.com/http_requests_total/counter",
        description="the request counter's metric type (status code and colour as labels)",
    )
    latency_metric: str = Field(
        "prometheus.googleapis.com/http_request_duration_seconds/histogram",
        description="the request latency histogram's metric type",
    )
    status_label: str = Field(
        "code", description="the metric label holding the HTTP status (`code` or `status`)"
    )
    colour_label: str = Field(
        "color",
        description="the metric label holding the pod's colour (PodMonitoring `targetLabels.fromPod`)",
    )
    namespace_label: str = Field(
        "namespace", description="the resource label of `prometheus_target` naming the namespace"
    )
    app_label: str = Field("job", description="the resource label that names the app (GMP: the scrape job)")
    custom_prefix: str = Field(
        "custom.googleapis.com/greenlight",
        description="the prefix of the metrics Greenlight writes itself (release and backup outcomes)",
    )
    ingestion_delay_s: float = Field(
        5,
        ge=0,
        description="seconds a new point takes to become readable; a gate waits this long after each interval",
    )


class Slack(_Model):
    """Where releases are announced and approvals asked for."""

    channel: str = Field(description="the channel releases post to, e.g. `#releases`")
    token_secret_block: str | None = Field(
        None,
        description="the Prefect Secret block holding the bot token (`greenlight setup` fills it from `$SLACK_BOT_TOKEN`)",
    )


class GitHub(_Model):
    """Which GitHub workflow runs start a release of this environment (the webhook receiver's filter)."""

    repository: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", description="`OWNER/NAME`")
    workflow: str = Field(description="the workflow's name, as in `workflow_run.name`")
    branch: str = Field(description="a successful run on this branch releases to this environment")
    receiver_keys: list[str] = Field(
        default_factory=list,
        description="the public Ed25519 keys (base64) of the GitHub receivers whose commit proofs count: only "
        "a commit time they vouch for counts in the lead time (the receiver's approval key; "
        "`greenlight approval-key` makes a pair)",
    )

    @field_validator("receiver_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for i, key in enumerate(keys):
            try:
                check_public_key(key)
            except ValueError as e:
                raise ValueError(f"receiver_keys.{i}: {e}") from None
        return [k.strip() for k in keys]


class Probe(_Model):
    """A table the restored database must hold."""

    table: str = Field(
        pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$", description="`table` or `schema.table`"
    )
    min_rows: int = Field(0, ge=0, description="the fewest rows it may have")
    timestamp_column: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_]*$",
        description="a column whose newest value measures the achieved RPO (how old the newest row is)",
    )


class SqlProbe(_Model):
    """A query the restored database must answer with true."""

    name: str = Field(description="what the check is called in the report")
    sql: str = Field(description="a query returning one boolean (run read-only on the scratch database)")
    expect_true: bool = Field(True, description="the answer it must give")


class Backups(_Model):
    """Where the database dumps and the configuration bundles are, and what makes a dump trusted."""

    bucket: str = Field(description="the GCS bucket of the database dumps")
    replica_bucket: str | None = Field(
        None, description="a copy of the bucket (another region): the newest dump must be there too"
    )
    prefix: str = Field("", description="the dumps' object prefix in the bucket")
    name_pattern: str = Field(
        r"(?P<date>\d{4}-\d{2}-\d{2}T\d{4}Z)\.sql\.gz$",
        description="a regular expression a dump's object name matches, with a named group `(?P<date>...)`",
    )
    format: Literal["plain", "plain-gzip", "custom", "directory", "tar"] = Field(
        "plain-gzip", description="the dumps' format (pg_dump `-F`; plain-gzip: a gzipped SQL file)"
    )
    database: str = Field(description="the database the dumps are of")
    rpo_target_s: Seconds = Field(86400, description="the newest dump may be at most this old")
    size_drop_tolerance: float = Field(
        0.2,
        ge=0,
        le=1,
        description="the newest dump may be at most this much smaller than the one before (0.2 = 20%)",
    )
    probes: list[Probe] = Field(default_factory=list, description="tables the restored database must hold")
    sql_probes: list[SqlProbe] = Field(
        default_factory=list, description="queries the restored database must answer"
    )
    config_bucket: str | None = Field(
        None, description="the GCS bucket `backup-config` exports the namespace's manifests to"
    )
    config_prefix: str = Field("config/", description="the configuration bundles' prefix in that bucket")
    config_retention: int = Field(30, ge=1, description="how many configuration bundles to keep")
    restore_jobs: int = Field(2, ge=1, description="parallel jobs of the verifying restore (pg_restore `-j`)")

    @field_validator("name_pattern")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            rx = re.compile(v)
        except re.error as e:
            raise ValueError(f"not a valid regular expression: {e}") from e
        if "date" not in rx.groupindex:
            raise ValueError("must have a named group (?P<date>...)")
        return v


class DisasterRecovery(_Model):
    """A DR environment: what `greenlight drill` restores into it and the targets it must meet."""

    source: str = Field(description="the environment whose backups and digests the drill restores")
    rto_target_s: Seconds = Field(
        3600, description="recovery time objective: the drill must be serving within this"
    )
    rpo_target_s: Seconds = Field(
        86400, description="recovery point objective: the restored data may be at most this old"
    )


class MonitoringCode(_Model):
    """Monitoring as code: the alert policy and uptime check files, and the values their placeholders take."""

    directory: str = Field(
        "monitoring",
        description="the definition files' directory: absolute, or relative to the configuration directory",
    )
    cluster: str | None = Field(None, description="the GKE cluster's name, for `{cluster}`")
    backend_host: str | None = Field(None, description="the backend's public host name, for `{backend_host}`")
    frontend_host: str | None = Field(
        None, description="the frontend's public host name, for `{frontend_host}`"
    )
    database_id: str | None = Field(
        None, description="the Cloud SQL instance as `PROJECT:INSTANCE`, for `{database_id}`"
    )
    notification_channels: list[str] = Field(
        default_factory=list,
        description="the channels alerts notify (`projects/P/notificationChannels/ID`), for `{notification_channels}`",
    )


EMAIL = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")


class AlertRoute(_Model):
    """Where alerts of one level go."""

    slack: list[str] | None = Field(
        None, description='Slack channels, e.g. `["#incidents"]` (unset: the profile\'s `slack.channel`)'
    )
    pagerduty: bool = Field(False, description="trigger a PagerDuty incident (needs `alerts.pagerduty`)")
    email: list[str] = Field([], description="email recipients (needs `alerts.email`)")

    @field_validator("email")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not EMAIL.match(a)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(repr(a) for a in bad)}")
        return v


class PagerDuty(_Model):
    """PagerDuty's Events API v2 (the routing key of a service's integration)."""

    routing_key_secret_block: str | None = Field(
        None,
        description="the Prefect Secret block holding the routing key when `$GREENLIGHT_PAGERDUTY_ROUTING_KEY` "
        "is unset (`greenlight setup` fills it from that variable)",
    )


class Email(_Model):
    """The SMTP server alert emails are sent through."""

    host: str = Field(min_length=1, description="the SMTP server")
    port: int = Field(587, ge=1, le=65535, description="its port")
    sender: str = Field(description="the From address")
    starttls: bool = Field(True, description="upgrade the connection with STARTTLS before sending")
    username: str | None = Field(None, description="the SMTP login (none: send without AUTH)")
    password_secret_block: str | None = Field(
        None,
        description="the Prefect Secret block holding the password when `$GREENLIGHT_SMTP_PASSWORD` is unset",
    )
    timeout_s: Seconds = Field(10, description="how long one SMTP conversation may take")

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        if not EMAIL.match(v):
            raise ValueError(f"not an email address: {v!r}")
        return v


class DeadMansSwitch(_Model):
    """The alert when no backup of the environment has verified in a window (a Prefect
    automation: the server sends it itself, no worker needed)."""

    enabled: bool = Field(
        False, description="create the automation (`greenlight setup`); production turns it on"
    )
    within_s: Seconds = Field(
        93600,
        description="the window in which a backup of the environment must verify (26 h): its "
        "`greenlight.backup.verified` event keeps the switch quiet",
    )


class Alerts(_Model):
    """Alerts by severity: how bad each kind is and where each level goes."""

    production: bool | None = Field(
        None,
        description="use production's default severities (default: when the environment is named `production`)",
    )
    severities: dict[AlertKind, AlertSeverity] = Field(
        {}, description="a severity (P0-P3) per alert kind, over the defaults (see docs/alerts.md)"
    )
    routes: dict[AlertSeverity, AlertRoute] = Field(
        {},
        description="the channels of each level; a level not listed goes to the profile's Slack channel",
    )
    pagerduty: PagerDuty | None = Field(
        None, description="PagerDuty (needed by a route with `pagerduty: true`)"
    )
    email: Email | None = Field(None, description="SMTP (needed by a route with email recipients)")
    retries: int = Field(
        3, ge=1, le=10, description="tries per channel before an alert counts as not delivered"
    )
    retry_delay_s: Seconds = Field(1, description="the first pause between tries (doubled each time)")
    dead_mans_switch: DeadMansSwitch = Field(
        DeadMansSwitch(), description="the alert when backup verification stops running"
    )

    @model_validator(mode="after")
    def _routes(self) -> Alerts:
        for level, route in self.routes.items():
            where = f"routes.{level.value}"
            if route.pagerduty and self.pagerduty is None:
                raise ValueError(f"{where}.pagerduty: true, but there is no 'alerts.pagerduty' section")
            if route.email and self.email is None:
                raise ValueError(f"{where}.email: recipients given, but there is no 'alerts.email' section")
            if route.slack == [] and not route.pagerduty and not route.email:
                raise ValueError(f"{where}: the level goes nowhere (no Slack channel, PagerDuty or email)")
        return self


class Dns(_Model):
    """The DNS record that sends users to the environment, and where a failover points it (Cloudflare)."""

    provider: Literal["cloudflare"] = Field(
        "cloudflare", description="the DNS provider's API (only Cloudflare)"
    )
    zone: str = Field(description="the zone's name, e.g. `example.com`")
    record: str = Field(description="the production record's full name, e.g. `app.example.com` (in `zone`)")
    type: Literal["A", "CNAME"] = Field("A", description="the production record's type")
    primary_target: str = Field(
        description="where the record points normally: an IPv4 address (A) or a host name (CNAME)"
    )
    dr_target: str = Field(
        description="where a failover points it, and the drill's record: the DR environment's address or host name"
    )
    ttl: int = Field(60, description="the TTL a failover sets, seconds: 1 (automatic) or 30..86400")
    drill_record: str = Field(
        "drill-{drill_id}",
        description="the drill-only record's name, relative to `zone`; `{drill_id}` is the drill's id",
    )
    token_secret_block: str | None = Field(
        "greenlight-cloudflare-api-token",
        description="the Prefect Secret block holding the API token when `$CLOUDFLARE_API_TOKEN` is not set",
    )

    @model_validator(mode="after")
    def _names(self) -> Dns:
        for field, value in (("zone", self.zone), ("record", self.record)):
            problem = name_problem(value)
            if problem:
                raise ValueError(f"{field}: {value!r} {problem}")
        if not in_zone(self.record, self.zone):
            raise ValueError(f"record: {self.record} is not in zone {self.zone}")
        for field, value in (("primary_target", self.primary_target), ("dr_target", self.dr_target)):
            problem = target_problem(self.type, value)
            if problem:
                raise ValueError(f"{field}: {problem}")
        if normalise(self.primary_target) == normalise(self.dr_target):
            raise ValueError("primary_target and dr_target are the same: a failover would change nothing")
        for problem in (ttl_problem(self.ttl), drill_pattern_problem(self.drill_record)):
            if problem:
                raise ValueError(problem if "TTL" in problem else f"drill_record: {problem}")
        return self


class Profile(_Model):
    """One environment: where its apps run, how they are released, gated, backed up and recovered."""

    name: str = Field(description="the environment's name; must match the file name (default: the file name)")
    cluster: Cluster = Field(description="the Kubernetes cluster of the environment")
    namespace: Name = Field(description="the namespace of the apps")
    apps: list[App] = Field(min_length=1, description="the apps released together (names unique)")
    registry: Registry = Field(description="which images may be released")
    release: Release = Field(Release(), description="how a release proceeds")
    traffic: Traffic = Field(Traffic(), description="what routes live traffic, and how a release moves it")
    gate: Gate = Field(Gate(), description="the health gate")
    monitoring: Monitoring = Field(description="where the gate reads metrics")
    slack: Slack | None = Field(None, description="release announcements and approvals (none: no Slack)")
    github: GitHub | None = Field(None, description="which GitHub workflow runs release this environment")
    backups: Backups | None = Field(None, description="database dumps and configuration bundles to verify")
    dr: DisasterRecovery | None = Field(
        None, description="makes this a DR environment, the target of a drill"
    )
    monitoring_code: MonitoringCode | None = Field(
        None, description="alert policies and uptime checks kept as files (`greenlight monitoring`)"
    )
    alerts: Alerts = Field(Alerts(), description="alerts by severity: P0-P3, Slack, PagerDuty, email")
    dns: Dns | None = Field(
        None, description="the DNS record a failover moves to DR, and the drill's DNS record (none: no DNS)"
    )

    @model_validator(mode="after")
    def _unique_apps(self) -> Profile:
        names = [a.name for a in self.apps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"app names must be unique; repeated: {', '.join(dupes)}")
        approval = self.release.approval
        if approval.required and approval.require_verified and self.slack is None:
            raise ValueError(
                "release.approval.require_verified: verified answers come from Slack, and this profile "
                "has no 'slack' section (add one, or set require_verified: false)"
            )
        for level, route in self.alerts.routes.items():
            if route.slack is None and self.slack is None and not route.pagerduty and not route.email:
                raise ValueError(
                    f"alerts.routes.{level.value}: the level goes nowhere (no Slack channel, PagerDuty or "
                    "email, and the profile has no 'slack' section)"
                )
        return self

    def app(self, name: str) -> App:
        for a in self.apps:
            if a.name == name:
                return a
        known = ", ".join(a.name for a in self.apps)
        raise InputInvalid(f"unknown app '{name}' in environment '{self.name}' (known: {known})")


def config_dir() -> Path:
    """The configuration directory: ``$GREENLIGHT_CONFIG``, else ``./deployments``. A missing one
    fails where it is needed, with what to set."""
    return Path(os.environ.get("GREENLIGHT_CONFIG") or Path.cwd() / "deployments")


def environments_dir() -> Path:
    return Path(os.environ.get("GREENLIGHT_ENVIRONMENTS") or config_dir() / "environments")


def manifests_dir() -> Path:
    return config_dir() / "manifests"


def manifest_path(name: str, field: str) -> Path:
    """A manifest a profile names (``field``): absolute, or under the configuration's manifests/."""
    path = Path(name)
    path = path if path.is_absolute() else manifests_dir() / path
    if not path.is_file():
        raise InputInvalid(
            f"{field}: no manifest at {path} (relative names are read from $GREENLIGHT_CONFIG/manifests)"
        )
    return path


def available_environments(directory: Path | None = None) -> list[str]:
    d = directory or environments_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _environments_enum() -> dict[str, list[str]]:
    """The profiles' environments as the only choices (a drop-down in the Prefect UI's forms), as
    they are when the flows are imported (by ``prefect deploy``); the flow still validates the name."""
    names = available_environments()
    return {"enum": names} if names else {}


#: an environment's name, as a parameter of a flow: a choice among the profiles in the forms
Environment = Annotated[str, Field(json_schema_extra=_environments_enum())]


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{path}: {where}: {e['msg']}")
    return "\n".join(lines)


def load_profile(name: str, directory: Path | None = None) -> Profile:
    """Read and validate the profile of environment ``name``."""
    if not ENV_NAME.match(name or ""):
        raise InputInvalid(f"environment name {name!r} is malformed (lowercase letters, digits and '-')")
    d = directory or environments_dir()
    path = d / f"{name}.yaml"
    if not path.is_file():
        if not d.is_dir():
            raise InputInvalid(
                f"unknown environment '{name}': no profiles directory {d} (set GREENLIGHT_CONFIG to the "
                "directory holding environments/ and manifests/, or run from one that has deployments/)"
            )
        known = ", ".join(available_environments(d)) or "none"
        raise InputInvalid(f"unknown environment '{name}': no {path} (known: {known})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileInvalid(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ProfileInvalid(f"{path}: (top level): expected a mapping, got {type(raw).__name__}")
    raw.setdefault("name", name)
    if raw["name"] != name:
        raise ProfileInvalid(f"{path}: name: '{raw['name']}' does not match the file name '{name}'")
    try:
        return Profile.model_validate(raw)
    except ValidationError as e:
        raise ProfileInvalid(_format_errors(path, e)) from None
