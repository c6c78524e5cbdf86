"""Release tests run in environments of their own (namespaces rel-staging / rel-production on
lab-primary), so the baseline that other tests rely on stays untouched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from greenlight.clients.kube import Kube
from greenlight.commands.setup import ensure_setup
from greenlight.lab.bootstrap import bootstrap_environment
from greenlight.lab.state import LabState

from .support import NAMESPACES, write_profiles


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("release-envs")
    write_profiles(directory)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLIGHT_ENVIRONMENTS", str(directory))
        ensure_setup(["staging", "production"])
        kube = Kube.connect(context="lab-primary")
        try:
            pushed: dict[str, str] = {}
            for env in NAMESPACES:
                bootstrap_environment(kube, env, directory, pushed, lab.env)
        finally:
            kube.close()
        yield directory


@pytest.fixture
def kube(lab: LabState) -> Iterator[Kube]:
    k = Kube.connect(context="lab-primary")
    yield k
    k.close()
