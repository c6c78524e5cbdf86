"""Configuration that reaches the flows: what `greenlight setup` puts in Prefect (locks, variables,
Secret blocks filled with the lab's values) is all a flow needs from a process whose environment
lacks the operator's variables; and an object setup creates, when missing, is named with its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client

from greenlight.commands.setup import ensure_setup, expected_objects
from greenlight.core.images import parse_image_ref
from greenlight.errors import Forbidden
from greenlight.settings import REPO_ROOT, load_profile
from greenlight.tasks.database import SCRATCH_URL_BLOCK, SCRATCH_URL_ENV
from greenlight.tasks.kube import _known_secrets, read_live
from greenlight.tasks.registry import PASSWORD_ENV, REGISTRY_CREDENTIALS_BLOCK, USERNAME_ENV, resolve_images
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

pytestmark = pytest.mark.lab

RUN_SETUP = "run `greenlight setup`"


def cli(*args: str, without: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``greenlight ARGS`` in a process of its own with this process's environment minus ``without``."""
    env = {k: v for k, v in os.environ.items() if k not in without}
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def delete_block(name: str) -> None:
    with get_client(sync_client=True) as client:
        client.delete_block_document(client.read_block_document_by_name(name, block_type_slug="secret").id)


def delete_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(name)


@contextmanager
def registry_block(lab: LabState, value: object) -> Iterator[None]:
    """The registry credentials block holds ``value`` for the block; the lab's login again after."""
    Secret(value=value).save(REGISTRY_CREDENTIALS_BLOCK, overwrite=True)
    try:
        yield
    finally:
        lab_login = {"username": lab.env[USERNAME_ENV], "password": lab.env[PASSWORD_ENV]}
        Secret(value=lab_login).save(REGISTRY_CREDENTIALS_BLOCK, overwrite=True)


def test_lab_up_leaves_nothing_for_setup_to_create(lab: LabState) -> None:
    """After `greenlight lab up` every object setup manages exists, the credential blocks holding the lab's values."""
    lines = ensure_setup(dry_run=True)
    assert all(line.startswith("exists") for line in lines), lines
    # one line per object of expected_objects, in its order, then production's dead man's switch
    # (its notification blocks, then the automation the server notifies from)
    named = [obj.name for obj in expected_objects()]
    assert all(f" {name}" in line for name, line in zip(named, lines, strict=False)), lines
    switch = lines[len(named) :]
    assert switch and " automation greenlight-dead-mans-switch-production " in switch[-1], switch
    assert switch[:-1] and all(
        " notification block greenlight-dms-production-" in line for line in switch[:-1]
    )
    assert Secret.load(SCRATCH_URL_BLOCK).get() == lab.env[SCRATCH_URL_ENV]  # type: ignore[union-attr]
    assert Secret.load(REGISTRY_CREDENTIALS_BLOCK).get() == {  # type: ignore[union-attr]
        "username": lab.env[USERNAME_ENV],
        "password": lab.env[PASSWORD_ENV],
    }


def test_nightly_verification_reads_the_scratch_url_from_its_block(lab: LabState) -> None:
    """`greenlight verify-backups` in a process without GREENLIGHT_SCRATCH_DATABASE_URL restores into the
    server the Secret block names, and prints neither the URL nor its password."""
    out = cli("verify-backups", "production", without=(SCRATCH_URL_ENV,))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "OK: backup of" in out.stdout and "scratch_dropped" in out.stdout
    assert lab.env[SCRATCH_URL_ENV] not in out.stdout + out.stderr


