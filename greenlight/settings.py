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

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from greenlight.core.approval import check_public_key
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
    """Where the apps run: a kubeconfig context, or the pod's own service account."""

    context: str | None = None
    kubeconfig: str | None = None
    in_cluster: bool = False
    # each API call's client-side timeout: a call that hangs longer is retried as transient
    request_timeout_s: Seconds = 10

    @model_validator(mode="after")
    def _one_way(self) -> Cluster:
        if self.in_cluster == (self.context is not None):
            raise ValueError("set exactly one of 'context' (a kubeconfig context) or 'in_cluster: true'")
        return self


class App(_Model):
    name: Name
    service: Name  # the live Service
    preview_service: Name | None = None  # defaults to "<service>-preview"
    container: Name
    port: int = Field(8080, ge=1, le=65535)
    health_path: str = Field("/healthz", pattern=r"^/")
    replicas: int = Field(2, ge=1, le=1000)
    image_repository: str

    @property
    def preview(self) -> str:
        return self.preview_service or f"{self.service}-preview"


class Registry(_Model):
    allowed: list[str] = Field(min_length=1)
    image_template: str = "{repository}:{commit}"

    @field_validator("image_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{repository}" not in v or "{commit}" not in v:
            raise ValueError("must contain {repository} and {commit}")
        return v


class Person(_Model):
    """Someone who may answer approvals, declared once by every identity they have."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")
    slack: str | None = Field(None, pattern=r"^[UW][A-Z0-9]{8,20}$")  # Slack user ID (U0123ABCD)
    github: str | None = Field(None, pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")  # GitHub login


class Approval(_Model):
    required: bool = False
    # names of ``people`` (or, with no people declared, bare names typed by whoever answers)
    approvers: list[str] = Field(default_factory=list)
    people: list[Person] = Field(default_factory=list)
    # only answers attested by Greenlight's Slack receiver count (a Slack user ID of ``people``);
    # answers from the CLI, the Prefect UI or the Prefect API are refused and the run keeps waiting
    require_verified: bool = True
    # the public Ed25519 keys (base64) of the Slack receivers whose attestations count (more than
    # one while a key is rotated); `greenlight approval-key` makes a pair
    receiver_keys: list[str] = Field(default_factory=list)
    timeout_s: Seconds = 3600
    allow_self_approval: bool = False

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
    colours: tuple[Name, Name] = ("blue", "green")
    colour_label: str = "color"
    progress_deadline_s: Seconds = 600
    bake_s: float = Field(600, ge=0)
    scale_down_delay_s: float = Field(3600, ge=0)
    requires: str | None = None  # production: digests must have passed this environment
    approval: Approval = Approval()
    on_bake_data_loss: Literal["keep-and-alert", "rollback"] = "keep-and-alert"
    pre_deploy_job: str | None = None  # a Job manifest: absolute, or under $GREENLIGHT_CONFIG/manifests
    # the environment's release lock is a lease renewed while the release runs: after a crash the
    # server frees it within this (plus its sweep, 15 s by default), so a rerun does not wait for
    # ever; Prefect's server accepts no lease under 60 s
    lock_lease_s: float = Field(60, ge=60)
    # how traffic moves: "direct" (one selector patch), "overlap" (select both colours, wait until
    # the new one serves, then narrow to it) or "auto": overlap for a Service behind GKE's
    # container-native load balancing (annotation cloud.google.com/neg, which detaches old
    # endpoints before attaching new ones), direct otherwise
    switch_mode: Literal["auto", "direct", "overlap"] = "auto"
    # how long the data plane may take to act on an endpoint change (kube-proxy on every node,
    # a NEG attaching after its health checks): a switch waits for it unless requests are seen
    # arriving sooner, and a colour out of the live Service is not scaled down before it has passed
    propagation_s: float = Field(10, ge=0)
    # the longest cleanup waits for a colour out of the live Service to serve a whole quiet
    # window (kept-alive connections can hold it for ever); then it is scaled down, and says so
    max_drain_s: float = Field(300, ge=0)
    # how long the switch waits for the live Endpoints to show the new colour before giving up
    settle_timeout_s: Seconds = 60

    @field_validator("colours")
    @classmethod
    def _distinct(cls, v: tuple[str, str]) -> tuple[str, str]:
        if v[0] == v[1]:
            raise ValueError("the two colours must differ")
        return v


class LatencyLimit(_Model):
    percentile: Literal[50, 95, 99]
    max_ms: Seconds


class SmokeProbe(_Model):
    path: str = Field("/", pattern=r"^/")
    expect_status: int = Field(200, ge=100, le=599)
    timeout_s: Seconds = 5


class Gate(_Model):
    interval_s: Seconds = 60
    intervals: int = Field(3, ge=1)
    min_requests: int = Field(100, ge=1)
    max_error_rate: float = Field(0.05, ge=0, le=1)
    latency: list[LatencyLimit] = Field(default_factory=lambda: [LatencyLimit(percentile=95, max_ms=1000)])
    # relative to the live colour: error rate may exceed the live one by at most this many points,
    # a latency percentile may be at most this ratio of the live one
    max_error_rate_increase: float = Field(0.02, ge=0, le=1)
    max_latency_ratio: float = Field(1.5, ge=1)
    # the live percentile is taken as at least this (ms), so that 1 ms against 2 ms is no regression
    latency_ratio_floor_ms: float = Field(10, ge=0)
    # "off": judge on absolute limits only (the report says so); "on": a candidate is also
    # judged against the live colour, both under the same synthetic traffic in the same windows
    relative: bool = True
    # how sure a relative regression must be before it fails the gate (1 - Fisher's p-value)
    confidence: float = Field(0.98, ge=0.5, lt=1)
    synthetic_rps: float = Field(10, ge=0)
    # how probes reach a Service: through the Kubernetes API server's service proxy (works from
    # anywhere with cluster credentials) or by cluster DNS (when the flows run inside the cluster)
    probe_via: Literal["apiserver", "cluster-dns"] = "apiserver"
    max_extra_intervals: int = Field(2, ge=0)  # inconclusive intervals tolerated before giving up
    smoke: list[SmokeProbe] = Field(default_factory=lambda: [SmokeProbe()])


class Monitoring(_Model):
    project: str
    requests_metric: str = "prometheus.googleapis.com/http_requests_total/counter"
    latency_metric: str = "prometheus.googleapis.com/http_request_duration_seconds/histogram"
    status_label: str = "code"
    colour_label: str = "color"
    namespace_label: str = "namespace"  # a resource label of prometheus_target
    app_label: str = "job"  # the resource label that names the app (GMP: the scrape job)
    custom_prefix: str = "custom.googleapis.com/greenlight"
    # seconds a new point takes to become readable; a gate waits this long after each interval
    ingestion_delay_s: float = Field(5, ge=0)


class Slack(_Model):
    channel: str
    token_secret_block: str | None = None  # Prefect Secret block holding the bot token


class GitHub(_Model):
    """Which GitHub workflow runs start a release of this environment (the webhook receiver's filter)."""

    repository: str = Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")  # OWNER/NAME
    workflow: str  # the workflow's name, as in workflow_run.name
    branch: str  # a successful run on this branch releases to this environment


class Probe(_Model):
    table: str = Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
    min_rows: int = Field(0, ge=0)
    timestamp_column: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]*$")


class SqlProbe(_Model):
    name: str
    sql: str
    expect_true: bool = True


class Backups(_Model):
    bucket: str
    replica_bucket: str | None = None
    prefix: str = ""
    name_pattern: str = r"(?P<date>\d{4}-\d{2}-\d{2}T\d{4}Z)\.sql\.gz$"
    format: Literal["plain", "plain-gzip", "custom", "directory", "tar"] = "plain-gzip"
    database: str
    rpo_target_s: Seconds = 86400
    size_drop_tolerance: float = Field(0.2, ge=0, le=1)
    probes: list[Probe] = Field(default_factory=list)
    sql_probes: list[SqlProbe] = Field(default_factory=list)
    config_bucket: str | None = None
    config_prefix: str = "config/"
    config_retention: int = Field(30, ge=1)
    restore_jobs: int = Field(2, ge=1)

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
    source: str  # the environment whose backups and digests the drill restores
    rto_target_s: Seconds = 3600
    rpo_target_s: Seconds = 86400


class Profile(_Model):
    name: str
    cluster: Cluster
    namespace: Name
    apps: list[App] = Field(min_length=1)
    registry: Registry
    release: Release = Release()
    gate: Gate = Gate()
    monitoring: Monitoring
    slack: Slack | None = None
    github: GitHub | None = None
    backups: Backups | None = None
    dr: DisasterRecovery | None = None

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
