"""The product as a team installs it: the wheel `uv build --wheel` makes of this tree, installed
into a new virtual environment outside the checkout, run from a directory that is no checkout.

What it proves: the wheel holds the whole product (flows and tasks inside ``greenlight``, the
app template as package data) and nothing of the lab; the installed ``greenlight`` finds its
profiles through the configuration it is given, not the source tree; and a staging promotion
made by that installation against the lab releases the commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from greenlight.settings import REPO_ROOT
from greenlight.tasks.kube import read_live
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState

from .support import profile, push_commit

pytestmark = pytest.mark.lab


def _uv() -> str:
    # `uv run` (make test) names its own binary in $UV; a bare pytest finds the one make installs
    return os.environ.get("UV") or str(REPO_ROOT / ".tools" / "bin" / "uv")


def _run(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = _run(_uv(), "build", "--wheel", "--out-dir", out, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = out.glob("greenlight-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside the checkout with the locked dependencies and the wheel, nothing else."""
    venv = tmp_path_factory.mktemp("install") / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    deps = _run(
        _uv(), "sync", "--frozen", "--no-default-groups", "--no-install-project", "--no-install-workspace",
        "--python", sys.executable, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    assert deps.returncode == 0, deps.stderr
    proc = _run(_uv(), "pip", "install", "--python", venv / "bin" / "python", "--no-deps", wheel)
    assert proc.returncode == 0, proc.stderr
    return venv


def test_the_wheel_holds_the_product_and_not_the_lab(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"greenlight", f"{wheel.name.split('-py3')[0]}.dist-info"}, tops
    for module in (
        "greenlight/flows/release.py",
        "greenlight/tasks/kube.py",
        "greenlight/templates/app.yaml",
    ):
        assert module in names
    assert not [n for n in names if "lab" in n.split("/")[0]]


def test_the_installed_cli_has_a_version_and_no_lab(installed: Path, tmp_path: Path) -> None:
    version = _run(installed / "bin" / "greenlight", "--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == "greenlight 0.1.0", version
    lab = _run(installed / "bin" / "greenlight", "lab", "up", cwd=tmp_path)
    assert lab.returncode == 2 and "invalid choice: 'lab'" in lab.stderr
    assert _run(installed / "bin" / "python", "-c", "import greenlight_lab").returncode == 1


def test_without_configuration_it_says_where_it_looked(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GREENLIGHT_ENVIRONMENTS", "GREENLIGHT_CONFIG")}
    proc = _run(installed / "bin" / "greenlight", "status", "staging", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc
    assert f"no profiles directory {tmp_path}/deployments/environments" in proc.stderr
    assert "GREENLIGHT_CONFIG" in proc.stderr


def test_doctor_of_the_installed_wheel_passes_the_lab(lab: LabState, installed: Path, tmp_path: Path) -> None:
    """`greenlight doctor staging` of the installed wheel against a lab just brought up: every check ok."""
    env = {**os.environ, "GREENLIGHT_ENVIRONMENTS": str(LAB_ENVIRONMENTS), "PYTHONUNBUFFERED": "1"}
    proc = _run(installed / "bin" / "greenlight", "doctor", "staging", "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert report["checks"] and not failed, failed


def test_a_staging_promotion_from_the_installed_wheel(
    lab: LabState, envdir: Path, installed: Path, tmp_path: Path
) -> None:
    """`greenlight promote staging` of the installed wheel, from a directory that is no checkout,
    releases the commit: the lab's staging serves its digests."""
    sha = uuid.uuid4().hex[:10]
    digests = push_commit(lab, sha)
    env = {**os.environ, "GREENLIGHT_ENVIRONMENTS": str(envdir), "PYTHONUNBUFFERED": "1"}
    proc = _run(
        installed / "bin" / "greenlight", "promote", "staging", "--commit", sha, "--actor", "dave",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "outcome: released" in proc.stdout
    state = read_live.fn(profile("staging"))
    assert {app: s["digests"][app] for app, s in state.items()} == digests, state