def test_without_url_or_block_verification_names_both_and_setup_restores_the_block(lab: LabState) -> None:
    """With neither the variable nor the block, the restore check fails naming both and the fix; `greenlight
    setup` with the variable set makes the block again, saying so without the value."""
    delete_block(SCRATCH_URL_BLOCK)
    try:
        out = cli("verify-backups", "production", without=(SCRATCH_URL_ENV,))
        assert out.returncode == 9, out.stdout[-2000:] + out.stderr[-2000:]
        text = out.stdout + out.stderr
        assert SCRATCH_URL_ENV in text and SCRATCH_URL_BLOCK in text and RUN_SETUP in text
    finally:
        setup = cli("setup")
    assert setup.returncode == 0, setup.stderr
    assert (
        f"created secret block {SCRATCH_URL_BLOCK} from ${SCRATCH_URL_ENV} (value not shown)" in setup.stdout
    )
    assert lab.env[SCRATCH_URL_ENV] not in setup.stdout + setup.stderr
    assert Secret.load(SCRATCH_URL_BLOCK).get() == lab.env[SCRATCH_URL_ENV]  # type: ignore[union-attr]


def test_image_resolution_sends_the_block_credentials_when_the_environment_has_none(
    lab: LabState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the registry variables the block's login is sent: the lab's resolves, a wrong one is refused."""
    sha = uuid.uuid4().hex[:12]
    ref = f"ghcr.io/sma-platform/backend:{sha}"
    digest = supervisor.control(lab, "POST", "/images", {"ref": ref, "version": sha})["digest"]
    monkeypatch.delenv(USERNAME_ENV)
    monkeypatch.delenv(PASSWORD_ENV)
    assert resolve_images.fn({"backend": parse_image_ref(ref)}) == {"backend": digest}
    wrong = {"username": lab.env[USERNAME_ENV], "password": "not-the-lab-password"}
    with registry_block(lab, wrong), pytest.raises(Forbidden) as e:
        resolve_images.fn({"backend": parse_image_ref(ref)})
    assert "not-the-lab-password" not in str(e.value)


def test_redaction_knows_the_secrets_that_come_from_blocks(
    lab: LabState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-deploy Job's quoted logs mask the registry password and the scratch URL's password read from blocks."""
    monkeypatch.delenv(PASSWORD_ENV)
    monkeypatch.delenv(SCRATCH_URL_ENV)
    known = _known_secrets(load_profile("staging"))
    password = lab.env[SCRATCH_URL_ENV].split("://", 1)[1].split("@", 1)[0].partition(":")[2]
    assert lab.env[PASSWORD_ENV] in known
    assert password and password in known


def _live_colour() -> str:
    colours = {s["live_colour"] for s in read_live.fn(load_profile("staging")).values()}
    assert len(colours) == 1, colours
    return str(colours.pop())


@pytest.mark.parametrize(
    ("limit", "command"),
    [
        ("greenlight-release-staging", "promote"),
        ("greenlight-release-staging", "cleanup"),
        ("greenlight-traffic-staging", "switch"),
    ],
)
def test_a_command_that_needs_a_missing_lock_says_run_setup(lab: LabState, limit: str, command: str) -> None:
    """With the lock setup creates deleted, the command fails NotFound (3) naming the lock and `greenlight setup`,
    and changes nothing; setup brings the lock back."""
    if command == "promote":
        sha = uuid.uuid4().hex[:12]
        for app in ("backend", "frontend"):
            body = {"ref": f"ghcr.io/sma-platform/{app}:{sha}", "version": f"{app}-{sha}"}
            supervisor.control(lab, "POST", "/images", body)
        args = ["promote", "staging", "--commit", sha]
    elif command == "cleanup":
        args = ["cleanup", "staging", "--now"]
    else:
        args = ["switch", "staging", _live_colour()]
    before = read_live.fn(load_profile("staging"))
    delete_limit(limit)
    try:
        out = cli(*args)
    finally:
        ensure_setup(["staging"])
    assert out.returncode == 3, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"FAILED: global concurrency limit '{limit}' does not exist" in out.stderr
    assert RUN_SETUP in out.stderr
    assert read_live.fn(load_profile("staging")) == before
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(limit).limit == 1
