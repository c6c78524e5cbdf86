"""`greenlight approval-key`: a key pair for the Slack receiver, the private half only to a new file."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from greenlight.core.approval import check_public_key, public_key_of
from greenlight.settings import REPO_ROOT


def approval_key(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", "approval-key", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_writes_the_private_key_0600_and_prints_only_the_public_key(tmp_path: Path) -> None:
    out = tmp_path / "receiver.key"
    proc = approval_key(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    private = out.read_text().strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    public = public_key_of(private)
    assert check_public_key(public) and f"public key: {public}" in proc.stdout
    assert private not in proc.stdout + proc.stderr


def test_never_overwrites_a_key(tmp_path: Path) -> None:
    out = tmp_path / "receiver.key"
    out.write_text("the key in use\n")
    proc = approval_key(out)
    assert proc.returncode != 0 and "exists" in proc.stdout + proc.stderr
    assert out.read_text() == "the key in use\n"
