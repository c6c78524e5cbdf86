"""Adoption tests run in a namespace of their own (adopt-lab on lab-primary), one environment per
app (adopt-<app>), selected through GREENLIGHT_ENVIRONMENTS for the module and its subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from greenlight_lab.state import LabState

from .support import write_profile

APPS = ("dry", "hpa", "undo", "web", "neg")


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from greenlight.commands.setup import ensure_setup

    directory = tmp_path_factory.mktemp("adopt-envs")
    names = [write_profile(directory, app) for app in APPS]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLIGHT_ENVIRONMENTS", str(directory))
        ensure_setup(names)
        yield directory
